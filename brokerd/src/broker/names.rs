//! Destination names as ActiveMQ's STOMP reads them (its `LegacyFrameTranslator`): the
//! prefixes, a comma-separated list as a composite destination, temporary destinations, a name
//! without a known prefix as a queue of that literal name, and wildcard patterns.
//!
//! Inside the broker every destination has one canonical name: `/queue/NAME`, `/topic/NAME`,
//! or, for a temporary one, `/remote-temp-queue/ID` or `/remote-temp-topic/ID`, which is also
//! how any connection but its creator names it (as ActiveMQ does). A connection creates one by
//! naming `/temp-queue/NAME` (or `/temp-topic/NAME`); its ID is the connection's temporary
//! prefix followed by NAME, so the creator sees its own name back.

use std::borrow::Cow;
use std::sync::Arc;

const QUEUE: &str = "/queue/";
const TOPIC: &str = "/topic/";
const TEMP_QUEUE: &str = "/temp-queue/";
const TEMP_TOPIC: &str = "/temp-topic/";
const REMOTE_TEMP_QUEUE: &str = "/remote-temp-queue/";
const REMOTE_TEMP_TOPIC: &str = "/remote-temp-topic/";

/// Destinations one header may name at most (a composite list).
pub const MAX_COMPOSITE: usize = 64;

/// What a destination is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Queue,
    Topic,
}

/// Why a destination header names nothing usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("destination {0:?} names no destination (an empty name)")]
    Empty(String),
    #[error("destination {0:?} contains a NUL character")]
    Nul(String),
    #[error("destination {0:?} lists more than {MAX_COMPOSITE} destinations")]
    TooMany(String),
}

/// The kind of a canonical name.
pub fn kind(canonical: &str) -> Kind {
    if canonical.starts_with(TOPIC) || canonical.starts_with(REMOTE_TEMP_TOPIC) {
        Kind::Topic
    } else {
        Kind::Queue
    }
}

/// The kind prefix of a canonical name and the rest of it: what authorisation entries match.
pub fn split_kind(canonical: &str) -> Option<(&'static str, &str)> {
    [QUEUE, TOPIC, REMOTE_TEMP_QUEUE, REMOTE_TEMP_TOPIC]
        .into_iter()
        .find_map(|kind| canonical.strip_prefix(kind).map(|rest| (kind, rest)))
}

/// Whether a name starts with one of the prefixes, instead of naming a queue by ActiveMQ's
/// fallback: configuration (authorisation entries) must say what it means.
pub fn has_known_prefix(name: &str) -> bool {
    let name = name.trim();
    [
        QUEUE,
        TOPIC,
        TEMP_QUEUE,
        TEMP_TOPIC,
        REMOTE_TEMP_QUEUE,
        REMOTE_TEMP_TOPIC,
    ]
    .iter()
    .any(|prefix| name.starts_with(prefix))
}

/// Whether a canonical name is a temporary destination: never stored, gone with its creator.
pub fn is_temporary(canonical: &str) -> bool {
    canonical.starts_with(REMOTE_TEMP_QUEUE) || canonical.starts_with(REMOTE_TEMP_TOPIC)
}

/// The prefix of the IDs of the temporary destinations a connection creates, from its session
/// id (unique across failovers: it names node and epoch).
pub fn temporary_prefix(session: &str) -> Arc<str> {
    format!("ID:{session}:").into()
}

/// Whether `canonical` is a temporary destination created by the connection with `prefix`.
pub fn created_by(canonical: &str, prefix: &str) -> bool {
    [REMOTE_TEMP_QUEUE, REMOTE_TEMP_TOPIC].iter().any(|kind| {
        canonical
            .strip_prefix(kind)
            .is_some_and(|id| id.starts_with(prefix))
    })
}

/// Resolves a destination header for the connection whose temporary destinations have
/// `prefix`: one canonical name per destination it lists, in order, without repeats.
pub fn resolve(header: &str, prefix: &str) -> Result<Vec<Arc<str>>, NameError> {
    let trimmed = header.trim();
    if header.contains('\0') {
        return Err(NameError::Nul(header.into()));
    }
    let mut names: Vec<Arc<str>> = Vec::new();
    for part in trimmed.split(',') {
        let name = canonical(part.trim(), prefix).ok_or_else(|| NameError::Empty(header.into()))?;
        if !names.contains(&name) {
            if names.len() == MAX_COMPOSITE {
                return Err(NameError::TooMany(header.into()));
            }
            names.push(name);
        }
    }
    Ok(names)
}

