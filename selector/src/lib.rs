//! JMS message selectors, parsed and evaluated exactly as Apache ActiveMQ 5.17 does.
//!
//! A subscription's selector is parsed once into a small tree ([`Selector::parse`]); the broker's
//! routing task then calls [`Selector::matches`] for every message, which reads fields through
//! [`Fields`] and allocates nothing (save for ActiveMQ's string concatenation with `+`).
//!
//! # Semantics
//!
//! ActiveMQ 5.17 is the reference (the grammar `activemq-client/src/main/grammar/SelectorParser.jj`
//! and the classes of `org.apache.activemq.filter`), including where it departs from the JMS
//! specification. The points a selector writer may trip on:
//!
//! - **Syntax.** Keywords are case-insensitive, identifiers case-sensitive and ASCII only.
//!   Literals: strings in single quotes (`''` is a quote), decimal integers with an optional `L`,
//!   hexadecimal `0x1F`, octal `017`, decimals and exponents (`1.5`, `.5`, `1.`, `5E-3`), `TRUE`,
//!   `FALSE`, `NULL`. ActiveMQ has no `F`/`D` suffixes and no `L` on hex or octal literals, so
//!   `1.5F` and `0x1FL` are refused. `--` and `/* */` comments are accepted.
//! - **Precedence.** `NOT` binds tighter than comparisons: `NOT a = 1` is `(NOT a) = 1`, which is
//!   never TRUE. Write `NOT (a = 1)`.
//! - **Types at parse time.** `<`, `<=`, `>`, `>=` and `BETWEEN` refuse string, boolean and NULL
//!   literals (`name > 'm'` is refused; two string properties may be ordered); `= NULL` is
//!   refused (use `IS NULL`); `IN` takes a property on the left and string literals only; a
//!   number or string on its own is not a condition (`3 + 5` is refused), a property is (`flag`).
//! - **NULL.** A missing field is NULL. Comparisons with NULL are unknown, AND/OR/NOT follow SQL's
//!   three-valued tables, and only TRUE matches. But ActiveMQ's `=` is lopsided: two NULLs are
//!   equal, `missing = 'x'` is unknown while `'x' = missing` is FALSE, so `'x' <> missing` is TRUE.
//! - **Numbers.** Integer literals that fit an `int` are Java `int`s and wrap at 32 bits
//!   (`2147483647 + 1 < 0` is TRUE); fields are `long`s; either side `double` makes `double`. `/` and
//!   `%` always compute in `double`: `7 / 2 = 3.5`, `1 / 0` is infinity, `0 / 0` is NaN (equal to
//!   itself, greater than everything, and `-0.0 < 0.0`, as Java's `Double.compare` has it).
//! - **Strings against numbers.** By default a string never equals or orders with a number or a
//!   boolean: the comparison is FALSE, not unknown (`ComparisonExpression.compare`). So if the
//!   field `price` is the string `"12"`, `price > 10` is FALSE and `NOT (price > 10)` is TRUE. A
//!   selector prefixed with `convert_string_expressions:` turns conversion on: the string is read
//!   as the other side's type (`Integer.valueOf`, `Long.valueOf`, `Double.valueOf`,
//!   `Boolean.valueOf`), so `price > 10` becomes TRUE, though `'12.5' > 10` stays FALSE because
//!   `10` is an `int`. **ActiveMQ's STOMP transport adds that prefix to every STOMP selector**
//!   (`ProtocolConverter.java`), which [`Selector::parse_stomp`] reproduces.
//! - **Odd operands.** `LIKE` on a non-string is FALSE (so `NOT LIKE` is TRUE); `IN` on a
//!   non-string is unknown; `NOT BETWEEN` is `v < low OR v > high`, so it is FALSE for a string;
//!   `-` on a non-number is NULL; `'a' + x` concatenates (`x` in Java's text form); other arithmetic
//!   on strings or booleans makes ActiveMQ throw, and the message then does not match.
//! - **Not supported:** `XPATH`/`XQUERY` selectors and ActiveMQ's selector functions
//!   (`REGEX(...)`, `INLIST(...)`...) are refused with a clear error.
//!
//! # Fields
//!
//! ActiveMQ reads JMS headers through the same names: `JMSPriority`, `JMSXDeliveryCount` and
//! `JMSXGroupSeq` are numbers, `JMSTimestamp` and `JMSExpiration` numbers, `JMSRedelivered` a
//! boolean, `JMSDeliveryMode` the string `PERSISTENT` or `NON_PERSISTENT`, `JMSType`,
//! `JMSMessageID`, `JMSCorrelationID`, `JMSDestination`, `JMSReplyTo` and `JMSXGroupID` strings.
//! Other STOMP headers are string properties. A [`Fields`] implementation decides all that.
//!
//! # Limits
//!
//! Selectors longer than [`MAX_LEN`] bytes or nested deeper than [`MAX_DEPTH`] are refused with a
//! [`ParseError`], so no input can exhaust the stack; nothing here panics on any input.

