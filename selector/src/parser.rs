//! Recursive-descent parser for ActiveMQ's selector grammar (`SelectorParser.jj`), including the
//! type rules ActiveMQ enforces while building its expression tree (`checkLessThanOperand`,
//! `checkEqualOperand` and `createInFilter` in `ComparisonExpression`, `asBooleanExpression` in the
//! grammar).
//!
//! Precedence, loosest first, is the grammar's: `OR`; `AND`; `=`, `<>`, `IS [NOT] NULL`; `<`,
//! `<=`, `>`, `>=`, `[NOT] LIKE`, `[NOT] BETWEEN`, `[NOT] IN`; `+`, `-`; `*`, `/`, `%`; then the
//! prefix operators `+`, `-` and `NOT`. `NOT` therefore binds tighter than comparisons, as in
//! ActiveMQ: `NOT a = 1` means `(NOT a) = 1`.
//!
//! Invariants: recursion (parentheses and prefix operators) and the height of the built tree are
//! both capped at [`MAX_DEPTH`], so neither parsing, evaluation nor dropping can exhaust the stack.

use crate::ast::{ArithOp, CompareOp, Expr};
use crate::error::ParseError;
use crate::lexer::{tokenize, Keyword, Kind, Span, Symbol, Token};
use crate::like::LikePattern;
use crate::literal;
use crate::{MAX_DEPTH, MAX_LEN};

const EXPECTED_VALUE: &str = "a value: a property name, a literal, NOT, a sign or '('";
const EXPECTED_CONDITION: &str = "a condition (a comparison, LIKE, IN, BETWEEN, IS NULL, TRUE, \
     FALSE or a property), not a number or a string";
const EXPECTED_ORDERED: &str = "a number or a property: ActiveMQ refuses strings, TRUE, FALSE, \
     NULL and conditions around <, <=, >, >= and BETWEEN";

/// Parses the selector `text`, whose grammar starts at byte `body_start` (after any prefix).
pub(crate) fn parse(text: &str, body_start: usize) -> Result<Expr, ParseError> {
    if text.len() > MAX_LEN {
        let cut = (0..=MAX_LEN)
            .rfind(|&at| text.is_char_boundary(at))
            .unwrap_or(0);
        let expected = format!("a selector of at most {MAX_LEN} bytes");
        return Err(ParseError::new(text, cut, &text[cut..], expected));
    }
    let mut parser = Parser {
        text,
        tokens: tokenize(text, body_start)?,
        next: 0,
        nesting: 0,
    };
    let root = parser.or()?;
    if parser.peek().kind != Kind::End {
        return Err(parser.unexpected("an operator or the end of the selector"));
    }
    Ok(parser.condition(root)?.expr)
}

/// A parsed expression, where in the selector it came from, and the height of its tree.
struct Node {
    expr: Expr,
    span: Span,
    height: usize,
}

struct Parser<'t> {
    text: &'t str,
    /// Always ends with a [`Kind::End`] token, which the parser never moves past.
    tokens: Vec<Token>,
    next: usize,
    /// Parentheses and prefix operators currently open: the parser's recursion depth.
    nesting: usize,
}