/// One name in canonical form; `None` when it names nothing.
fn canonical(name: &str, prefix: &str) -> Option<Arc<str>> {
    let known = [
        (QUEUE, QUEUE, ""),
        (TOPIC, TOPIC, ""),
        (REMOTE_TEMP_QUEUE, REMOTE_TEMP_QUEUE, ""),
        (REMOTE_TEMP_TOPIC, REMOTE_TEMP_TOPIC, ""),
        (TEMP_QUEUE, REMOTE_TEMP_QUEUE, prefix),
        (TEMP_TOPIC, REMOTE_TEMP_TOPIC, prefix),
    ];
    for (given, kind, id) in known {
        if let Some(rest) = name.strip_prefix(given) {
            if rest.is_empty() {
                return None;
            }
            // The common case, a name already canonical: one allocation, as every SEND has one.
            if given == kind {
                return Some(name.into());
            }
            return Some(format!("{kind}{id}{rest}").into());
        }
    }
    // ActiveMQ's fallback: any other name is a queue of that literal name.
    (!name.is_empty()).then(|| format!("{QUEUE}{name}").into())
}

/// How the connection with `prefix` sees a canonical name: its own temporary destinations as
/// it named them, everything else as is.
pub fn shown<'a>(canonical: &'a str, prefix: &str) -> Cow<'a, str> {
    for (remote, local) in [
        (REMOTE_TEMP_QUEUE, TEMP_QUEUE),
        (REMOTE_TEMP_TOPIC, TEMP_TOPIC),
    ] {
        if let Some(name) = canonical
            .strip_prefix(remote)
            .and_then(|id| id.strip_prefix(prefix))
        {
            return Cow::Owned(format!("{local}{name}"));
        }
    }
    Cow::Borrowed(canonical)
}

/// A canonical name that may hold wildcards, as ActiveMQ's destination filters read them:
/// segments are separated by `.`, `*` matches one segment, and `>` as the last segment
/// matches the rest (none or more: `A.>` matches `A`, `A.B` and `A.B.C`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: Arc<str>,
    /// Where the segments start: after the kind's prefix.
    start: usize,
    /// Matches any name this many segments long or longer (`>`), or exactly this long.
    open: bool,
}

impl Pattern {
    /// A pattern for `canonical`; `None` when it has no wildcard (it names one destination).
    pub fn new(canonical: &Arc<str>) -> Option<Pattern> {
        let start = [QUEUE, TOPIC]
            .iter()
            .find(|p| canonical.starts_with(**p))?
            .len();
        let segments = || canonical[start..].split('.');
        let open = segments().next_back() == Some(">");
        if !open && !segments().any(|s| s == "*") {
            return None;
        }
        Some(Pattern {
            text: Arc::clone(canonical),
            start,
            open,
        })
    }

    /// The pattern as the client wrote it (canonical).
    pub fn text(&self) -> &Arc<str> {
        &self.text
    }

