//! Splits a selector into tokens exactly as ActiveMQ's JavaCC grammar does
//! (`activemq-client/src/main/grammar/SelectorParser.jj`, section "Tokens").
//!
//! Invariants kept here: the longest match wins, and a keyword beats an identifier of the same
//! length, so `NOT` is a keyword and `NOTE` an identifier; keywords are ASCII case-insensitive and
//! identifiers are ASCII only (`[A-Za-z_$][A-Za-z0-9_$]*`, narrower than JMS's Java identifiers);
//! whitespace is exactly space, tab, CR, LF and form feed. Comments follow the grammar's token
//! definitions to the letter: a `--` comment needs a line end (`a = 1 --x` at the end of the
//! selector is `a = 1 - (-x)`, as in ActiveMQ) and an unclosed `/*` is a `/` then a `*`.
//! Token positions are byte offsets into the selector as given.

use crate::error::ParseError;

/// What the grammar accepts where a token could not even be formed.
const EXPECTED_TOKEN: &str = "a property name, a literal, an operator or a parenthesis";

/// A range of bytes of the selector: where a token or a parsed expression came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    /// The span from the start of `self` to the end of `last`.
    pub(crate) fn to(self, last: Span) -> Span {
        Span {
            start: self.start,
            end: last.end,
        }
    }
}

/// One token and the bytes of the selector it covers.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token {
    pub kind: Kind,
    pub span: Span,
}

/// The kinds of token the grammar knows.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Kind {
    Ident,
    Keyword(Keyword),
    /// A string literal, already decoded (`''` made `'`).
    Str(String),
    /// A numeric literal; the parser reads its value from the token's text.
    Number(NumberForm),
    Symbol(Symbol),
    /// The end of the selector; always the last token.
    End,
}

/// The grammar's reserved words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Keyword {
    Not,
    And,
    Or,
    Between,
    Like,
    Escape,
    In,
    Is,
    True,
    False,
    Null,
    Xpath,
    Xquery,
}

/// Reserved words with their spelling, for the case-insensitive match.
const KEYWORDS: [(&str, Keyword); 13] = [
    ("NOT", Keyword::Not),
    ("AND", Keyword::And),
    ("OR", Keyword::Or),
    ("BETWEEN", Keyword::Between),
    ("LIKE", Keyword::Like),
    ("ESCAPE", Keyword::Escape),
    ("IN", Keyword::In),
    ("IS", Keyword::Is),
    ("TRUE", Keyword::True),
    ("FALSE", Keyword::False),
    ("NULL", Keyword::Null),
    ("XPATH", Keyword::Xpath),
    ("XQUERY", Keyword::Xquery),
];

/// The four numeric literal forms, which ActiveMQ converts differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NumberForm {
    /// `[1-9][0-9]*` with an optional `L`/`l`.
    Decimal,
    /// `0x` followed by hex digits (no `L` suffix).
    Hex,
    /// `0` followed by octal digits, including a lone `0` (no `L` suffix).
    Octal,
    /// Digits with a `.` and/or an exponent (no `F`/`D` suffix).
    Float,
}

/// Operators and punctuation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Symbol {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Plus,
    Minus,
    Star,
    Slash,
    Percent,
    LParen,
    RParen,
    Comma,
}

/// Tokenizes `text` from byte offset `from` (past any prefix) to its end, ending with [`Kind::End`].
pub(crate) fn tokenize(text: &str, from: usize) -> Result<Vec<Token>, ParseError> {
    let mut lexer = Lexer { text, pos: from };
    let mut tokens = Vec::new();
    loop {
        lexer.skip_blanks_and_comments();
        let start = lexer.pos;
        let kind = lexer.token()?;
        tokens.push(Token {
            kind: kind.clone(),
            span: Span {
                start,
                end: lexer.pos,
            },
        });
        if kind == Kind::End {
            return Ok(tokens);
        }
    }
}

/// A cursor over the selector's bytes; the grammar outside string literals is ASCII.
struct Lexer<'t> {
    text: &'t str,
    pos: usize,
}