mod ast;
mod error;
mod eval;
mod java;
mod lexer;
mod like;
mod literal;
mod parser;
#[cfg(test)]
mod tests;

pub use error::ParseError;

/// The longest selector accepted, in bytes: longer ones are refused rather than parsed.
pub const MAX_LEN: usize = 4096;

/// The deepest nesting accepted (parentheses, prefix operators, and the height of the parsed
/// tree, where chains of AND or OR count once): bounds the stack used to parse and evaluate.
pub const MAX_DEPTH: usize = 64;

/// The prefix with which ActiveMQ turns on string conversion in comparisons.
const CONVERT_STRINGS_PREFIX: &str = "convert_string_expressions:";

/// A field value a message supplies. Borrowed: evaluation never copies a header.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    Str(&'a str),
    Long(i64),
    Double(f64),
    Bool(bool),
}

/// What a selector reads from a message: its headers and JMS fields by name (case-sensitive).
pub trait Fields {
    /// The field called `name` exactly as the selector spells it, or `None` if the message has
    /// none (the selector then sees NULL).
    fn field(&self, name: &str) -> Option<Value<'_>>;
}

/// A parsed selector, ready to be matched against any number of messages (from any thread).
#[derive(Debug, Clone)]
pub struct Selector {
    text: String,
    root: ast::Expr,
    convert_strings: bool,
}

impl Selector {
    /// Parses a selector as ActiveMQ's `SelectorParser.parse` does: strings do not convert in
    /// comparisons unless the text starts with `convert_string_expressions:`.
    pub fn parse(text: &str) -> Result<Selector, ParseError> {
        match text.strip_prefix(CONVERT_STRINGS_PREFIX) {
            Some(_) => Selector::build(text, CONVERT_STRINGS_PREFIX.len(), true),
            None => Selector::build(text, 0, false),
        }
    }

    /// Parses the `selector` header of a STOMP SUBSCRIBE as ActiveMQ's STOMP transport does: it
    /// prefixes the header with `convert_string_expressions:`, so STOMP headers (which are all
    /// strings) compare with numbers and booleans by conversion. Errors point into `text`.
    pub fn parse_stomp(text: &str) -> Result<Selector, ParseError> {
        Selector::build(text, 0, true)
    }

    fn build(text: &str, body_start: usize, convert_strings: bool) -> Result<Selector, ParseError> {
        Ok(Selector {
            text: text.to_owned(),
            root: parser::parse(text, body_start)?,
            convert_strings,
        })
    }

    /// True only when the selector evaluates to TRUE for `message` (FALSE and unknown do not match).
    pub fn matches(&self, message: &dyn Fields) -> bool {
        self.evaluation(message)
            .matches(&self.root)
            .unwrap_or(false)
    }

    /// The selector's text as given.
    pub fn text(&self) -> &str {
        &self.text
    }

    fn evaluation<'a>(&self, message: &'a dyn Fields) -> eval::Evaluation<'a> {
        eval::Evaluation {
            message,
            convert_strings: self.convert_strings,
        }
    }
}