    /// Whether the concrete canonical name matches.
    pub fn matches(&self, canonical: &str) -> bool {
        let Some(name) = canonical.strip_prefix(&self.text[..self.start]) else {
            return false;
        };
        let mut wanted = self.text[self.start..].split('.');
        if self.open {
            wanted.next_back();
        }
        let mut given = name.split('.');
        for want in wanted {
            match given.next() {
                // ActiveMQ: a `*` on either side matches one segment.
                Some(seg) if want == "*" || seg == "*" || want == seg => {}
                _ => return false,
            }
        }
        self.open || given.next().is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(header: &str) -> Vec<String> {
        resolve(header, "ID:n1-3-7:")
            .unwrap()
            .iter()
            .map(|n| n.to_string())
            .collect()
    }

    #[test]
    fn names_resolve_as_activemq_reads_them() {
        for (header, expected) in [
            ("/queue/a", vec!["/queue/a"]),
            ("/topic/a.b", vec!["/topic/a.b"]),
            // No known prefix: a queue of the literal name.
            ("orders", vec!["/queue/orders"]),
            (
                "/exchange/amq.topic/x",
                vec!["/queue//exchange/amq.topic/x"],
            ),
            ("  /queue/padded  ", vec!["/queue/padded"]),
            // Composite, in order, repeats once.
            (
                "/queue/a,/topic/b, /queue/c,/queue/a",
                vec!["/queue/a", "/topic/b", "/queue/c"],
            ),
            (
                "/temp-queue/replies",
                vec!["/remote-temp-queue/ID:n1-3-7:replies"],
            ),
            ("/temp-topic/t", vec!["/remote-temp-topic/ID:n1-3-7:t"]),
            (
                "/remote-temp-queue/ID:n2-1-1:r",
                vec!["/remote-temp-queue/ID:n2-1-1:r"],
            ),
        ] {
            assert_eq!(names(header), expected, "{header}");
        }
        for bad in [
            "",
            "  ",
            "/queue/",
            "/topic/",
            "/queue/a,",
            ",/queue/a",
            "/temp-queue/",
        ] {
            assert!(
                matches!(resolve(bad, "ID:x:"), Err(NameError::Empty(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(resolve("/queue/a\0", "p"), Err(NameError::Nul(_))));
        let many = vec!["/queue/x"; 1]
            .into_iter()
            .chain((0..MAX_COMPOSITE).map(|_| "/queue/y"))
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(resolve(&many, "p").unwrap().len(), 2);
        let too_many = (0..=MAX_COMPOSITE)
            .map(|i| format!("/queue/q{i}"))
            .collect::<Vec<_>>()
            .join(",");
        assert!(matches!(
            resolve(&too_many, "p"),
            Err(NameError::TooMany(_))
        ));
    }

    #[test]
    fn temporary_destinations_show_as_their_creator_named_them() {
        let mine = temporary_prefix("n1-3-7");
        let theirs = temporary_prefix("n1-3-77");
        let name = &names("/temp-queue/replies")[0];
        assert!(is_temporary(name));
        assert_eq!(kind(name), Kind::Queue);
        assert!(created_by(name, &mine));
        assert!(!created_by(name, &theirs), "a prefix of another's id");
        assert_eq!(shown(name, &mine), "/temp-queue/replies");
        assert_eq!(shown(name, &theirs), name.as_str());
        assert_eq!(shown("/queue/a", &mine), "/queue/a");
        let topic = &names("/temp-topic/events")[0];
        assert_eq!(kind(topic), Kind::Topic);
        assert_eq!(shown(topic, &mine), "/temp-topic/events");
        assert!(!is_temporary("/queue/a") && !created_by("/queue/a", &mine));
    }

    #[test]
    fn wildcards_match_as_activemq_filters_do() {
        let pattern = |p: &str| Pattern::new(&Arc::from(p));
        assert_eq!(pattern("/queue/a.b"), None, "no wildcard");
        assert_eq!(pattern("/queue/a.>.b"), None, "> only counts last");
        assert_eq!(pattern("/remote-temp-queue/ID:x:*"), None);
        for (p, name, expected) in [
            ("/topic/a.*", "/topic/a.b", true),
            ("/topic/a.*", "/topic/a", false),
            ("/topic/a.*", "/topic/a.b.c", false),
            ("/topic/a.*.c", "/topic/a.b.c", true),
            ("/topic/a.*.c", "/topic/a.b.d", false),
            ("/topic/*", "/topic/x", true),
            ("/topic/a.>", "/topic/a", true),
            ("/topic/a.>", "/topic/a.b", true),
            ("/topic/a.>", "/topic/a.b.c", true),
            ("/topic/a.>", "/topic/ab", false),
            ("/topic/a.>", "/topic/b.a", false),
            ("/topic/>", "/topic/anything.at.all", true),
            ("/topic/a.*.>", "/topic/a", false),
            ("/topic/a.*.>", "/topic/a.b", true),
            ("/topic/a.*.>", "/topic/a.b.c.d", true),
            // Kinds never mix.
            ("/topic/a.>", "/queue/a.b", false),
            ("/queue/orders.>", "/queue/orders.eu.1", true),
            ("/queue/orders.>", "/topic/orders.eu", false),
            // ActiveMQ: a `*` in the concrete name matches too.
            ("/queue/a.*.c", "/queue/a.*.c", true),
        ] {
            let Some(pat) = pattern(p) else {
                panic!("{p} is a pattern")
            };
            assert_eq!(pat.matches(name), expected, "{p} vs {name}");
        }
    }
}
