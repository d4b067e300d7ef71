//! Evaluates a parsed selector against one message, node by node as ActiveMQ's expression classes
//! do, without allocating (string concatenation with `+`, an ActiveMQ extension, is the one
//! exception).
//!
//! Results are three-valued: `Some(true)`, `Some(false)` and `None` (unknown, SQL's NULL). ActiveMQ
//! evaluates in two modes and both are kept: `truth` is its `evaluate()` and `matches` its
//! `matches()`, which differ only in that `matches()` stops an AND (and a BETWEEN) at the first
//! term that is not TRUE. That matters because arithmetic on a string or a boolean throws in
//! ActiveMQ ([`Fault`]): the fault ends the whole evaluation and the message does not match, but
//! only if evaluation reaches it.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt::Write;

use crate::ast::{ArithOp, CompareOp, Expr, Number};
use crate::java;
use crate::literal::low_bits;
use crate::{Fields, Value};

/// Evaluation stopped where ActiveMQ throws a `RuntimeException` (`ArithmeticExpression`: an
/// operand of `+` that is neither a number nor a string, or of `-`, `*`, `/`, `%` that is not a
/// number). ActiveMQ lets that exception escape into its dispatch code; here the selector simply
/// does not match, which is the closest well-defined behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fault;

/// One evaluation: the message, and whether strings convert to the other side's type in
/// comparisons (ActiveMQ's `convert_string_expressions:` mode).
pub(crate) struct Evaluation<'a> {
    pub message: &'a dyn Fields,
    pub convert_strings: bool,
}