impl Lexer<'_> {
    fn byte(&self, at: usize) -> u8 {
        self.text.as_bytes().get(at).copied().unwrap_or(0)
    }

    fn digits_from(&self, mut at: usize, radix: u32) -> usize {
        while char::from(self.byte(at)).is_digit(radix) {
            at += 1;
        }
        at
    }

    fn skip_blanks_and_comments(&mut self) {
        loop {
            let rest = &self.text[self.pos..];
            if let Some(b' ' | b'\t' | b'\n' | b'\r' | b'\x0c') = rest.bytes().next() {
                self.pos += 1;
            } else if let Some(end) = rest.strip_prefix("--").and_then(|c| c.find(['\n', '\r'])) {
                self.pos += 2 + end + 1;
            } else if let Some(end) = rest.strip_prefix("/*").and_then(|c| c.find("*/")) {
                self.pos += 2 + end + 2;
            } else {
                return;
            }
        }
    }

    /// Reads the token at `pos` and moves past it.
    fn token(&mut self) -> Result<Kind, ParseError> {
        let start = self.pos;
        match self.byte(start) {
            _ if start == self.text.len() => Ok(Kind::End),
            b'\'' => self.string(),
            b'a'..=b'z' | b'A'..=b'Z' | b'_' | b'$' => Ok(self.word()),
            b'0'..=b'9' => Ok(self.number()),
            b'.' if self.byte(start + 1).is_ascii_digit() => Ok(self.number()),
            _ => self.symbol(),
        }
    }

    fn string(&mut self) -> Result<Kind, ParseError> {
        let start = self.pos;
        let mut value = String::new();
        let mut at = start + 1;
        while let Some(quote) = self.text[at..].find('\'') {
            value.push_str(&self.text[at..at + quote]);
            at += quote + 1;
            if self.byte(at) != b'\'' {
                self.pos = at;
                return Ok(Kind::Str(value));
            }
            value.push('\'');
            at += 1;
        }
        Err(ParseError::new(
            self.text,
            start,
            &self.text[start..],
            "a closing quote (') for this string",
        ))
    }

    fn word(&mut self) -> Kind {
        let start = self.pos;
        let mut end = start;
        while matches!(self.byte(end), b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'$') {
            end += 1;
        }
        self.pos = end;
        let word = &self.text[start..end];
        KEYWORDS
            .iter()
            .find(|(spelling, _)| spelling.eq_ignore_ascii_case(word))
            .map_or(Kind::Ident, |&(_, keyword)| Kind::Keyword(keyword))
    }

    /// The longest numeric literal at `pos`, which starts with a digit or with `.` and a digit.
    fn number(&mut self) -> Kind {
        let start = self.pos;
        let int_end = self.digits_from(start, 10);
        let float_end = if self.byte(int_end) == b'.' {
            let fraction_end = self.digits_from(int_end + 1, 10);
            Some(self.exponent_end(fraction_end).unwrap_or(fraction_end))
        } else {
            self.exponent_end(int_end)
        };
        let (form, int_form_end) = match (self.byte(start), self.byte(start + 1)) {
            (b'0', b'x' | b'X') if self.byte(start + 2).is_ascii_hexdigit() => {
                (NumberForm::Hex, self.digits_from(start + 2, 16))
            }
            (b'0', _) => (NumberForm::Octal, self.digits_from(start + 1, 8)),
            _ if matches!(self.byte(int_end), b'l' | b'L') => (NumberForm::Decimal, int_end + 1),
            _ => (NumberForm::Decimal, int_end),
        };
        match float_end {
            Some(end) if end >= int_form_end => {
                self.pos = end;
                Kind::Number(NumberForm::Float)
            }
            _ => {
                self.pos = int_form_end;
                Kind::Number(form)
            }
        }
    }

    /// Where an exponent (`E`, optional sign, digits) starting at `at` ends, if there is one.
    fn exponent_end(&self, at: usize) -> Option<usize> {
        if !matches!(self.byte(at), b'e' | b'E') {
            return None;
        }
        let digits = at + 1 + usize::from(matches!(self.byte(at + 1), b'+' | b'-'));
        let end = self.digits_from(digits, 10);
        (end > digits).then_some(end)
    }

    fn symbol(&mut self) -> Result<Kind, ParseError> {
        let start = self.pos;
        let (symbol, len) = match (self.byte(start), self.byte(start + 1)) {
            (b'<', b'>') => (Symbol::Ne, 2),
            (b'<', b'=') => (Symbol::Le, 2),
            (b'>', b'=') => (Symbol::Ge, 2),
            (b'<', _) => (Symbol::Lt, 1),
            (b'>', _) => (Symbol::Gt, 1),
            (b'=', _) => (Symbol::Eq, 1),
            (b'+', _) => (Symbol::Plus, 1),
            (b'-', _) => (Symbol::Minus, 1),
            (b'*', _) => (Symbol::Star, 1),
            (b'/', _) => (Symbol::Slash, 1),
            (b'%', _) => (Symbol::Percent, 1),
            (b'(', _) => (Symbol::LParen, 1),
            (b')', _) => (Symbol::RParen, 1),
            (b',', _) => (Symbol::Comma, 1),
            _ => {
                let unexpected = self.text[start..].chars().next().map_or(0, char::len_utf8);
                let token = &self.text[start..start + unexpected];
                return Err(ParseError::new(self.text, start, token, EXPECTED_TOKEN));
            }
        };
        self.pos = start + len;
        Ok(Kind::Symbol(symbol))
    }
}
