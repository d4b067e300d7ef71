//! Table-driven tests: parsing (accepted and refused selectors), evaluation against one fixed
//! message, LIKE, and the Java behaviours ActiveMQ inherits.
//!
//! Expected outcomes were checked against ActiveMQ 5.17's own `SelectorParser` and expression
//! classes, run on the same message; cases marked "ActiveMQ" follow it where the JMS
//! specification reads otherwise or says nothing.

mod allocation;
mod eval;
mod java;
mod like;
mod parse;

use std::collections::HashMap;

use crate::{Fields, Selector, Value};

/// A message as a map from field name to value.
struct Message(HashMap<&'static str, Value<'static>>);

impl Fields for Message {
    fn field(&self, name: &str) -> Option<Value<'_>> {
        self.0.get(name).copied()
    }
}

/// The message every evaluation table runs against: STOMP-style string headers, typed JMS
/// fields, numbers and booleans.
fn message() -> Message {
    Message(HashMap::from([
        ("JMSType", Value::Str("selector-test")),
        ("JMSPriority", Value::Long(4)),
        ("JMSRedelivered", Value::Bool(false)),
        ("name", Value::Str("James")),
        ("quote", Value::Str("'In God We Trust'")),
        ("price", Value::Str("12")),
        ("priceText", Value::Str("12.5")),
        ("empty", Value::Str("")),
        ("yes", Value::Str("true")),
        ("special", Value::Str("a.b*c+d?e[f]g^h$i(j)k{l}m|n\\o")),
        ("under", Value::Str("_foo%")),
        ("multi", Value::Str("line1\nline2")),
        ("unicode", Value::Str("h\u{e9}llo \u{20ac}\u{1f600}")),
        ("count", Value::Long(10)),
        ("zero", Value::Long(0)),
        ("maxLong", Value::Long(i64::MAX)),
        ("minLong", Value::Long(i64::MIN)),
        ("intMax", Value::Long(i64::from(i32::MAX))),
        ("ratio", Value::Double(2.5)),
        ("negZero", Value::Double(-0.0)),
        ("trueProp", Value::Bool(true)),
        ("falseProp", Value::Bool(false)),
    ]))
}

/// What ActiveMQ's `evaluate()` makes of a selector: TRUE, FALSE, unknown, or a thrown exception.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    True,
    False,
    Unknown,
    Fault,
}

fn parse(text: &str) -> Selector {
    Selector::parse(text).unwrap_or_else(|error| panic!("{text:?} should parse: {error}"))
}

/// The three-valued result of `text` on the fixture message.
fn outcome(text: &str) -> Outcome {
    let selector = parse(text);
    let message = message();
    match selector.evaluation(&message).truth(&selector.root) {
        Ok(Some(true)) => Outcome::True,
        Ok(Some(false)) => Outcome::False,
        Ok(None) => Outcome::Unknown,
        Err(_) => Outcome::Fault,
    }
}

/// Checks each selector's outcome, and that `matches` agrees (only TRUE matches).
fn check(table: &[(&str, Outcome)]) {
    let message = message();
    let mut failures = Vec::new();
    for &(text, expected) in table {
        let got = outcome(text);
        let matched = parse(text).matches(&message);
        if got != expected || matched != (expected == Outcome::True) {
            failures.push(format!(
                "{text:?}: expected {expected:?}, got {got:?} (matches: {matched})"
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn selectors_are_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<Selector>();
}
