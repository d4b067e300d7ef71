//! LIKE patterns, compiled once at parse time and matched without allocating.
//!
//! ActiveMQ turns a pattern into a Java regex (`ComparisonExpression.LikeExpression`) in which `%`
//! is any run of characters, `_` exactly one character (line ends included, as with `DOTALL`), and
//! every other character, regex-special or not, stands for itself. The escape character makes the
//! next character literal only when that character is `%`, `_` or the escape character itself;
//! anywhere else it is an ordinary character (so with `ESCAPE '%'`, a final `%` is still a
//! wildcard). Matching is on Unicode scalar values, as Java's regex matches code points.

/// One element of a compiled pattern.
#[derive(Debug, Clone, PartialEq)]
enum Part {
    /// Characters that must appear exactly.
    Text(Box<str>),
    /// `_`: exactly one character.
    One,
    /// `%`: any run of characters, empty included.
    Any,
}

/// A compiled LIKE pattern.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LikePattern {
    parts: Box<[Part]>,
}

impl LikePattern {
    /// Compiles `pattern` with an optional escape character, as ActiveMQ reads it.
    pub(crate) fn compile(pattern: &str, escape: Option<char>) -> LikePattern {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut chars = pattern.chars().peekable();
        while let Some(c) = chars.next() {
            let escaped = Some(c) == escape
                && chars
                    .peek()
                    .is_some_and(|&next| next == '%' || next == '_' || Some(next) == escape);
            let part = match c {
                _ if escaped => {
                    text.extend(chars.next());
                    continue;
                }
                '%' => Part::Any,
                '_' => Part::One,
                c => {
                    text.push(c);
                    continue;
                }
            };
            if !text.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut text).into()));
            }
            if !(part == Part::Any && parts.last() == Some(&Part::Any)) {
                parts.push(part);
            }
        }
        if !text.is_empty() {
            parts.push(Part::Text(text.into()));
        }
        LikePattern {
            parts: parts.into(),
        }
    }

    /// Whether the whole of `text` matches the pattern.
    ///
    /// Greedy matching that, on a mismatch, retries from the last `%` one character further on:
    /// at most pattern length times text length steps, no recursion, no allocation.
    pub(crate) fn matches(&self, text: &str) -> bool {
        let mut part = 0;
        let mut at = 0;
        let mut retry: Option<(usize, usize)> = None;
        loop {
            let advanced = match self.parts.get(part) {
                None if at == text.len() => return true,
                None => None,
                Some(Part::Any) => {
                    retry = Some((part + 1, at));
                    Some(at)
                }
                Some(Part::One) => text[at..].chars().next().map(|c| at + c.len_utf8()),
                Some(Part::Text(literal)) => text[at..]
                    .starts_with(&**literal)
                    .then(|| at + literal.len()),
            };
            match (advanced, retry) {
                (Some(next), _) => {
                    at = next;
                    part += 1;
                }
                (None, Some((after_any, from))) => {
                    let Some(c) = text[from..].chars().next() else {
                        return false;
                    };
                    let from = from + c.len_utf8();
                    retry = Some((after_any, from));
                    part = after_any;
                    at = from;
                }
                (None, None) => return false,
            }
        }
    }
}
