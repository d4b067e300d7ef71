//! Numeric literals typed as ActiveMQ's `ConstantExpression` types them.
//!
//! Integers that fit a Java `int` become `int`s (so `2147483647 + 1` wraps to a negative `int`,
//! as in ActiveMQ), larger ones `long`s. An `L` suffix changes nothing. A decimal literal beyond
//! the `long` range becomes a `BigDecimal`, unless its low 64 bits happen to fit an `int`, in which
//! case ActiveMQ takes those bits (`18446744073709551616` is `0`). Hexadecimal and octal literals
//! beyond the `long` range are refused, as Java's `Long.parseLong` refuses them.

use crate::ast::Number;
use crate::lexer::NumberForm;

/// The value of the literal `text`, of the given form, or what was expected instead.
pub(crate) fn number(form: NumberForm, text: &str) -> Result<Number, &'static str> {
    match form {
        NumberForm::Decimal => {
            let digits = text.trim_end_matches(['l', 'L']);
            Ok(match digits.parse::<i64>() {
                Ok(value) => integer(value),
                Err(_) => match i32::try_from(low_bits(digits)) {
                    Ok(value) => Number::Int(value),
                    Err(_) => Number::Big(digits.into()),
                },
            })
        }
        NumberForm::Hex => i64::from_str_radix(&text[2..], 16)
            .map(integer)
            .map_err(|_| "a hexadecimal literal of at most 0x7FFFFFFFFFFFFFFF"),
        NumberForm::Octal => i64::from_str_radix(text, 8)
            .map(integer)
            .map_err(|_| "an octal literal of at most 0777777777777777777777"),
        NumberForm::Float => text
            .parse::<f64>()
            .map(Number::Double)
            .map_err(|_| "a number"),
    }
}

/// The low 64 bits of the non-negative integer written in `digits`, as Java's `longValue()` gives.
pub(crate) fn low_bits(digits: &str) -> i64 {
    digits.bytes().fold(0i64, |value, digit| {
        value
            .wrapping_mul(10)
            .wrapping_add(i64::from(digit.wrapping_sub(b'0')))
    })
}

fn integer(value: i64) -> Number {
    i32::try_from(value).map_or(Number::Long(value), Number::Int)
}