impl Parser<'_> {
    fn peek(&self) -> &Token {
        self.ahead(0)
    }

    fn ahead(&self, count: usize) -> &Token {
        &self.tokens[(self.next + count).min(self.tokens.len() - 1)]
    }

    fn at(&self, kind: &Kind) -> bool {
        self.peek().kind == *kind
    }

    fn advance(&mut self) -> Token {
        let token = self.peek().clone();
        self.next = (self.next + 1).min(self.tokens.len() - 1);
        token
    }

    fn refuse(&self, span: Span, expected: &str) -> ParseError {
        ParseError::new(
            self.text,
            span.start,
            &self.text[span.start..span.end],
            expected,
        )
    }

    fn unexpected(&self, expected: &str) -> ParseError {
        self.refuse(self.peek().span, expected)
    }

    fn too_deep(&self, blame: Span) -> ParseError {
        let expected =
            format!("at most {MAX_DEPTH} levels of nested parentheses, operators, NOT and signs");
        self.refuse(blame, &expected)
    }

    /// A node for `expr` one level above its deepest child; refused, blaming the `blame` token,
    /// if that makes the tree deeper than [`MAX_DEPTH`].
    fn node(
        &self,
        expr: Expr,
        span: Span,
        deepest: usize,
        blame: Span,
    ) -> Result<Node, ParseError> {
        if deepest >= MAX_DEPTH {
            return Err(self.too_deep(blame));
        }
        let height = deepest + 1;
        Ok(Node { expr, span, height })
    }

    /// A node for an operator `wrap` applied to `inner` alone.
    fn wrap(
        &self,
        wrap: impl FnOnce(Box<Expr>) -> Expr,
        inner: Node,
        span: Span,
        blame: Span,
    ) -> Result<Node, ParseError> {
        self.node(wrap(Box::new(inner.expr)), span, inner.height, blame)
    }

    /// A node for a binary operator `join` applied to `left` and `right`.
    fn join(
        &self,
        join: impl FnOnce(Box<Expr>, Box<Expr>) -> Expr,
        left: Node,
        right: Node,
        blame: Span,
    ) -> Result<Node, ParseError> {
        let (span, deepest) = (left.span.to(right.span), left.height.max(right.height));
        self.node(
            join(Box::new(left.expr), Box::new(right.expr)),
            span,
            deepest,
            blame,
        )
    }

    /// `inner` under a NOT (for `<>`, `IS NOT NULL`, `NOT LIKE`, `NOT IN`) when `negated`.
    fn negate_if(&self, negated: bool, inner: Node, blame: Span) -> Result<Node, ParseError> {
        if !negated {
            return Ok(inner);
        }
        let span = inner.span;
        self.wrap(Expr::Not, inner, span, blame)
    }

    /// Runs `parse` one level deeper, just after an opening token (a parenthesis or a prefix
    /// operator), refusing to go past [`MAX_DEPTH`] and blaming that token if it would.
    fn nested(
        &mut self,
        opening: Span,
        parse: fn(&mut Self) -> Result<Node, ParseError>,
    ) -> Result<Node, ParseError> {
        if self.nesting >= MAX_DEPTH {
            return Err(self.too_deep(opening));
        }
        self.nesting += 1;
        let node = parse(self);
        self.nesting -= 1;
        node
    }

    /// ActiveMQ's `asBooleanExpression`: conditions pass, a bare property is read as a boolean,
    /// anything else (a number, a string, arithmetic) is refused.
    fn condition(&self, node: Node) -> Result<Node, ParseError> {
        match node.expr {
            Expr::Field(_) => {
                let span = node.span;
                self.wrap(Expr::Truth, node, span, span)
            }
            ref expr if expr.is_condition() => Ok(node),
            _ => Err(self.refuse(node.span, EXPECTED_CONDITION)),
        }
    }

    fn or(&mut self) -> Result<Node, ParseError> {
        let mut left = self.and()?;
        while self.at(&Kind::Keyword(Keyword::Or)) {
            let operator = self.advance().span;
            let right = self.and()?;
            left = self.logic(true, left, right, operator)?;
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Node, ParseError> {
        let mut left = self.equality()?;
        while self.at(&Kind::Keyword(Keyword::And)) {
            let operator = self.advance().span;
            let right = self.equality()?;
            left = self.logic(false, left, right, operator)?;
        }
        Ok(left)
    }

    /// Joins two conditions with OR (`or`) or AND, flattening chains of the same operator into
    /// one node as ActiveMQ's `LogicExpression` does; terms keep their left-to-right order.
    fn logic(&self, or: bool, left: Node, right: Node, operator: Span) -> Result<Node, ParseError> {
        let (left, right) = (self.condition(left)?, self.condition(right)?);
        let span = left.span.to(right.span);
        let mut terms = Vec::new();
        let mut deepest = 0;
        for side in [left, right] {
            match side.expr {
                Expr::Or(inner) if or => {
                    terms.extend(inner);
                    deepest = deepest.max(side.height - 1);
                }
                Expr::And(inner) if !or => {
                    terms.extend(inner);
                    deepest = deepest.max(side.height - 1);
                }
                other => {
                    terms.push(other);
                    deepest = deepest.max(side.height);
                }
            }
        }
        let expr = if or {
            Expr::Or(terms)
        } else {
            Expr::And(terms)
        };
        self.node(expr, span, deepest, operator)
    }

    fn equality(&mut self) -> Result<Node, ParseError> {
        let mut left = self.comparison()?;
        loop {
            left = match self.peek().kind {
                Kind::Symbol(symbol @ (Symbol::Eq | Symbol::Ne)) => {
                    let operator = self.advance().span;
                    let right = self.comparison()?;
                    let equal = self.equals(left, right, operator)?;
                    self.negate_if(symbol == Symbol::Ne, equal, operator)?
                }
                Kind::Keyword(Keyword::Is) => {
                    let operator = self.advance().span;
                    let negated = self.at(&Kind::Keyword(Keyword::Not));
                    if negated {
                        self.advance();
                    }
                    if !self.at(&Kind::Keyword(Keyword::Null)) {
                        return Err(self.unexpected(if negated {
                            "NULL"
                        } else {
                            "NULL or NOT NULL"
                        }));
                    }
                    let span = left.span.to(self.advance().span);
                    let test = self.wrap(Expr::IsNull, left, span, operator)?;
                    self.negate_if(negated, test, operator)?
                }
                _ => return Ok(left),
            };
        }
    }

    /// `left = right`, with ActiveMQ's `checkEqualOperand` and `checkEqualOperandCompatability`.
    fn equals(&self, left: Node, right: Node, operator: Span) -> Result<Node, ParseError> {
        for side in [&left, &right] {
            if side.expr == Expr::Null {
                return Err(self.refuse(
                    side.span,
                    "a value: use IS NULL or IS NOT NULL to test for NULL",
                ));
            }
        }
        if matches!(left.expr, Expr::Bool(_))
            && matches!(right.expr, Expr::Str(_) | Expr::Number(_))
        {
            let expected =
                "TRUE or FALSE: ActiveMQ compares a TRUE or FALSE literal only with another";
            return Err(self.refuse(right.span, expected));
        }
        let op = CompareOp::Eq;
        self.join(
            |left, right| Expr::Compare { op, left, right },
            left,
            right,
            operator,
        )
    }

    /// ActiveMQ's `checkLessThanOperand`: what may stand on either side of `<`, `<=`, `>`, `>=`
    /// and `BETWEEN`. A string, boolean or NULL literal, or any condition, is refused.
    fn check_ordered(&self, node: &Node) -> Result<(), ParseError> {
        if matches!(node.expr, Expr::Str(_)) || node.expr.is_condition() {
            return Err(self.refuse(node.span, EXPECTED_ORDERED));
        }
        Ok(())
    }

    fn comparison(&mut self) -> Result<Node, ParseError> {
        let mut left = self.additive()?;
        loop {
            let negated = self.at(&Kind::Keyword(Keyword::Not))
                && matches!(
                    self.ahead(1).kind,
                    Kind::Keyword(Keyword::Like | Keyword::Between | Keyword::In)
                );
            if negated {
                self.advance();
            }
            let operator = self.peek().span;
            let op = match self.peek().kind {
                Kind::Symbol(Symbol::Lt) => CompareOp::Lt,
                Kind::Symbol(Symbol::Le) => CompareOp::Le,
                Kind::Symbol(Symbol::Gt) => CompareOp::Gt,
                Kind::Symbol(Symbol::Ge) => CompareOp::Ge,
                Kind::Keyword(Keyword::Like) => {
                    self.advance();
                    left = self.like(left, negated, operator)?;
                    continue;
                }
                Kind::Keyword(Keyword::Between) => {
                    self.advance();
                    left = self.between(left, negated, operator)?;
                    continue;
                }
                Kind::Keyword(Keyword::In) => {
                    self.advance();
                    left = self.in_list(left, negated, operator)?;
                    continue;
                }
                _ => return Ok(left),
            };
            self.advance();
            let right = self.additive()?;
            self.check_ordered(&left)?;
            self.check_ordered(&right)?;
            left = self.join(
                |left, right| Expr::Compare { op, left, right },
                left,
                right,
                operator,
            )?;
        }
    }

    /// The value of the string literal at the current token, or an error saying what it was for.
    fn string_literal(&mut self, expected: &str) -> Result<(String, Span), ParseError> {
        match &self.peek().kind {
            Kind::Str(value) => {
                let value = value.clone();
                Ok((value, self.advance().span))
            }
            _ => Err(self.unexpected(expected)),
        }
    }

    fn like(&mut self, value: Node, negated: bool, operator: Span) -> Result<Node, ParseError> {
        let (pattern, mut last) = self.string_literal("a string literal (the LIKE pattern)")?;
        let mut escape = None;
        if self.at(&Kind::Keyword(Keyword::Escape)) {
            self.advance();
            let (text, span) = self.string_literal("a string literal (the escape character)")?;
            // ActiveMQ wants exactly one Java char, so a character beyond U+FFFF is refused too.
            if text.encode_utf16().count() != 1 {
                return Err(self.refuse(span, "a single-character escape string"));
            }
            escape = text.chars().next();
            last = span;
        }
        let pattern = LikePattern::compile(&pattern, escape);
        let span = value.span.to(last);
        let like = self.wrap(|value| Expr::Like { value, pattern }, value, span, operator)?;
        self.negate_if(negated, like, operator)
    }

    /// `value [NOT] BETWEEN low AND high`, checked as ActiveMQ's two comparisons are.
    fn between(&mut self, value: Node, negated: bool, operator: Span) -> Result<Node, ParseError> {
        let low = self.additive()?;
        if !self.at(&Kind::Keyword(Keyword::And)) {
            return Err(self.unexpected("AND (between the bounds of BETWEEN)"));
        }
        self.advance();
        let high = self.additive()?;
        for node in [&value, &low, &high] {
            self.check_ordered(node)?;
        }
        let span = value.span.to(high.span);
        let deepest = value.height.max(low.height).max(high.height);
        let expr = Expr::Between {
            negated,
            value: Box::new(value.expr),
            low: Box::new(low.expr),
            high: Box::new(high.expr),
        };
        self.node(expr, span, deepest, operator)
    }

    /// `field [NOT] IN ('a', ...)`: ActiveMQ accepts string literals only, after a property.
    fn in_list(&mut self, field: Node, negated: bool, operator: Span) -> Result<Node, ParseError> {
        if !self.at(&Kind::Symbol(Symbol::LParen)) {
            return Err(self.unexpected("'(' to open the IN list"));
        }
        self.advance();
        let mut values = Vec::new();
        let close = loop {
            let expected = "a string literal (ActiveMQ's IN lists hold strings only)";
            values.push(self.string_literal(expected)?.0.into_boxed_str());
            match self.peek().kind {
                Kind::Symbol(Symbol::Comma) => self.advance(),
                Kind::Symbol(Symbol::RParen) => break self.advance().span,
                _ => return Err(self.unexpected("',' or ')' in the IN list")),
            };
        };
        let Expr::Field(name) = &field.expr else {
            return Err(self.refuse(field.span, "a property name before IN"));
        };
        values.sort_unstable();
        values.dedup();
        let expr = Expr::In {
            field: name.clone(),
            values: values.into(),
        };
        let membership = self.node(expr, field.span.to(close), field.height, operator)?;
        self.negate_if(negated, membership, operator)
    }

    fn additive(&mut self) -> Result<Node, ParseError> {
        let mut left = self.multiplicative()?;
        loop {
            let op = match self.peek().kind {
                Kind::Symbol(Symbol::Plus) => ArithOp::Add,
                Kind::Symbol(Symbol::Minus) => ArithOp::Subtract,
                _ => return Ok(left),
            };
            let operator = self.advance().span;
            let right = self.multiplicative()?;
            left = self.join(
                |left, right| Expr::Arith { op, left, right },
                left,
                right,
                operator,
            )?;
        }
    }

    fn multiplicative(&mut self) -> Result<Node, ParseError> {
        let mut left = self.prefixed()?;
        loop {
            let op = match self.peek().kind {
                Kind::Symbol(Symbol::Star) => ArithOp::Multiply,
                Kind::Symbol(Symbol::Slash) => ArithOp::Divide,
                Kind::Symbol(Symbol::Percent) => ArithOp::Remainder,
                _ => return Ok(left),
            };
            let operator = self.advance().span;
            let right = self.prefixed()?;
            left = self.join(
                |left, right| Expr::Arith { op, left, right },
                left,
                right,
                operator,
            )?;
        }
    }

    /// Prefix `+`, `-` and `NOT`, or a primary. A `+` changes nothing, not even the operand's
    /// kind: `+a IN ('x')` is accepted, as in ActiveMQ.
    fn prefixed(&mut self) -> Result<Node, ParseError> {
        let operator = self.peek().span;
        match self.peek().kind {
            Kind::Symbol(Symbol::Plus) => {
                self.advance();
                let inner = self.nested(operator, Self::prefixed)?;
                let span = operator.to(inner.span);
                Ok(Node { span, ..inner })
            }
            Kind::Symbol(Symbol::Minus) => {
                self.advance();
                let inner = self.nested(operator, Self::prefixed)?;
                let span = operator.to(inner.span);
                self.wrap(Expr::Negate, inner, span, operator)
            }
            Kind::Keyword(Keyword::Not) => {
                self.advance();
                let inner = self.nested(operator, Self::prefixed)?;
                let inner = self.condition(inner)?;
                let span = operator.to(inner.span);
                self.wrap(Expr::Not, inner, span, operator)
            }
            Kind::Keyword(Keyword::Xpath | Keyword::Xquery) => {
                Err(self.unexpected("a JMS selector: XPATH and XQUERY selectors are not supported"))
            }
            Kind::Ident if self.ahead(1).kind == Kind::Symbol(Symbol::LParen) => {
                Err(self
                    .unexpected("a property name: ActiveMQ's selector functions are not supported"))
            }
            _ => self.primary(),
        }
    }

    fn primary(&mut self) -> Result<Node, ParseError> {
        let token = self.advance();
        let text = &self.text[token.span.start..token.span.end];
        let expr = match token.kind {
            Kind::Str(value) => Expr::Str(value.into()),
            Kind::Number(form) => Expr::Number(
                literal::number(form, text)
                    .map_err(|expected| self.refuse(token.span, expected))?,
            ),
            Kind::Keyword(Keyword::True) => Expr::Bool(true),
            Kind::Keyword(Keyword::False) => Expr::Bool(false),
            Kind::Keyword(Keyword::Null) => Expr::Null,
            Kind::Ident => Expr::Field(text.into()),
            Kind::Symbol(Symbol::LParen) => {
                let inner = self.nested(token.span, Self::or)?;
                if !self.at(&Kind::Symbol(Symbol::RParen)) {
                    return Err(self.unexpected("')' or an operator"));
                }
                let span = token.span.to(self.advance().span);
                return Ok(Node { span, ..inner });
            }
            _ => return Err(self.refuse(token.span, EXPECTED_VALUE)),
        };
        Ok(Node {
            expr,
            span: token.span,
            height: 1,
        })
    }
}
