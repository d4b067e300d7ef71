//! Evaluation against the fixture message, one table per topic.

use super::Outcome::{False as F, Fault as X, True as T, Unknown as U};
use super::{check, message, outcome, parse};
use crate::Selector;

#[test]
fn three_valued_logic() {
    check(&[
        ("trueProp AND trueProp", T),
        ("trueProp AND falseProp", F),
        ("falseProp AND trueProp", F),
        ("falseProp AND missing", F),
        ("missing AND falseProp", F),
        ("trueProp AND missing", U),
        ("missing AND trueProp", U),
        ("missing AND missing", U),
        ("trueProp OR missing", T),
        ("missing OR trueProp", T),
        ("falseProp OR falseProp", F),
        ("falseProp OR missing", U),
        ("missing OR falseProp", U),
        ("missing OR missing", U),
        ("NOT trueProp", F),
        ("NOT falseProp", T),
        ("NOT missing", U),
        ("NOT (missing = 1)", U),
        ("NOT NOT trueProp", T),
        ("TRUE", T),
        ("FALSE", F),
        ("NULL", U),
        ("NOT NULL", U),
        ("NULL OR TRUE", T),
        ("NULL AND FALSE", F),
        ("falseProp OR falseProp OR falseProp OR trueProp", T),
        ("trueProp AND trueProp AND trueProp AND falseProp", F),
        ("(trueProp OR falseProp) AND trueProp", T),
    ]);
}

#[test]
fn null_with_every_operator() {
    check(&[
        ("missing = 0", U),
        ("missing <> 0", U),
        ("missing > 0", U),
        ("missing >= 0", U),
        ("missing < 0", U),
        ("missing <= 0", U),
        ("missing LIKE 'x%'", U),
        ("missing NOT LIKE 'x%'", U),
        ("missing IN ('x')", U),
        ("missing NOT IN ('x')", U),
        ("missing BETWEEN 1 AND 2", U),
        ("missing NOT BETWEEN 1 AND 2", U),
        ("count BETWEEN missing AND 20", U),
        ("count BETWEEN missing AND 5", F),
        ("count NOT BETWEEN missing AND 5", T),
        ("count NOT BETWEEN missing AND 20", U),
        ("missing + 2 = 0", U),
        ("count - missing = 0", U),
        ("-missing = 0", U),
        ("+missing = 0", U),
        ("missing * 2 = 0", U),
        ("missing / 2 = 0", U),
        ("missing IS NULL", T),
        ("missing IS NOT NULL", F),
        ("name IS NULL", F),
        ("name IS NOT NULL", T),
        ("NOT (missing IS NULL)", F),
        ("(missing = 1) IS NULL", T),
        // ActiveMQ (ComparisonExpression.EqualsExpression): NULL = NULL is TRUE, and a NULL on
        // the right of `=` gives FALSE rather than unknown, so `<>` (NOT =) becomes TRUE.
        ("missing = other", T),
        ("missing <> other", F),
        ("'x' = missing", F),
        ("'x' <> missing", T),
        ("count <> missing", T),
        ("missing = 'x'", U),
        ("missing <> 'x'", U),
    ]);
}

#[test]
fn numbers() {
    check(&[
        ("count = 10", T),
        ("count = 10.0", T),
        ("1 = 1.0", T),
        ("count = 10L", T),
        ("count = 10l", T),
        ("ratio = 2.5", T),
        ("ratio * 4 = count", T),
        ("count > ratio", T),
        ("1 + 2 * 3 = 7", T),
        ("(1 + 2) * 3 = 9", T),
        ("10 - 4 - 3 = 3", T),
        ("2 * 3 % 4 = 2", T),
        ("-count = -10", T),
        ("- -count = 10", T),
        ("+count = 10", T),
        // ActiveMQ (ArithmeticExpression): `/` and `%` always compute in double.
        ("7 / 2 = 3.5", T),
        ("7 / 2 = 3", F),
        ("count / 4 = 2.5", T),
        ("count % 3 = 1", T),
        ("1 / 0 > maxLong", T),
        ("-1 / 0 < minLong", T),
        ("count / zero > 1000", T),
        // Java's Double.compare: NaN equals itself and is above everything; -0.0 < 0.0.
        ("0 / 0 = 0 / 0", T),
        ("0 / 0 > 1 / 0", T),
        ("1 % 0 = 0 / 0", T),
        ("0.0 = -0.0", F),
        ("negZero = 0", F),
        ("negZero < 0.0", T),
        // ActiveMQ (ConstantExpression): literals that fit an int are Java ints and wrap at 32
        // bits; fields are longs and wrap at 64.
        ("2147483647 + 1 < 0", T),
        ("2147483647 + 1 = -2147483648", T),
        ("intMax + 1 = 2147483648", T),
        ("maxLong + 1 = minLong", T),
        ("9223372036854775807 = maxLong", T),
        ("-9223372036854775808 = minLong", T),
        ("-(-9223372036854775808) = minLong", T),
        // ActiveMQ: a decimal literal beyond long is a BigDecimal, comparable only with another.
        ("9223372036854775808 = 9223372036854775808", T),
        ("99999999999999999999 > 1", F),
        ("NOT (99999999999999999999 > 1)", T),
        ("-99999999999999999999 < 99999999999999999999", T),
        ("-99999999999999999999 < -99999999999999999998", T),
        ("9223372036854775808 + 0 = 0", T),
        ("18446744073709551617 = 1", T),
        ("0x1F = 31", T),
        ("0X1f = 31", T),
        ("0xFFFFFFFF = 4294967295", T),
        ("0x7FFFFFFFFFFFFFFF = maxLong", T),
        ("017 = 15", T),
        ("00 = 0", T),
        ("0777777777777777777777 = maxLong", T),
        ("1.5E1 = 15", T),
        ("15e-1 = 1.5", T),
        (".5 = 0.5", T),
        ("1. = 1", T),
        ("08.5 = 8.5", T),
        ("1E400 > maxLong", T),
        ("-1.1E1 < 1.E1", T),
    ]);
}

