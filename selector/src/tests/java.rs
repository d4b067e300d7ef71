//! The Java library behaviours ActiveMQ's evaluation inherits.

use std::cmp::Ordering;

use crate::java::{compare_doubles, compare_strings, parse_boolean, parse_double, push_double};

#[test]
fn doubles_print_as_java_prints_them() {
    let cases = [
        (1.0, "1.0"),
        (2.5, "2.5"),
        (100.0, "100.0"),
        (0.001, "0.001"),
        (0.0001, "1.0E-4"),
        (1e7, "1.0E7"),
        (9_999_999.0, "9999999.0"),
        (123_456.789, "123456.789"),
        (1.234e-5, "1.234E-5"),
        (1e21, "1.0E21"),
        (-2.5, "-2.5"),
        (0.0, "0.0"),
        (-0.0, "-0.0"),
        (f64::NAN, "NaN"),
        (f64::INFINITY, "Infinity"),
        (f64::NEG_INFINITY, "-Infinity"),
        (f64::MAX, "1.7976931348623157E308"),
        (f64::MIN_POSITIVE, "2.2250738585072014E-308"),
    ];
    for (value, expected) in cases {
        let mut text = String::new();
        push_double(&mut text, value);
        assert_eq!(text, expected, "{value:e}");
    }
}

#[test]
fn doubles_parse_as_java_parses_them() {
    let cases = [
        ("12.5", Some(12.5)),
        (" 12.5\t", Some(12.5)),
        ("+1e2", Some(100.0)),
        ("-.5", Some(-0.5)),
        ("5.", Some(5.0)),
        ("1.5f", Some(1.5)),
        ("2D", Some(2.0)),
        ("Infinity", Some(f64::INFINITY)),
        ("-Infinity", Some(f64::NEG_INFINITY)),
        ("inf", None),
        ("nan", None),
        ("", None),
        (".", None),
        ("1e", None),
        ("1,5", None),
        ("0x10", None),
        ("--1", None),
    ];
    for (text, expected) in cases {
        assert_eq!(parse_double(text), expected, "{text:?}");
    }
    assert!(parse_double("NaN").is_some_and(f64::is_nan));
}

#[test]
fn doubles_compare_as_java_compares_them() {
    assert_eq!(compare_doubles(-0.0, 0.0), Ordering::Less);
    assert_eq!(compare_doubles(f64::NAN, f64::NAN), Ordering::Equal);
    assert_eq!(compare_doubles(f64::NAN, f64::INFINITY), Ordering::Greater);
    assert_eq!(compare_doubles(-f64::NAN, f64::INFINITY), Ordering::Greater);
    assert_eq!(compare_doubles(1.0, 2.0), Ordering::Less);
    assert_eq!(compare_doubles(2.0, 2.0), Ordering::Equal);
}

#[test]
fn strings_compare_by_utf16_code_units() {
    // U+1F600 is a surrogate pair (0xD83D...) and sorts below U+FFFD in Java, above it in UTF-8.
    assert_eq!(compare_strings("\u{1f600}", "\u{fffd}"), Ordering::Less);
    assert_eq!(compare_strings("abc", "abd"), Ordering::Less);
    assert_eq!(compare_strings("b", "abc"), Ordering::Greater);
    assert_eq!(compare_strings("", ""), Ordering::Equal);
}

#[test]
fn booleans_parse_as_java_parses_them() {
    assert!(parse_boolean("true"));
    assert!(parse_boolean("TRUE"));
    assert!(!parse_boolean("yes"));
    assert!(!parse_boolean(" true"));
}
