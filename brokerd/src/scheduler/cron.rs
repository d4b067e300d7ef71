//! Five-field cron expressions, as ActiveMQ 5.17's `AMQ_SCHEDULED_CRON` header takes them
//! (`CronParser` in activemq-client), and the next time one falls due.
//!
//! Syntax (what `CronParser` accepts, checked against its source): five whitespace-separated
//! fields, minute (0-59), hour (0-23), day of month (1-31), month (1-12), day of week (0-6,
//! Sunday is 0). A field is `*` or `?` (every value), a number, a range `a-b`, a list `a,b,c`
//! of those (empty items are skipped, `*` may be an item), or any of these followed by a step
//! `/n`. No names (`MON`, `JAN`) and no day-of-week 7: ActiveMQ rejects them too. As in
//! ActiveMQ, a step applies to the whole field before it (`1-2,3-6/2` is `(1-2,3-6)/2`) and
//! keeps the values that are multiples of `n` (`CronParser.calculateValues`: `i % denominator
//! == 0`), so `*/2` in the day of month is 2,4,..,30, and `1-10/3` is 3,6,9. A field that selects
//! no value (`5/15`, `5-3`) is an error.
//!
//! Where this differs from ActiveMQ, it is where ActiveMQ contradicts itself or its own comments:
//! - Bounds: ActiveMQ's `validate` lets minute 60, hour 24 and day 32 through (its `end` bounds
//!   are exclusive for `getNext` but checked as inclusive); here they are out of range.
//! - Day of month and day of week: when both are restricted (neither selects every value), a day
//!   matches if either matches, as `CronParser`'s comment says and its advancing does (the closer
//!   of the two next days, lines 149-164); its check of the start day (146-147) wants both, which
//!   skips e.g. a matching Monday that is not also the day of month. When one selects every value
//!   (`*`, `?`, `1-31`), only the other decides, as in ActiveMQ.
//! - The first occurrence of `* 1 * * *` after 17:10 is 01:00, not 01:11: ActiveMQ moves to the
//!   hour without resetting the minute (lines 77-81), which its own test enshrines.
//!
//! Time: in local time, like ActiveMQ's `Calendar.getInstance()` (the JVM's default zone). The
//! search walks local wall-clock minutes, so daylight saving time acts on wall times: a wall time
//! that occurs twice (clocks going back) fires once, at its first occurrence after the given
//! instant, so `*/20 * * * *` pauses for the repeated hour; wall times that do not exist (clocks
//! going forward) fire once, at the first minute after the jump, so a daily job at 02:30 is not
//! lost for the day (as cron(8) treats fixed-time jobs). ActiveMQ leaves this to `Calendar`'s
//! lenient arithmetic, which gives no rule to copy.

use chrono::{
    DateTime, Datelike, Local, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta,
    TimeZone, Timelike,
};
use std::fmt;

/// Days searched before [`Cron::next_after`] gives up: the longest wait of a satisfiable
/// expression is Feb 29 across a century year that is not a leap year (2096 to 2104), 8 years.
const SEARCH_DAYS: i64 = 366 * 9;

/// Minutes walked forward from a wall time that does not exist to the end of its gap; the
/// longest gap on record is a whole day (Samoa, 2011-12-30).
const MAX_GAP_MINUTES: i64 = 25 * 60;

/// The five fields, for their ranges and for errors that name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Minute,
    Hour,
    DayOfMonth,
    Month,
    DayOfWeek,
}

impl Field {
    const ALL: [Field; 5] = [
        Field::Minute,
        Field::Hour,
        Field::DayOfMonth,
        Field::Month,
        Field::DayOfWeek,
    ];

    fn name(self) -> &'static str {
        match self {
            Field::Minute => "minute",
            Field::Hour => "hour",
            Field::DayOfMonth => "day-of-month",
            Field::Month => "month",
            Field::DayOfWeek => "day-of-week",
        }
    }

    /// The smallest and largest value (inclusive).
    fn range(self) -> (u32, u32) {
        match self {
            Field::Minute => (0, 59),
            Field::Hour => (0, 23),
            Field::DayOfMonth => (1, 31),
            Field::Month => (1, 12),
            Field::DayOfWeek => (0, 6),
        }
    }

    /// Every value of the field.
    fn every(self) -> Values {
        let (min, max) = self.range();
        Values::span(min, max)
    }
}

/// The values one field selects: bit `v` is value `v` (every field's values are below 64).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Values(u64);

impl Values {
    fn span(first: u32, last: u32) -> Values {
        Values((u64::MAX >> (63 - last)) & (u64::MAX << first))
    }

    fn contains(self, value: u32) -> bool {
        self.0 >> value & 1 == 1
    }