#[test]
fn strings_and_booleans() {
    check(&[
        ("name = 'James'", T),
        ("name = 'james'", F),
        ("name <> 'Bob'", T),
        ("quote = '''In God We Trust'''", T),
        ("empty = ''", T),
        ("unicode = 'h\u{e9}llo \u{20ac}\u{1f600}'", T),
        ("name > empty", T),
        ("quote < name", T),
        ("trueProp = TRUE", T),
        ("falseProp = FALSE", T),
        ("trueProp <> falseProp", T),
        ("trueProp > falseProp", T),
        ("TRUE = TRUE", T),
        ("trueProp", T),
        ("falseProp", F),
        ("JMSRedelivered = FALSE", T),
        ("NOT JMSRedelivered", T),
        // A property read as a condition is FALSE unless it is a boolean, even the string "true".
        ("yes", F),
        ("NOT yes", T),
        ("count", F),
        ("NOT count", T),
        // ActiveMQ extension: `+` with a string on the left concatenates Java's text of the right.
        ("name + '!' = 'James!'", T),
        ("name + count = 'James10'", T),
        ("name + ratio = 'James2.5'", T),
        ("name + trueProp = 'Jamestrue'", T),
        ("name + 1E7 = 'James1.0E7'", T),
        ("name + 0.001 = 'James0.001'", T),
        ("name + 1E-4 = 'James1.0E-4'", T),
        ("name + 100.0 = 'James100.0'", T),
        ("name + 0 / 0 = 'JamesNaN'", T),
        (
            "name + 99999999999999999999 = 'James99999999999999999999'",
            T,
        ),
    ]);
}

#[test]
fn fields_are_case_sensitive_and_keywords_are_not() {
    check(&[
        ("JMSPriority > 3", T),
        ("jmspriority > 3", U),
        ("NAME = 'James'", U),
        ("JMSType = 'selector-test'", T),
        ("name in ('James')", T),
        ("name NoT iN ('Bob')", T),
        ("missing is null", T),
        ("name iS nOt NuLl", T),
        ("count between 1 and 10", T),
        ("name like 'J%'", T),
        ("true and not false", T),
        ("TrUe Or FaLsE", T),
    ]);
}

/// ActiveMQ's default (ComparisonExpression.compare without conversion): a string never equals or
/// orders with a number or a boolean; the comparison is FALSE, so its negation is TRUE.
#[test]
fn strings_against_numbers_without_conversion() {
    check(&[
        ("price > 10", F),
        ("NOT (price > 10)", T),
        ("price = 12", F),
        ("price <> 12", T),
        ("price = '12'", T),
        ("count = '10'", F),
        ("JMSPriority = '4'", F),
        ("JMSPriority > 3", T),
        ("yes = TRUE", F),
        ("'true' = trueProp", F),
        ("trueProp = 1", F),
        ("count = TRUE", F),
    ]);
}

/// ActiveMQ's `convert_string_expressions:` mode, which its STOMP transport always uses.
#[test]
fn strings_against_numbers_with_conversion() {
    check(&[
        ("convert_string_expressions:price > 10", T),
        ("convert_string_expressions:price = 12", T),
        ("convert_string_expressions:price = 12.0", T),
        ("convert_string_expressions:price > count", T),
        ("convert_string_expressions:count = '10'", T),
        ("convert_string_expressions:JMSPriority = '4'", T),
        // `10` is an int, and Integer.valueOf("12.5") fails: FALSE.
        ("convert_string_expressions:priceText > 10", F),
        ("convert_string_expressions:priceText > 10.0", T),
        ("convert_string_expressions:name > 1", F),
        ("convert_string_expressions:'+12' = 12", T),
        ("convert_string_expressions:' 12.5 ' = 12.5", T),
        ("convert_string_expressions:'12.5d' = 12.5", T),
        ("convert_string_expressions:'NaN' = 0 / 0", T),
        ("convert_string_expressions:'nan' = 0 / 0", F),
        ("convert_string_expressions:'12' = 9223372036854775808", F),
        ("convert_string_expressions:yes = TRUE", T),
        ("convert_string_expressions:'TRUE' = trueProp", T),
        // ActiveMQ casts the boolean itself to a string here and throws ClassCastException.
        ("convert_string_expressions:trueProp = 'true'", X),
    ]);
    let message = message();
    for (text, matched) in [
        ("price > 10", true),
        ("price > 100", false),
        ("yes = TRUE", true),
    ] {
        let stomp = Selector::parse_stomp(text).expect("parses");
        assert_eq!(stomp.matches(&message), matched, "{text}");
        assert_eq!(stomp.text(), text);
    }
}

