//! The parsed selector: a small tree built once per subscription and only read afterwards.
//!
//! Its shape mirrors ActiveMQ's expression classes where their behaviour differs (`BETWEEN` is not
//! `NOT BETWEEN` negated, `<>` is `NOT (=)`), so evaluation can follow ActiveMQ node by node.
//! Everything a message-time check needs (LIKE automata, sorted IN lists, literal values) is
//! prepared here at parse time.

use crate::like::LikePattern;

/// A node of the selector tree.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Expr {
    /// The `NULL` literal.
    Null,
    /// `TRUE` or `FALSE`.
    Bool(bool),
    /// A string literal, decoded.
    Str(Box<str>),
    /// A numeric literal, typed as ActiveMQ types it.
    Number(Number),
    /// A message field read by name.
    Field(Box<str>),
    /// Unary minus.
    Negate(Box<Expr>),
    Arith {
        op: ArithOp,
        left: Box<Expr>,
        right: Box<Expr>,
    },
    /// `=`, `<`, `<=`, `>`, `>=` (`<>` is `Not` around `=`, as in ActiveMQ).
    Compare {
        op: CompareOp,
        left: Box<Expr>,
        right: Box<Expr>,
    },
    /// `value [NOT] BETWEEN low AND high`; the negated form is `value < low OR value > high`.
    Between {
        negated: bool,
        value: Box<Expr>,
        low: Box<Expr>,
        high: Box<Expr>,
    },
    /// `value LIKE pattern [ESCAPE c]` (`NOT LIKE` is `Not` around it).
    Like {
        value: Box<Expr>,
        pattern: LikePattern,
    },
    /// `field IN ('a', ...)` with the strings sorted for binary search (`NOT IN` is `Not` around it).
    In {
        field: Box<str>,
        values: Box<[Box<str>]>,
    },
    /// `value IS NULL` (`IS NOT NULL` is `Not` around it).
    IsNull(Box<Expr>),
    Not(Box<Expr>),
    /// Conjunction of two or more conditions, evaluated left to right.
    And(Vec<Expr>),
    /// Disjunction of two or more conditions, evaluated left to right.
    Or(Vec<Expr>),
    /// A field used as a condition: TRUE or FALSE if it is a boolean, FALSE if it is anything else.
    Truth(Box<Expr>),
}

/// A numeric literal: ActiveMQ keeps `int`-sized integers as Java `int`s, which overflow at 32 bits.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Number {
    Int(i32),
    Long(i64),
    Double(f64),
    /// A decimal literal beyond `i64` (kept by ActiveMQ as a `BigDecimal`): its digits, no sign.
    Big(Box<str>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ArithOp {
    Add,
    Subtract,
    Multiply,
    Divide,
    Remainder,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CompareOp {
    Eq,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Expr {
    /// Whether ActiveMQ types this node as a `BooleanExpression`, which decides where it may appear.
    pub(crate) fn is_condition(&self) -> bool {
        matches!(
            self,
            Expr::Null
                | Expr::Bool(_)
                | Expr::Compare { .. }
                | Expr::Between { .. }
                | Expr::Like { .. }
                | Expr::In { .. }
                | Expr::IsNull(_)
                | Expr::Not(_)
                | Expr::And(_)
                | Expr::Or(_)
                | Expr::Truth(_)
        )
    }
}