    /// The smallest selected value at or above `from`, if any.
    fn first_from(self, from: u32) -> Option<u32> {
        let above = self.0 & (u64::MAX << from);
        (above != 0).then(|| above.trailing_zeros())
    }
}

/// What is wrong with one field's value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldProblem {
    /// A part that is not a number where one is needed.
    #[error("\"{0}\" is not a number (a field is *, ?, N, N-M, a list N,M or any of these with a step /N)")]
    NotANumber(String),
    /// A number outside the field's range.
    #[error("{value} is out of range {min}-{max}")]
    OutOfRange {
        /// The number given.
        value: u32,
        /// The field's smallest value.
        min: u32,
        /// The field's largest value.
        max: u32,
    },
    /// A range whose first value is above its last.
    #[error("the range {first}-{last} is empty (write the smaller value first)")]
    EmptyRange {
        /// The range's first value.
        first: u32,
        /// The range's last value.
        last: u32,
    },
    /// A step of 0.
    #[error("the step /0 must be at least 1")]
    ZeroStep,
    /// A step that keeps none of the values before it.
    #[error("none of its values is a multiple of the step {0} (a step keeps the multiples of N, as in ActiveMQ)")]
    NoMultiple(u32),
    /// A list with no items.
    #[error("it selects no value")]
    NoValue,
}

/// Why an expression was refused; the text follows `AMQ_SCHEDULED_CRON "<value>": ` in the
/// ERROR frame, so it names the field and the offending part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    /// Not five fields.
    #[error("expected 5 fields (minute hour day-of-month month day-of-week), got {0}")]
    FieldCount(usize),
    /// One field is invalid.
    #[error("{field} field \"{token}\": {problem}")]
    Field {
        /// The field's name, e.g. `minute`.
        field: &'static str,
        /// The field as given.
        token: String,
        /// What is wrong with it.
        problem: FieldProblem,
    },
}

/// A parsed five-field cron expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    /// The fields as given, joined by single spaces (for `ctl schedules`).
    text: String,
    minutes: Values,
    hours: Values,
    days_of_month: Values,
    months: Values,
    days_of_week: Values,
}

impl Cron {
    /// Parses `expr`; the error names the field and the offending value.
    pub fn parse(expr: &str) -> Result<Cron, CronError> {
        let tokens: Vec<&str> = expr.split_whitespace().collect();
        if tokens.len() != 5 {
            return Err(CronError::FieldCount(tokens.len()));
        }
        let mut values = [Values(0); 5];
        for ((field, token), slot) in Field::ALL.into_iter().zip(&tokens).zip(&mut values) {
            *slot = parse_field(field, token).map_err(|problem| CronError::Field {
                field: field.name(),
                token: token.to_string(),
                problem,
            })?;
        }
        let [minutes, hours, days_of_month, months, days_of_week] = values;
        Ok(Cron {
            text: tokens.join(" "),
            minutes,
            hours,
            days_of_month,
            months,
            days_of_week,
        })
    }

    /// The first whole minute strictly after `after_ms` (ms since the Unix epoch) that matches, in
    /// local time, as ms since the epoch; None if none within a bounded search (e.g.
    /// "0 0 30 2 *").
    pub fn next_after(&self, after_ms: u64) -> Option<u64> {
        self.next_after_in(&Local, after_ms)
    }

    /// [`Cron::next_after`] in the time zone `tz`, so tests can use a fixed one.
    pub fn next_after_in<Tz: TimeZone>(&self, tz: &Tz, after_ms: u64) -> Option<u64> {
        let after = tz
            .timestamp_millis_opt(i64::try_from(after_ms).ok()?)
            .single()?;
        let local = after.naive_local();
        let minute = local.date().and_hms_opt(local.hour(), local.minute(), 0)?;
        let mut from = minute.checked_add_signed(TimeDelta::minutes(1))?;
        let last_day = local
            .date()
            .checked_add_signed(TimeDelta::days(SEARCH_DAYS))?;
        while let Some(wall) = self.next_wall_time(from, last_day) {
            let instants = instants(tz, wall);
            let found = if instants.is_empty() {
                end_of_gap(tz, wall)
            } else {
                // A wall time that occurs twice fires at its first occurrence after `after`.
                instants.into_iter().find(|at| *at > after)
            };
            if let Some(at) = found.filter(|at| *at > after) {
                return u64::try_from(at.timestamp_millis()).ok();
            }
            from = wall.checked_add_signed(TimeDelta::minutes(1))?;
        }
        None
    }

