//! Arbitrary text through both selector parsers, [`Selector::parse`] (JMS) and
//! [`Selector::parse_stomp`] (a STOMP SUBSCRIBE header); whatever parses is matched against a
//! few fixed messages covering every [`Value`] kind, NULL (absent fields) and awkward numbers.
//!
//! Checks: no panic and no stack overflow (the parser bounds length and depth), and a parsed
//! selector keeps its text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use selector::{Fields, Selector, Value};

/// A message with a fixed set of fields; any other name is absent.
struct Message(&'static [(&'static str, Value<'static>)]);

impl Fields for Message {
    fn field(&self, name: &str) -> Option<Value<'_>> {
        self.0.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }
}

const MESSAGES: [Message; 3] = [
    Message(&[]),
    Message(&[
        ("a", Value::Long(1)),
        ("b", Value::Double(2.5)),
        ("c", Value::Str("abc")),
        ("d", Value::Bool(true)),
        ("JMSPriority", Value::Long(4)),
        ("JMSType", Value::Str("x_%\\")),
        ("s", Value::Str("12")),
        ("t", Value::Str("true")),
    ]),
    Message(&[
        ("a", Value::Long(i64::MIN)),
        ("b", Value::Double(f64::NAN)),
        ("c", Value::Str("")),
        ("d", Value::Bool(false)),
        ("e", Value::Double(f64::INFINITY)),
        ("f", Value::Long(i64::MAX)),
        ("s", Value::Str("1e400")),
        ("t", Value::Str("-0")),
    ]),
];

fuzz_target!(|text: &str| {
    for parsed in [Selector::parse(text), Selector::parse_stomp(text)] {
        if let Ok(selector) = parsed {
            assert_eq!(selector.text(), text);
            for message in &MESSAGES {
                selector.matches(message);
            }
        }
    }
});