/// A value met during evaluation; strings are borrowed from the message or the selector.
#[derive(Debug, Clone, PartialEq)]
enum Val<'a> {
    Null,
    Bool(bool),
    Str(Cow<'a, str>),
    Num(Num<'a>),
}

/// ActiveMQ's numeric types: Java `int`, `long`, `double`, and `BigDecimal` for huge literals.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Num<'a> {
    Int(i32),
    Long(i64),
    Double(f64),
    Big { negative: bool, digits: &'a str },
}

/// The digits of `-Long.MIN_VALUE`, which negation turns back into a `long`.
const LONG_MIN_DIGITS: &str = "9223372036854775808";

impl<'a> Evaluation<'a> {
    /// ActiveMQ's `matches()`: whether `expr` is TRUE, stopping an AND at its first term that is not.
    pub(crate) fn matches(&self, expr: &'a Expr) -> Result<bool, Fault> {
        match expr {
            Expr::And(terms) => {
                for term in terms {
                    if !self.matches(term)? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            Expr::Or(terms) => {
                for term in terms {
                    if self.matches(term)? {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
            Expr::Between {
                negated: false,
                value,
                low,
                high,
            } => {
                let value = self.value(value)?;
                Ok(self.ordered(CompareOp::Ge, &value, low)? == Some(true)
                    && self.ordered(CompareOp::Le, &value, high)? == Some(true))
            }
            _ => Ok(self.truth(expr)? == Some(true)),
        }
    }

    /// ActiveMQ's `evaluate()` of a condition: TRUE, FALSE or unknown.
    pub(crate) fn truth(&self, expr: &'a Expr) -> Result<Option<bool>, Fault> {
        Ok(match expr {
            Expr::Not(inner) => self.truth(inner)?.map(|value| !value),
            Expr::And(terms) => {
                let mut unknown = false;
                for term in terms {
                    match self.truth(term)? {
                        Some(false) => return Ok(Some(false)),
                        None => unknown = true,
                        Some(true) => {}
                    }
                }
                (!unknown).then_some(true)
            }
            Expr::Or(terms) => {
                let mut unknown = false;
                for term in terms {
                    match self.truth(term)? {
                        Some(true) => return Ok(Some(true)),
                        None => unknown = true,
                        Some(false) => {}
                    }
                }
                (!unknown).then_some(false)
            }
            Expr::Compare {
                op: CompareOp::Eq,
                left,
                right,
            } => self.equal(left, right)?,
            Expr::Compare { op, left, right } => {
                let left = self.value(left)?;
                self.ordered(*op, &left, right)?
            }
            Expr::Between {
                negated,
                value,
                low,
                high,
            } => {
                let value = self.value(value)?;
                if *negated {
                    // ActiveMQ: value < low OR value > high, so a non-number is FALSE, not TRUE.
                    match self.ordered(CompareOp::Lt, &value, low)? {
                        Some(true) => Some(true),
                        below => or(below, self.ordered(CompareOp::Gt, &value, high)?),
                    }
                } else {
                    match self.ordered(CompareOp::Ge, &value, low)? {
                        Some(false) => Some(false),
                        above => and(above, self.ordered(CompareOp::Le, &value, high)?),
                    }
                }
            }
            Expr::Like { value, pattern } => match self.value(value)? {
                Val::Null => None,
                Val::Str(text) => Some(pattern.matches(&text)),
                _ => Some(false),
            },
            Expr::In { field, values } => match self.message.field(field) {
                Some(Value::Str(text)) => {
                    Some(values.binary_search_by(|v| (**v).cmp(text)).is_ok())
                }
                _ => None,
            },
            Expr::IsNull(inner) => Some(self.value(inner)? == Val::Null),
            Expr::Truth(inner) => truth_of(self.value(inner)?),
            // The literals TRUE, FALSE and NULL: the only other nodes the parser lets stand as a
            // condition.
            _ => truth_of(self.value(expr)?),
        })
    }

    fn value(&self, expr: &'a Expr) -> Result<Val<'a>, Fault> {
        Ok(match expr {
            Expr::Null => Val::Null,
            Expr::Bool(value) => Val::Bool(*value),
            Expr::Str(text) => Val::Str(Cow::Borrowed(text)),
            Expr::Number(number) => Val::Num(match number {
                Number::Int(value) => Num::Int(*value),
                Number::Long(value) => Num::Long(*value),
                Number::Double(value) => Num::Double(*value),
                Number::Big(digits) => Num::Big {
                    negative: false,
                    digits,
                },
            }),
            Expr::Field(name) => match self.message.field(name) {
                None => Val::Null,
                Some(Value::Str(text)) => Val::Str(Cow::Borrowed(text)),
                Some(Value::Long(value)) => Val::Num(Num::Long(value)),
                Some(Value::Double(value)) => Val::Num(Num::Double(value)),
                Some(Value::Bool(value)) => Val::Bool(value),
            },
            Expr::Negate(inner) => match self.value(inner)? {
                Val::Num(number) => Val::Num(number.negate()),
                _ => Val::Null,
            },
            Expr::Arith { op, left, right } => self.arith(*op, left, right)?,
            // A condition used as a value, as in `(a = 1) = TRUE`.
            condition => match self.truth(condition)? {
                Some(value) => Val::Bool(value),
                None => Val::Null,
            },
        })
    }

    /// `ArithmeticExpression`: NULL on either side gives NULL (the right side is not evaluated
    /// when the left is NULL); a string on the left of `+` concatenates.
    fn arith(&self, op: ArithOp, left: &'a Expr, right: &'a Expr) -> Result<Val<'a>, Fault> {
        let left = self.value(left)?;
        if left == Val::Null {
            return Ok(Val::Null);
        }
        let right = self.value(right)?;
        match (op, left, right) {
            (_, _, Val::Null) => Ok(Val::Null),
            (_, Val::Num(left), Val::Num(right)) => Ok(Val::Num(left.arith(op, right))),
            (ArithOp::Add, Val::Str(left), right) => {
                let mut joined = left.into_owned();
                push_java_text(&mut joined, &right);
                Ok(Val::Str(Cow::Owned(joined)))
            }
            _ => Err(Fault),
        }
    }

    /// `EqualsExpression`: both sides are always evaluated. NULL = NULL is TRUE, NULL = x is
    /// unknown, but x = NULL is FALSE (so `'a' <> missing` is TRUE), all as in ActiveMQ.
    fn equal(&self, left: &'a Expr, right: &'a Expr) -> Result<Option<bool>, Fault> {
        let left = self.value(left)?;
        let right = self.value(right)?;
        Ok(match (&left, &right) {
            (Val::Null, Val::Null) => Some(true),
            (Val::Null, _) => None,
            (_, Val::Null) => Some(false),
            _ => Some(self.order(&left, &right)? == Some(Ordering::Equal)),
        })
    }

    /// `ComparisonExpression.evaluate` with the left side already evaluated: unknown if either side
    /// is NULL (the right side is not evaluated when the left is), FALSE if they do not compare.
    fn ordered(
        &self,
        op: CompareOp,
        left: &Val<'a>,
        right: &'a Expr,
    ) -> Result<Option<bool>, Fault> {
        if *left == Val::Null {
            return Ok(None);
        }
        let right = self.value(right)?;
        if right == Val::Null {
            return Ok(None);
        }
        Ok(Some(
            self.order(left, &right)?
                .is_some_and(|order| holds(op, order)),
        ))
    }

    /// `ComparisonExpression.compare`: how two non-NULL values order, or `None` when ActiveMQ
    /// declares them incomparable (the comparison is then FALSE). In conversion mode a boolean
    /// on the left of a string is a fault: ActiveMQ casts the boolean itself to a string there
    /// and throws `ClassCastException`.
    fn order(&self, left: &Val<'a>, right: &Val<'a>) -> Result<Option<Ordering>, Fault> {
        Ok(match (left, right) {
            (Val::Num(a), Val::Num(b)) => a.order(*b),
            (Val::Str(a), Val::Str(b)) => Some(java::compare_strings(a, b)),
            (Val::Bool(a), Val::Bool(b)) => Some(a.cmp(b)),
            _ if !self.convert_strings => None,
            (Val::Bool(_), Val::Str(_)) => return Err(Fault),
            (Val::Str(a), Val::Bool(b)) => Some(java::parse_boolean(a).cmp(b)),
            (Val::Num(a), Val::Str(b)) => a.parse_like(b).and_then(|b| a.order(b)),
            (Val::Str(a), Val::Num(b)) => b.parse_like(a).and_then(|a| a.order(*b)),
            _ => None,
        })
    }
}

fn holds(op: CompareOp, order: Ordering) -> bool {
    match op {
        CompareOp::Eq => order.is_eq(),
        CompareOp::Lt => order.is_lt(),
        CompareOp::Le => order.is_le(),
        CompareOp::Gt => order.is_gt(),
        CompareOp::Ge => order.is_ge(),
    }
}

/// Three-valued AND.
fn and(a: Option<bool>, b: Option<bool>) -> Option<bool> {
    match (a, b) {
        (Some(false), _) | (_, Some(false)) => Some(false),
        (Some(true), Some(true)) => Some(true),
        _ => None,
    }
}

/// Three-valued OR.
fn or(a: Option<bool>, b: Option<bool>) -> Option<bool> {
    match (a, b) {
        (Some(true), _) | (_, Some(true)) => Some(true),
        (Some(false), Some(false)) => Some(false),
        _ => None,
    }
}

/// A value read as a condition (`BooleanCastExpression`): a boolean is itself, NULL is unknown,
/// anything else is FALSE (even the string "true").
fn truth_of(value: Val<'_>) -> Option<bool> {
    match value {
        Val::Null => None,
        Val::Bool(value) => Some(value),
        _ => Some(false),
    }
}

/// Appends Java's `String.valueOf(value)`, as string concatenation with `+` does.
fn push_java_text(out: &mut String, value: &Val<'_>) {
    let _ = match value {
        Val::Null => write!(out, "null"),
        Val::Bool(value) => write!(out, "{value}"),
        Val::Str(text) => write!(out, "{text}"),
        Val::Num(Num::Int(value)) => write!(out, "{value}"),
        Val::Num(Num::Long(value)) => write!(out, "{value}"),
        Val::Num(Num::Double(value)) => {
            java::push_double(out, *value);
            Ok(())
        }
        Val::Num(Num::Big { negative, digits }) => {
            write!(out, "{}{digits}", if *negative { "-" } else { "" })
        }
    };
}

impl<'a> Num<'a> {
    fn negate(self) -> Num<'a> {
        match self {
            Num::Int(value) => Num::Int(value.wrapping_neg()),
            Num::Long(value) => Num::Long(value.wrapping_neg()),
            Num::Double(value) => Num::Double(-value),
            Num::Big {
                negative: false,
                digits: LONG_MIN_DIGITS,
            } => Num::Long(i64::MIN),
            Num::Big { negative, digits } => Num::Big {
                negative: !negative,
                digits,
            },
        }
    }

    /// Java's `longValue()`: a `BigDecimal` keeps its low 64 bits.
    fn as_long(self) -> i64 {
        match self {
            Num::Int(value) => i64::from(value),
            Num::Long(value) => value,
            Num::Double(value) => value as i64,
            Num::Big { negative, digits } if negative => low_bits(digits).wrapping_neg(),
            Num::Big { digits, .. } => low_bits(digits),
        }
    }

    fn as_double(self) -> f64 {
        match self {
            Num::Int(value) => f64::from(value),
            Num::Long(value) => value as f64,
            Num::Double(value) => value,
            Num::Big { negative, digits } => {
                let magnitude = digits.parse::<f64>().unwrap_or(f64::INFINITY);
                if negative {
                    -magnitude
                } else {
                    magnitude
                }
            }
        }
    }

    /// `ArithmeticExpression`: `/` and `%` always work in `double` (so `7 / 2` is 3.5 and `1 / 0`
    /// is infinity); otherwise `double` if either side is one, else `long` if either side is one,
    /// else `int` (a `BigDecimal` counting as `int` and keeping its low 32 bits). Integer
    /// arithmetic wraps on overflow, as Java's does.
    fn arith(self, op: ArithOp, other: Num<'a>) -> Num<'a> {
        let doubles =
            |apply: fn(f64, f64) -> f64| Num::Double(apply(self.as_double(), other.as_double()));
        match op {
            ArithOp::Divide => return doubles(|a, b| a / b),
            ArithOp::Remainder => return doubles(|a, b| a % b),
            _ => {}
        }
        match (self, other) {
            (Num::Double(_), _) | (_, Num::Double(_)) => match op {
                ArithOp::Add => doubles(|a, b| a + b),
                ArithOp::Subtract => doubles(|a, b| a - b),
                _ => doubles(|a, b| a * b),
            },
            (Num::Long(_), _) | (_, Num::Long(_)) => {
                let (a, b) = (self.as_long(), other.as_long());
                Num::Long(match op {
                    ArithOp::Add => a.wrapping_add(b),
                    ArithOp::Subtract => a.wrapping_sub(b),
                    _ => a.wrapping_mul(b),
                })
            }
            _ => {
                let (a, b) = (self.as_long() as i32, other.as_long() as i32);
                Num::Int(match op {
                    ArithOp::Add => a.wrapping_add(b),
                    ArithOp::Subtract => a.wrapping_sub(b),
                    _ => a.wrapping_mul(b),
                })
            }
        }
    }

    /// How two numbers order after Java's widening (`int` to `long`, either to `double`); a
    /// `BigDecimal` compares only with another `BigDecimal`.
    fn order(self, other: Num<'a>) -> Option<Ordering> {
        match (self, other) {
            (
                Num::Big {
                    negative: a,
                    digits: x,
                },
                Num::Big {
                    negative: b,
                    digits: y,
                },
            ) => {
                let magnitude = x.len().cmp(&y.len()).then_with(|| x.cmp(y));
                Some(match (a, b) {
                    (false, false) => magnitude,
                    (true, true) => magnitude.reverse(),
                    _ => b.cmp(&a),
                })
            }
            (Num::Big { .. }, _) | (_, Num::Big { .. }) => None,
            (Num::Double(_), _) | (_, Num::Double(_)) => {
                Some(java::compare_doubles(self.as_double(), other.as_double()))
            }
            _ => Some(self.as_long().cmp(&other.as_long())),
        }
    }

    /// In `convert_string_expressions:` mode, `text` read as this number's Java type
    /// (`Integer.valueOf`, `Long.valueOf`, `Double.valueOf`); `None` if it does not parse, which
    /// makes the comparison FALSE.
    fn parse_like(self, text: &str) -> Option<Num<'a>> {
        match self {
            Num::Int(_) => text.parse().ok().map(Num::Int),
            Num::Long(_) => text.parse().ok().map(Num::Long),
            Num::Double(_) => java::parse_double(text).map(Num::Double),
            Num::Big { .. } => None,
        }
    }
}