    /// The first wall-clock minute at or after `from`, on or before `last_day`, that matches.
    fn next_wall_time(&self, from: NaiveDateTime, last_day: NaiveDate) -> Option<NaiveDateTime> {
        let mut day = from.date();
        let mut earliest = from.time();
        while day <= last_day {
            if self.day_matches(day) {
                if let Some(time) = self.first_time_from(earliest) {
                    return Some(day.and_time(time));
                }
            }
            day = day.succ_opt()?;
            earliest = NaiveTime::MIN;
        }
        None
    }

    /// The first matching time of day at or after `earliest`.
    fn first_time_from(&self, earliest: NaiveTime) -> Option<NaiveTime> {
        let mut hour = self.hours.first_from(earliest.hour())?;
        let mut minute_from = if hour == earliest.hour() {
            earliest.minute()
        } else {
            0
        };
        loop {
            if let Some(minute) = self.minutes.first_from(minute_from) {
                return NaiveTime::from_hms_opt(hour, minute, 0);
            }
            hour = self.hours.first_from(hour + 1)?;
            minute_from = 0;
        }
    }

    /// Whether the month and day fields allow `day` (see the module doc for how the day of month
    /// and the day of week combine).
    fn day_matches(&self, day: NaiveDate) -> bool {
        let dom_all = self.days_of_month == Field::DayOfMonth.every();
        let dow_all = self.days_of_week == Field::DayOfWeek.every();
        let dom = !dom_all && self.days_of_month.contains(day.day());
        let dow = !dow_all
            && self
                .days_of_week
                .contains(day.weekday().num_days_from_sunday());
        self.months.contains(day.month()) && ((dom_all && dow_all) || dom || dow)
    }
}

impl fmt::Display for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The instants whose local time is `wall`, earliest first: none in a gap, two in a fold.
/// Each is checked against the zone's UTC-to-local mapping and they are sorted, because chrono's
/// `Local` lists a fold's two instants latest first and adds a wrong one at the fold's end
/// (chrono issue 1625; seen here with TZ=Europe/Berlin on chrono 0.4.45).
fn instants<Tz: TimeZone>(tz: &Tz, wall: NaiveDateTime) -> Vec<DateTime<Tz>> {
    let mut instants: Vec<_> = match tz.from_local_datetime(&wall) {
        LocalResult::Single(at) => vec![at],
        LocalResult::Ambiguous(one, other) => vec![one, other],
        LocalResult::None => vec![],
    };
    instants.retain(|at| tz.from_utc_datetime(&at.naive_utc()).naive_local() == wall);
    instants.sort();
    instants
}

/// The first instant after the clocks jumped over `wall`, a wall time that does not exist.
fn end_of_gap<Tz: TimeZone>(tz: &Tz, wall: NaiveDateTime) -> Option<DateTime<Tz>> {
    (1..=MAX_GAP_MINUTES).find_map(|m| {
        let later = wall.checked_add_signed(TimeDelta::minutes(m))?;
        instants(tz, later).into_iter().next()
    })
}

/// One field: `*`/`?`, or a list, range or number, with an optional step (ActiveMQ's order:
/// the step is split off first, then the list, then the range).
fn parse_field(field: Field, token: &str) -> Result<Values, FieldProblem> {
    let Some((before, step)) = token.split_once('/') else {
        return parse_list(field, token);
    };
    let step = parse_number(step)?;
    if step == 0 {
        return Err(FieldProblem::ZeroStep);
    }
    let listed = parse_list(field, before)?;
    let multiples = (0..64)
        .filter(|v: &u32| v.is_multiple_of(step))
        .fold(0, |bits, v| bits | 1 << v);
    match listed.0 & multiples {
        0 => Err(FieldProblem::NoMultiple(step)),
        bits => Ok(Values(bits)),
    }
}

fn parse_list(field: Field, list: &str) -> Result<Values, FieldProblem> {
    let mut bits = 0;
    for item in list.split(',').filter(|item| !item.is_empty()) {
        bits |= parse_item(field, item)?.0;
    }
    match bits {
        0 => Err(FieldProblem::NoValue),
        bits => Ok(Values(bits)),
    }
}

fn parse_item(field: Field, item: &str) -> Result<Values, FieldProblem> {
    if item == "*" || item == "?" {
        return Ok(field.every());
    }
    let (first, last) = match item.split_once('-') {
        Some((first, last)) => (parse_value(field, first)?, parse_value(field, last)?),
        None => {
            let value = parse_value(field, item)?;
            (value, value)
        }
    };
    if first > last {
        return Err(FieldProblem::EmptyRange { first, last });
    }
    Ok(Values::span(first, last))
}

fn parse_value(field: Field, text: &str) -> Result<u32, FieldProblem> {
    let value = parse_number(text)?;
    let (min, max) = field.range();
    if value < min || value > max {
        return Err(FieldProblem::OutOfRange { value, min, max });
    }
    Ok(value)
}