/// ActiveMQ's grammar puts NOT with the prefix operators, so it binds tighter than comparisons.
#[test]
fn not_binds_tighter_than_comparisons() {
    check(&[
        ("NOT name = 'James'", F),
        ("NOT name = 'Bob'", F),
        ("NOT (name = 'Bob')", T),
        ("NOT trueProp = FALSE", T),
        ("NOT trueProp AND trueProp", F),
        ("NOT name LIKE 'J%'", F),
        ("NOT missing = 'x'", U),
    ]);
}

#[test]
fn in_lists() {
    check(&[
        ("name IN ('James', 'Bob')", T),
        ("name IN ('Bob', 'James', 'Gromit')", T),
        ("name IN ('Bob')", F),
        ("name NOT IN ('Bob')", T),
        ("name NOT IN ('James')", F),
        (
            "name IN ('a', 'b', 'c', 'd', 'e', 'f', 'James', 'James')",
            T,
        ),
        ("name IN ('james')", F),
        ("quote IN ('''In God We Trust''')", T),
        ("empty IN ('')", T),
        ("(name) IN ('James')", T),
        ("+name IN ('James')", T),
        // ActiveMQ (UnaryExpression.createInExpression): IN on a non-string is unknown.
        ("count IN ('10')", U),
        ("count NOT IN ('10')", U),
        ("JMSPriority IN ('4')", U),
    ]);
}

#[test]
fn between() {
    check(&[
        ("count BETWEEN 1 AND 10", T),
        ("count BETWEEN 10 AND 10", T),
        ("count BETWEEN 11 AND 20", F),
        ("count BETWEEN 20 AND 1", F),
        ("count BETWEEN 10.5 AND 20", F),
        ("ratio BETWEEN 2 AND 3", T),
        ("count NOT BETWEEN 11 AND 20", T),
        ("count NOT BETWEEN 1 AND 10", F),
        ("count BETWEEN 1 AND 5 + 5", T),
        ("count BETWEEN 1 AND 10 AND trueProp", T),
        ("JMSPriority BETWEEN 0 AND 4", T),
        // ActiveMQ: NOT BETWEEN is `v < low OR v > high`, FALSE for a string, unlike NOT (BETWEEN).
        ("price BETWEEN 1 AND 20", F),
        ("price NOT BETWEEN 1 AND 20", F),
        ("NOT (price BETWEEN 1 AND 20)", T),
    ]);
}

#[test]
fn comments() {
    check(&[
        ("name = 'James' -- trailing\n", T),
        ("/* lead */ name = /* mid */ 'James'", T),
        ("name = 'James' /**/", T),
        // ActiveMQ's `--` comment needs a line end; without one it is two minus signs: 8 - (-2).
        ("count = 8 --2", T),
    ]);
}

/// Arithmetic on a string or boolean throws in ActiveMQ; the fault ends evaluation, the message
/// does not match, and only operands actually evaluated can fault.
#[test]
fn faults() {
    check(&[
        ("1 + name = 1", X),
        ("name - 1 = 1", X),
        ("name * 2 = 1", X),
        ("trueProp + 1 = 1", X),
        ("count * name = 1", X),
        ("(1 + name = 1) OR TRUE", X),
        ("TRUE OR (1 + name = 1)", T),
        ("FALSE AND (1 + name = 1)", F),
        ("missing + name = 1", U),
        ("name - missing = 1", U),
        ("missing > 1 + name", U),
        ("-name = 1", U),
    ]);
}

/// ActiveMQ's `matches()` stops an AND at its first term that is not TRUE, where `evaluate()`
/// goes on past unknown terms; with a fault further on, the two differ.
#[test]
fn matching_stops_an_and_early() {
    let message = message();
    for (text, evaluated, matched) in [
        ("(missing = 1 AND 1 + name = 1) OR TRUE", X, true),
        ("(count BETWEEN missing AND 1 + name) OR TRUE", X, true),
        ("missing = 1 AND 1 + name = 1", X, false),
        ("NOT (missing = 1 AND 1 + name = 1)", X, false),
    ] {
        assert_eq!(outcome(text), evaluated, "{text}");
        assert_eq!(parse(text).matches(&message), matched, "{text}");
    }
}

#[test]
fn long_flat_chains_evaluate() {
    let chain = vec!["trueProp"; 300].join(" AND ");
    check(&[(chain.as_str(), T)]);
    let nested = format!("{}trueProp{}", "(falseProp OR ".repeat(60), ")".repeat(60));
    check(&[(nested.as_str(), T)]);
}
