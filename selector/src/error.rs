//! The one error a selector can fail with: where it went wrong, on what, and what would have fit.
//!
//! Every refusal (lexical, grammatical, a type rule ActiveMQ enforces at parse time, a limit) is a
//! [`ParseError`], so a broker can hand a STOMP client one readable line whatever the cause.

use std::fmt;

/// At most this many characters of the offending text are kept, so the message stays one short line.
const TOKEN_EXCERPT_CHARS: usize = 40;

/// Why a selector was refused: where, the offending token, what was expected.
///
/// Its `Display` is one line meant for the STOMP client's user, e.g.
/// `unexpected "AND" at column 12 of the selector (expected a value)`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("unexpected {} (expected {expected})", Place(.token, .column))]
pub struct ParseError {
    /// 1-based position of the offending token, counted in characters of the selector as given.
    pub column: usize,
    /// The offending text (at most 40 characters of it); empty at the end of the selector.
    pub token: String,
    /// What the parser would have accepted there, or the rule the token broke.
    pub expected: String,
}

impl ParseError {
    /// A refusal of the text starting at byte offset `at` of `source`; `token` is cut to an excerpt.
    pub(crate) fn new(source: &str, at: usize, token: &str, expected: impl Into<String>) -> Self {
        let column = source.get(..at).map_or(at, |before| before.chars().count()) + 1;
        let token = match token.char_indices().nth(TOKEN_EXCERPT_CHARS) {
            Some((cut, _)) => format!("{}…", &token[..cut]),
            None => token.to_owned(),
        };
        ParseError {
            column,
            token,
            expected: expected.into(),
        }
    }
}

/// Where the error is, as the message says it: the token quoted and escaped (so the message stays
/// on one line) or the end of the selector, then the column.
struct Place<'a>(&'a str, &'a usize);

impl fmt::Display for Place<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Place(token, column) = self;
        if token.is_empty() {
            write!(f, "end of selector at column {column}")
        } else {
            f.write_str("\"")?;
            for c in token.chars() {
                match c {
                    '"' | '\\' => write!(f, "\\{c}")?,
                    c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') => {
                        write!(f, "{}", c.escape_default())?
                    }
                    c => write!(f, "{c}")?,
                }
            }
            write!(f, "\" at column {column} of the selector")
        }
    }
}
