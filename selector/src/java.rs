//! The pieces of Java's standard library whose exact behaviour ActiveMQ's selectors inherit:
//! `Double.compare`, `String.compareTo`, `Double.valueOf`, `Boolean.valueOf` and `Double.toString`.

use std::cmp::Ordering;
use std::fmt::Write;

/// `Double.compare`: a total order in which `-0.0 < 0.0` and NaN equals itself and is the largest.
pub(crate) fn compare_doubles(a: f64, b: f64) -> Ordering {
    fn bits(d: f64) -> i64 {
        // Double.doubleToLongBits: every NaN has one canonical bit pattern.
        if d.is_nan() {
            0x7ff8_0000_0000_0000
        } else {
            i64::from_ne_bytes(d.to_ne_bytes())
        }
    }
    a.partial_cmp(&b)
        .filter(|order| order.is_ne())
        .unwrap_or_else(|| bits(a).cmp(&bits(b)))
}

/// `String.compareTo`: lexicographic over UTF-16 code units (which differs from Rust's byte order
/// when characters above U+FFFF meet characters from U+E000 to U+FFFF).
pub(crate) fn compare_strings(a: &str, b: &str) -> Ordering {
    if a == b {
        Ordering::Equal
    } else {
        a.encode_utf16().cmp(b.encode_utf16())
    }
}

/// `Boolean.valueOf(String)`: true exactly for "true" in any case.
pub(crate) fn parse_boolean(text: &str) -> bool {
    text.eq_ignore_ascii_case("true")
}

/// `Double.valueOf(String)` for decimal text: surrounding whitespace and control characters
/// trimmed, an optional sign, `NaN`, `Infinity`, digits with an optional point and exponent, and an
/// optional `f`/`F`/`d`/`D` suffix. (Java's hexadecimal floating-point form is not accepted.)
pub(crate) fn parse_double(text: &str) -> Option<f64> {
    let text = text.trim_matches(|c: char| c <= ' ');
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
    let negative = text.starts_with('-');
    let magnitude = match unsigned {
        "NaN" => f64::NAN,
        "Infinity" => f64::INFINITY,
        _ => {
            let digits = unsigned
                .strip_suffix(['f', 'F', 'd', 'D'])
                .unwrap_or(unsigned);
            let decimal = digits.starts_with(|c: char| c.is_ascii_digit() || c == '.')
                && digits
                    .chars()
                    .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'));
            if !decimal {
                return None;
            }
            digits.parse::<f64>().ok()?
        }
    };
    Some(if negative { -magnitude } else { magnitude })
}

/// Appends `Double.toString(value)`: plain notation from 10^-3 up to 10^7, computerized scientific
/// notation (`1.0E10`) outside it, always with a fractional digit. Digits are the shortest that
/// round-trip, as Java 19 and later print them.
pub(crate) fn push_double(out: &mut String, value: f64) {
    if value.is_nan() {
        out.push_str("NaN");
        return;
    }
    if value.is_infinite() {
        out.push_str(if value > 0.0 { "Infinity" } else { "-Infinity" });
        return;
    }
    if value.is_sign_negative() {
        out.push('-');
    }
    let magnitude = value.abs();
    if magnitude == 0.0 {
        out.push_str("0.0");
        return;
    }
    // `{:e}` gives the shortest round-trip digits as `d.ddde±x`.
    let scientific = format!("{magnitude:e}");
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    if (1e-3..1e7).contains(&magnitude) {
        if exponent < 0 {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', (-exponent - 1) as usize));
            out.push_str(&digits);
        } else {
            let point = exponent as usize + 1;
            let padded = format!("{digits:0<point$}");
            let (whole, fraction) = padded.split_at(point);
            let _ = write!(
                out,
                "{whole}.{}",
                if fraction.is_empty() { "0" } else { fraction }
            );
        }
    } else {
        let (first, rest) = digits.split_at(1);
        let rest = if rest.is_empty() { "0" } else { rest };
        let _ = write!(out, "{first}.{rest}E{exponent}");
    }
}