fn parse_number(text: &str) -> Result<u32, FieldProblem> {
    text.parse()
        .map_err(|_| FieldProblem::NotANumber(text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{FixedOffset, Offset, Utc};

    /// `naive` ("2010-11-15T09:15:30", local time in `tz`) as ms since the epoch.
    fn ms_in<Tz: TimeZone>(tz: &Tz, naive: &str) -> u64 {
        let naive: NaiveDateTime = naive.parse().unwrap();
        tz.from_local_datetime(&naive)
            .earliest()
            .unwrap()
            .timestamp_millis() as u64
    }

    /// The next occurrence of `expr` after `from`, both as local times in UTC.
    fn next(expr: &str, from: &str) -> Option<String> {
        let next = Cron::parse(expr)
            .unwrap()
            .next_after_in(&Utc, ms_in(&Utc, from))?;
        let at = Utc.timestamp_millis_opt(next as i64).unwrap();
        Some(at.naive_utc().format("%Y-%m-%dT%H:%M:%S").to_string())
    }

    fn error(expr: &str) -> String {
        Cron::parse(expr).unwrap_err().to_string()
    }

    // The expected values of ActiveMQ 5.17's CronParserTest (its times are local; here UTC).

    #[test]
    fn day_of_week() {
        assert_eq!(
            next("* * * * 5", "2010-11-15T09:15:30").unwrap(),
            "2010-11-19T00:00:00"
        );
        let friday_evening = "50 20 * * 5";
        assert_eq!(
            next(friday_evening, "2011-03-07T09:15:30").unwrap(),
            "2011-03-11T20:50:00"
        );
        // The right day, but too late: a week on.
        assert_eq!(
            next(friday_evening, "2011-03-11T22:00:30").unwrap(),
            "2011-03-18T20:50:00"
        );
    }

    #[test]
    fn month_and_day_of_week() {
        let sundays_in_april_and_may = "0 20 * 4,5 0";
        let cases = [
            ("2011-03-07T09:15:30", "2011-04-03T20:00:00"),
            ("2011-04-30T22:00:30", "2011-05-01T20:00:00"),
            ("2011-05-30T22:00:30", "2012-04-01T20:00:00"),
        ];
        for (from, expected) in cases {
            assert_eq!(
                next(sundays_in_april_and_may, from).unwrap(),
                expected,
                "from {from}"
            );
        }
    }

    #[test]
    fn month_and_day_of_month() {
        assert_eq!(
            next("* * * 12 *", "2010-11-15T09:15:30").unwrap(),
            "2010-12-01T00:00:00"
        );
        assert_eq!(
            next("* * 1 * *", "2010-12-15T09:15:30").unwrap(),
            "2011-01-01T00:00:00"
        );
        assert_eq!(
            next("* * 1 12 *", "2010-12-15T09:15:30").unwrap(),
            "2011-12-01T00:00:00"
        );
        assert_eq!(
            next("* * 16 * *", "2010-11-15T09:15:30").unwrap(),
            "2010-11-16T00:00:00"
        );
    }

    #[test]
    fn minutes_and_hours() {
        assert_eq!(
            next("30 * * * *", "1970-01-01T00:20:00").unwrap(),
            "1970-01-01T00:30:00"
        );
        assert_eq!(
            next("0 1 * * *", "1972-03-02T17:10:00").unwrap(),
            "1972-03-03T01:00:00"
        );
        // ActiveMQ's test expects 01:11 (8 h 1 min later): it moves to the hour without resetting
        // the minute. Every minute of hour 1 starts at 01:00.
        assert_eq!(
            next("* 1 * * *", "1972-03-02T17:10:00").unwrap(),
            "1972-03-03T01:00:00"
        );
    }

    /// AMQ-6327's cases, from CronParserTest.testGetNext.
    #[test]
    fn first_of_the_month() {
        for (from, expected) in [
            ("2016-04-15T00:00:00", "2016-05-01T00:00:00"),
            ("2016-05-15T00:00:00", "2016-06-01T00:00:00"),
            ("2016-06-15T00:00:00", "2016-07-01T00:00:00"),
        ] {
            assert_eq!(next("0 0 1 * *", from).unwrap(), expected);
            assert_eq!(next("0 0 1,15 * *", from).unwrap(), expected);
        }
    }

    #[test]
    fn accepts_what_activemq_validates() {
        for expr in [
            "30 08 10 06 ? ",
            "30 08 ? 06 5 ",
            "30 08 ? 06 * ",
            "* * * * * ",
            "* * * * 1-6 ",
            "* * * * 1,2,5 ",
            "*/10 0-4,8-12 * * 1-2,3-6/2 ",
            "0 1 2 3 4",
            "*/5 * * * *",
        ] {
            Cron::parse(expr).unwrap_or_else(|e| panic!("{expr:?}: {e}"));
        }
        assert_eq!(
            error("61 08 10 06 * "),
            "minute field \"61\": 61 is out of range 0-59"
        );
        assert_eq!(
            error("61 08 06 * "),
            "expected 5 fields (minute hour day-of-month month day-of-week), got 4"
        );
        assert_eq!(
            error("*/5 * * * * *"),
            "expected 5 fields (minute hour day-of-month month day-of-week), got 6"
        );
    }

    #[test]
    fn steps_keep_multiples_and_apply_to_the_whole_field() {
        let cron = Cron::parse("*/10 0-4,8-12 */2 1-10/3 1-2,3-6/2").unwrap();
        assert_eq!(
            cron.minutes,
            Values(1 | 1 << 10 | 1 << 20 | 1 << 30 | 1 << 40 | 1 << 50)
        );
        assert_eq!(cron.hours, Values(0b1_1111_0001_1111));
        assert_eq!(
            cron.days_of_month,
            Values((1..=15).fold(0, |b, d| b | 1 << (2 * d)))
        );
        assert_eq!(cron.months, Values(1 << 3 | 1 << 6 | 1 << 9));
        assert_eq!(cron.days_of_week, Values(1 << 2 | 1 << 4 | 1 << 6));
        // Empty list items are skipped and `*` may be an item, as in ActiveMQ.
        assert_eq!(
            Cron::parse("5,,7, * * * *").unwrap().minutes,
            Values(1 << 5 | 1 << 7)
        );
        assert_eq!(
            Cron::parse("* 1,* * * *").unwrap().hours,
            Field::Hour.every()
        );
    }

    #[test]
    fn errors_name_the_field_and_the_value() {
        let cases = [
            ("60 * * * *", "minute field \"60\": 60 is out of range 0-59"),
            ("* 24 * * *", "hour field \"24\": 24 is out of range 0-23"),
            ("* * 0 * *", "day-of-month field \"0\": 0 is out of range 1-31"),
            ("* * 32 * *", "day-of-month field \"32\": 32 is out of range 1-31"),
            ("* * * 13 *", "month field \"13\": 13 is out of range 1-12"),
            ("* * * * 7", "day-of-week field \"7\": 7 is out of range 0-6"),
            ("* * * JAN *", "month field \"JAN\": \"JAN\" is not a number (a field is *, ?, N, N-M, a list N,M or any of these with a step /N)"),
            ("* * * * 1-7", "day-of-week field \"1-7\": 7 is out of range 0-6"),
            ("5-3 * * * *", "minute field \"5-3\": the range 5-3 is empty (write the smaller value first)"),
            ("*/0 * * * *", "minute field \"*/0\": the step /0 must be at least 1"),
            ("5/15 * * * *", "minute field \"5/15\": none of its values is a multiple of the step 15 (a step keeps the multiples of N, as in ActiveMQ)"),
            (", * * * *", "minute field \",\": it selects no value"),
        ];
        for (expr, expected) in cases {
            assert_eq!(error(expr), expected, "{expr}");
        }
        for bad in [
            "-5",
            "1-2-3",
            "*/2/2",
            "*-5",
            "/5",
            "*/2,5",
            "99999999999",
            "1.5",
        ] {
            let expr = format!("{bad} * * * *");
            assert!(
                error(&expr).starts_with(&format!("minute field \"{bad}\": ")),
                "{expr}"
            );
        }
        assert_eq!(
            error(""),
            "expected 5 fields (minute hour day-of-month month day-of-week), got 0"
        );
    }

    #[test]
    fn display_is_the_expression_with_single_spaces() {
        let cron = Cron::parse(" */5\t0-4,8  *  * ?\n").unwrap();
        assert_eq!(cron.to_string(), "*/5 0-4,8 * * ?");
    }

    #[test]
    fn day_of_month_or_day_of_week_when_both_are_restricted() {
        // Midnight on the 1st or on Mondays; 2010-11-22 and 2010-11-29 are Mondays.
        let cron = "0 0 1 * 1";
        assert_eq!(
            next(cron, "2010-11-21T23:59:30").unwrap(),
            "2010-11-22T00:00:00"
        );
        assert_eq!(
            next(cron, "2010-11-22T00:00:00").unwrap(),
            "2010-11-29T00:00:00"
        );
        assert_eq!(
            next(cron, "2010-11-29T00:00:00").unwrap(),
            "2010-12-01T00:00:00"
        );
        // A field that selects every value leaves the decision to the other, as `*` does.
        assert_eq!(
            next("0 0 1-31 * 1", "2010-11-23T00:00:00").unwrap(),
            "2010-11-29T00:00:00"
        );
        assert_eq!(
            next("0 0 1 * 0-6", "2010-11-23T00:00:00").unwrap(),
            "2010-12-01T00:00:00"
        );
    }

    #[test]
    fn strictly_after_on_whole_minutes() {
        assert_eq!(
            next("0 12 * * *", "2024-05-01T12:00:00").unwrap(),
            "2024-05-02T12:00:00"
        );
        assert_eq!(
            next("0 12 * * *", "2024-05-01T11:59:59").unwrap(),
            "2024-05-01T12:00:00"
        );
        let just_before = ms_in(&Utc, "2024-05-01T12:00:00") - 1;
        let cron = Cron::parse("* * * * *").unwrap();
        assert_eq!(cron.next_after_in(&Utc, just_before), Some(just_before + 1));
    }

    #[test]
    fn last_minute_of_the_year() {
        let cron = "59 23 31 12 *";
        assert_eq!(
            next(cron, "2023-12-31T23:58:30").unwrap(),
            "2023-12-31T23:59:00"
        );
        assert_eq!(
            next(cron, "2023-12-31T23:59:00").unwrap(),
            "2024-12-31T23:59:00"
        );
        assert_eq!(
            next("* * * * *", "2023-12-31T23:59:30").unwrap(),
            "2024-01-01T00:00:00"
        );
        assert_eq!(
            next("0 0 1 1 *", "2023-12-31T23:59:59").unwrap(),
            "2024-01-01T00:00:00"
        );
    }

    #[test]
    fn february_29() {
        let cron = "0 12 29 2 *";
        assert_eq!(
            next(cron, "2024-02-28T13:00:00").unwrap(),
            "2024-02-29T12:00:00"
        );
        assert_eq!(
            next(cron, "2024-03-01T00:00:00").unwrap(),
            "2028-02-29T12:00:00"
        );
        // 2100 is not a leap year: the longest wait there is, within the search.
        assert_eq!(
            next(cron, "2096-03-01T00:00:00").unwrap(),
            "2104-02-29T12:00:00"
        );
    }

    #[test]
    fn a_day_that_never_comes_is_none() {
        for expr in [
            "0 0 30 2 *",
            "0 0 31 4 *",
            "* * 30,31 2 *",
            "0 0 31 2,4,6,9,11 *",
        ] {
            assert_eq!(next(expr, "2024-01-01T00:00:00"), None, "{expr}");
        }
        // With a day of week as well, the day of week matches.
        assert_eq!(
            next("0 0 30 2 1", "2024-01-01T00:00:00").unwrap(),
            "2024-02-05T00:00:00"
        );
    }

    #[test]
    fn times_at_the_ends_of_the_range() {
        let cron = Cron::parse("* * * * *").unwrap();
        assert_eq!(cron.next_after_in(&Utc, 0), Some(60_000));
        assert_eq!(cron.next_after_in(&Utc, u64::MAX), None);
        assert_eq!(cron.next_after_in(&Utc, i64::MAX as u64), None);
    }

    /// The public entry point uses the machine's zone; every zone in use today has whole-minute
    /// offsets, so local minutes start where UTC minutes do.
    #[test]
    fn next_after_uses_the_local_zone() {
        let cron = Cron::parse("* * * * *").unwrap();
        let now = ms_in(&Utc, "2024-05-01T12:34:56");
        assert_eq!(
            cron.next_after(now),
            Some(ms_in(&Utc, "2024-05-01T12:35:00"))
        );
        let daily = Cron::parse("0 9 * * *").unwrap();
        assert_eq!(daily.next_after(now), daily.next_after_in(&Local, now));
    }

    #[test]
    fn a_fixed_offset_is_local_time() {
        let tokyo = FixedOffset::east_opt(9 * 3600).unwrap();
        let cron = Cron::parse("0 9 * * *").unwrap();
        let next = cron
            .next_after_in(&tokyo, ms_in(&Utc, "2024-05-01T00:00:00"))
            .unwrap();
        assert_eq!(next, ms_in(&Utc, "2024-05-02T00:00:00"));
    }

    /// Central European time in 2024 without a tz database: UTC+1, and UTC+2 from 31 March
    /// 01:00 UTC (02:00 local jumps to 03:00) to 27 October 01:00 UTC (03:00 goes back to 02:00).
    /// `LIKE_CHRONO_LOCAL` maps local times in the fold as chrono's `Local` does with
    /// TZ=Europe/Berlin (chrono issue 1625): latest first, and 03:00 too.
    #[derive(Debug, Clone, Copy)]
    struct Cet2024<const LIKE_CHRONO_LOCAL: bool>;

    impl<const L: bool> Cet2024<L> {
        fn summer() -> (NaiveDateTime, NaiveDateTime) {
            let at = |s: &str| s.parse::<NaiveDateTime>().unwrap();
            (at("2024-03-31T01:00:00"), at("2024-10-27T01:00:00"))
        }
    }

    impl<const LIKE_CHRONO_LOCAL: bool> TimeZone for Cet2024<LIKE_CHRONO_LOCAL> {
        type Offset = FixedOffset;

        fn from_offset(_: &FixedOffset) -> Self {
            Cet2024
        }

        fn offset_from_local_date(&self, local: &NaiveDate) -> LocalResult<FixedOffset> {
            self.offset_from_local_datetime(&local.and_time(NaiveTime::MIN))
        }

        fn offset_from_local_datetime(&self, local: &NaiveDateTime) -> LocalResult<FixedOffset> {
            let hours = |h: i32| FixedOffset::east_opt(h * 3600).unwrap();
            let fold = |s: &str| s.parse::<NaiveDateTime>().unwrap();
            if LIKE_CHRONO_LOCAL
                && (fold("2024-10-27T02:00:00")..=fold("2024-10-27T03:00:00")).contains(local)
            {
                return LocalResult::Ambiguous(hours(1), hours(2));
            }
            let fits = |hours: i32| {
                let offset = FixedOffset::east_opt(hours * 3600).unwrap();
                let utc = *local - TimeDelta::hours(hours.into());
                (self.offset_from_utc_datetime(&utc) == offset).then_some(offset)
            };
            match (fits(2), fits(1)) {
                (Some(summer), Some(winter)) => LocalResult::Ambiguous(summer, winter),
                (Some(offset), None) | (None, Some(offset)) => LocalResult::Single(offset),
                (None, None) => LocalResult::None,
            }
        }

        fn offset_from_utc_date(&self, utc: &NaiveDate) -> FixedOffset {
            self.offset_from_utc_datetime(&utc.and_time(NaiveTime::MIN))
        }

        fn offset_from_utc_datetime(&self, utc: &NaiveDateTime) -> FixedOffset {
            let (start, end) = Self::summer();
            let hours = if (start..end).contains(utc) { 2 } else { 1 };
            FixedOffset::east_opt(hours * 3600).unwrap()
        }
    }

    /// The next occurrence in [`Cet2024`], as a UTC time; the same with chrono's mapping.
    fn next_cet(expr: &str, from_utc: &str) -> String {
        let cron = Cron::parse(expr).unwrap();
        let after = ms_in(&Utc, &format!("{from_utc}:00"));
        let next = cron.next_after_in(&Cet2024::<false>, after);
        assert_eq!(
            next,
            cron.next_after_in(&Cet2024::<true>, after),
            "like chrono's Local"
        );
        let at = Utc.timestamp_millis_opt(next.unwrap() as i64).unwrap();
        at.naive_utc().format("%Y-%m-%dT%H:%M").to_string()
    }

    #[test]
    fn the_test_zone_is_what_it_claims() {
        let offset = |s: &str| {
            Cet2024::<false>
                .offset_from_utc_datetime(&s.parse().unwrap())
                .fix()
        };
        assert_eq!(offset("2024-03-31T00:59:59").local_minus_utc(), 3600);
        assert_eq!(offset("2024-03-31T01:00:00").local_minus_utc(), 7200);
        let utc = |one: &str, other: &str| LocalResult::Ambiguous(one.into(), other.into());
        let fixed = Cet2024::<false>;
        assert_eq!(utc_of(fixed, "2024-03-31T02:30:00"), LocalResult::None);
        let fold = utc("2024-10-27 00:30:00", "2024-10-27 01:30:00");
        assert_eq!(utc_of(fixed, "2024-10-27T02:30:00"), fold);
        let end = LocalResult::Single("2024-10-27 02:00:00".into());
        assert_eq!(utc_of(fixed, "2024-10-27T03:00:00"), end);
        // What chrono's Local says there: latest first, and a wrong instant at 03:00.
        let like_chrono = Cet2024::<true>;
        let swapped = utc("2024-10-27 01:30:00", "2024-10-27 00:30:00");
        assert_eq!(utc_of(like_chrono, "2024-10-27T02:30:00"), swapped);
        let wrong = utc("2024-10-27 02:00:00", "2024-10-27 01:00:00");
        assert_eq!(utc_of(like_chrono, "2024-10-27T03:00:00"), wrong);
    }

    /// The UTC times of the local time `local` in `tz`.
    fn utc_of<Tz: TimeZone>(tz: Tz, local: &str) -> LocalResult<String> {
        let local: NaiveDateTime = local.parse().unwrap();
        tz.from_local_datetime(&local)
            .map(|at| at.naive_utc().to_string())
    }

    #[test]
    fn clocks_going_forward_fire_skipped_times_once_after_the_jump() {
        // 02:30 local does not exist on 31 March: it fires at 03:00 local (01:00 UTC), once.
        let daily = "30 2 * * *";
        assert_eq!(next_cet(daily, "2024-03-30T12:00"), "2024-03-31T01:00");
        assert_eq!(next_cet(daily, "2024-03-31T01:00"), "2024-04-01T00:30");
        // 02:00, 02:15, 02:30 and 02:45 are all skipped: one firing at 03:00, then 03:15.
        let quarterly = "*/15 * * * *";
        assert_eq!(next_cet(quarterly, "2024-03-31T00:50"), "2024-03-31T01:00");
        assert_eq!(next_cet(quarterly, "2024-03-31T01:00"), "2024-03-31T01:15");
    }

    #[test]
    fn clocks_going_back_fire_a_repeated_time_once() {
        // 02:30 local happens at 00:30 UTC (summer time) and again at 01:30 UTC: once.
        let daily = "30 2 * * *";
        assert_eq!(next_cet(daily, "2024-10-26T12:00"), "2024-10-27T00:30");
        assert_eq!(next_cet(daily, "2024-10-27T00:30"), "2024-10-28T01:30");
        // Wall times repeat once each: from 02:50 summer time, next is 03:00 winter time.
        let every_20 = "*/20 * * * *";
        assert_eq!(next_cet(every_20, "2024-10-27T00:50"), "2024-10-27T02:00");
        // Started inside the repeated hour, it goes on from there.
        assert_eq!(next_cet(every_20, "2024-10-27T01:10"), "2024-10-27T01:20");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// One field's value within `min..=max`, in each syntactic form.
        fn field(min: u32, max: u32) -> impl Strategy<Value = String> {
            prop_oneof![
                Just("*".to_string()),
                (min..=max).prop_map(|v| v.to_string()),
                (min..=max, min..=max).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
                (1..=max).prop_map(|n| format!("*/{n}")),
                (min..=max, min..=max, 1..=4u32).prop_map(|(a, b, n)| format!(
                    "{}-{}/{n}",
                    a.min(b),
                    a.max(b)
                )),
                proptest::collection::vec(min..=max, 1..4)
                    .prop_map(|v| { v.iter().map(u32::to_string).collect::<Vec<_>>().join(",") }),
            ]
        }

        fn expression() -> impl Strategy<Value = Cron> {
            (
                field(0, 59),
                field(0, 23),
                field(1, 31),
                field(1, 12),
                field(0, 6),
            )
                .prop_filter_map("selects no value", |(mi, h, dom, mo, dow)| {
                    Cron::parse(&format!("{mi} {h} {dom} {mo} {dow}")).ok()
                })
        }

        /// Whether the minute starting at `at` ms matches, in `tz`: a direct reading of the
        /// fields, without the search.
        fn matches(cron: &Cron, tz: &FixedOffset, at: u64) -> bool {
            let local = tz.timestamp_millis_opt(at as i64).unwrap().naive_local();
            at.is_multiple_of(60_000)
                && cron.minutes.contains(local.minute())
                && cron.hours.contains(local.hour())
                && cron.day_matches(local.date())
        }

        proptest! {
            #[test]
            fn parse_never_panics(text in any::<String>()) {
                let _ = Cron::parse(&text);
            }

            #[test]
            fn parse_never_panics_on_cron_like_text(text in "[0-9*?,/ -]{0,24}") {
                let _ = Cron::parse(&text);
            }

            #[test]
            fn next_is_the_first_match_after(
                cron in expression(),
                after in 946_684_800_000u64..4_102_444_800_000,
                offset_minutes in -14 * 60..=14 * 60i32,
            ) {
                let tz = FixedOffset::east_opt(offset_minutes * 60).unwrap();
                let next = cron.next_after_in(&tz, after);
                // Brute force over the next 8 days, minute by minute.
                let window_end = after + 8 * 24 * 60 * 60_000;
                let first_minute = (after / 60_000 + 1) * 60_000;
                let brute = (first_minute..window_end)
                    .step_by(60_000)
                    .find(|&at| matches(&cron, &tz, at));
                match (next, brute) {
                    (Some(next), Some(brute)) => prop_assert_eq!(next, brute),
                    (Some(next), None) => {
                        prop_assert!(next >= window_end);
                        prop_assert!(matches(&cron, &tz, next));
                    }
                    (None, brute) => {
                        prop_assert_eq!(brute, None);
                        // Only an impossible day (Feb 30, Apr 31, ...) matches nothing.
                        prop_assert!(cron.days_of_week == Field::DayOfWeek.every());
                        prop_assert!(!cron.days_of_month.contains(1));
                    }
                }
            }
        }
    }
}
