//! Authorisation entries, as ActiveMQ's authorization map reads them: each names destinations
//! by canonical name or wildcard and grants groups `read`, `write` and `admin` on them. A
//! destination may be used by a group when any entry covering it grants that group the
//! operation (ActiveMQ takes the union of every matching entry); nothing else is allowed.

use super::Operation;
use crate::broker::names;
use std::sync::Arc;

/// One `[[authorization]]` entry.
#[derive(Debug)]
pub struct Entry {
    pattern: EntryPattern,
    read: Vec<Arc<str>>,
    write: Vec<Arc<str>>,
    admin: Vec<Arc<str>>,
}

impl Entry {
    /// An entry for `destination` (a canonical name whose last segment may be `>` and whose
    /// segments may be `*`), granting each operation to the groups listed.
    pub fn new(
        destination: &str,
        read: Vec<Arc<str>>,
        write: Vec<Arc<str>>,
        admin: Vec<Arc<str>>,
    ) -> Result<Entry, String> {
        Ok(Entry {
            pattern: EntryPattern::new(destination)?,
            read,
            write,
            admin,
        })
    }

    fn groups(&self, op: Operation) -> &[Arc<str>] {
        match op {
            Operation::Read => &self.read,
            Operation::Write => &self.write,
            Operation::Admin => &self.admin,
        }
    }
}

/// Every entry of the users file.
#[derive(Debug, Default)]
pub struct Acl {
    entries: Vec<Entry>,
}

impl Acl {
    pub fn new(entries: Vec<Entry>) -> Acl {
        Acl { entries }
    }

    /// Whether a member of `groups` may do `op` on every destination `canonical` names (it may
    /// hold wildcards: a wildcard subscription reads only what entries cover as a whole).
    pub fn permits(&self, groups: &[Arc<str>], op: Operation, canonical: &str) -> bool {
        self.entries.iter().any(|entry| {
            entry.pattern.covers(canonical)
                && entry
                    .groups(op)
                    .iter()
                    .any(|granted| groups.contains(granted))
        })
    }
}

/// An entry's destinations: a kind prefix (`/queue/`, `/topic/`, and the temporary kinds) and
/// `.`-separated segments, where `*` stands for one segment and a last `>` for any number,
/// none included (`orders.>` covers `orders`, as ActiveMQ's filters do).
#[derive(Debug)]
struct EntryPattern {
    kind: &'static str,
    segments: Vec<Box<str>>,
}

impl EntryPattern {
    fn new(destination: &str) -> Result<EntryPattern, String> {
        let unknown = || {
            format!(
                "destination {destination:?} must start with /queue/, /topic/, /temp-queue/ or /temp-topic/"
            )
        };
        if !names::has_known_prefix(destination) {
            return Err(unknown());
        }
        let canonical = match names::resolve(destination, "") {
            Ok(resolved) if resolved.len() == 1 => resolved[0].clone(),
            Ok(_) => {
                return Err(format!(
                "destination {destination:?} lists several destinations; give each its own entry"
            ))
            }
            Err(err) => return Err(err.to_string()),
        };
        let (kind, rest) = names::split_kind(&canonical).ok_or_else(unknown)?;
        let segments: Vec<Box<str>> = rest.split('.').map(Box::from).collect();
        if segments[..segments.len() - 1].iter().any(|s| &**s == ">") {
            return Err(format!(
                "destination {destination:?} has `>` before its last segment; `>` stands for the rest of a name"
            ));
        }
        Ok(EntryPattern { kind, segments })
    }

    /// Whether every name `canonical` stands for is one of this pattern's: for a concrete name,
    /// whether it matches; for a wildcard, whether it is as narrow as this pattern or narrower.
    fn covers(&self, canonical: &str) -> bool {
        let Some(name) = canonical.strip_prefix(self.kind) else {
            return false;
        };
        let mut given = name.split('.');
        let last = self.segments.len() - 1;
        for (i, want) in self.segments.iter().enumerate() {
            if i == last && &**want == ">" {
                return true;
            }
            match given.next() {
                // Only a `>` of the entry covers a `>` of the name: it stands for any number
                // of segments.
                Some(">") | None => return false,
                Some(_) if &**want == "*" => {}
                Some(seg) if seg == &**want && seg != "*" => {}
                Some(_) => return false,
            }
        }
        given.next().is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn covers(pattern: &str, name: &str) -> bool {
        EntryPattern::new(pattern).unwrap().covers(name)
    }

    #[test]
    fn a_pattern_covers_names_and_narrower_wildcards() {
        assert!(covers("/queue/orders", "/queue/orders"));
        assert!(!covers("/queue/orders", "/topic/orders"));
        assert!(!covers("/queue/orders", "/queue/orders.eu"));
        assert!(covers("/queue/orders.>", "/queue/orders"));
        assert!(covers("/queue/orders.>", "/queue/orders.eu.paris"));
        assert!(covers("/queue/orders.>", "/queue/orders.*"));
        assert!(covers("/queue/orders.>", "/queue/orders.>"));
        assert!(!covers("/queue/orders.>", "/queue/>"));
        assert!(!covers("/queue/orders.>", "/queue/ordersx"));
        assert!(covers("/queue/orders.*", "/queue/orders.eu"));
        assert!(covers("/queue/orders.*", "/queue/orders.*"));
        assert!(!covers("/queue/orders.*", "/queue/orders.>"));
        assert!(!covers("/queue/orders.*", "/queue/orders.eu.paris"));
        assert!(!covers("/queue/orders.*", "/queue/orders"));
        assert!(!covers("/queue/orders.eu", "/queue/orders.*"));
        assert!(covers("/queue/>", "/queue/anything.at.all"));
        assert!(covers("/topic/*.prices", "/topic/eu.prices"));
    }

    #[test]
    fn temporary_destinations_are_named_by_their_kind() {
        let id = "/remote-temp-queue/ID:n1-3-7:replies";
        assert!(covers("/temp-queue/>", id));
        assert!(!covers("/temp-topic/>", id));
        assert!(!covers("/queue/>", id));
    }

    #[test]
    fn an_entry_names_one_destination_with_a_known_prefix() {
        for bad in ["orders", "/queue/a,/queue/b", "/queue/a.>.b", "", "/queue/"] {
            assert!(EntryPattern::new(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn entries_grant_the_union_of_what_they_say() {
        let groups = |names: &[&str]| names.iter().map(|&n| Arc::from(n)).collect::<Vec<_>>();
        let acl = Acl::new(vec![
            Entry::new("/queue/>", vec![], vec![], groups(&["admins"])).unwrap(),
            Entry::new(
                "/queue/orders.>",
                groups(&["apps"]),
                groups(&["apps"]),
                vec![],
            )
            .unwrap(),
        ]);
        let apps = groups(&["apps"]);
        assert!(acl.permits(&apps, Operation::Write, "/queue/orders.eu"));
        assert!(acl.permits(&apps, Operation::Read, "/queue/orders.>"));
        assert!(!acl.permits(&apps, Operation::Admin, "/queue/orders.eu"));
        assert!(!acl.permits(&apps, Operation::Read, "/queue/payments"));
        assert!(acl.permits(
            &groups(&["x", "admins"]),
            Operation::Admin,
            "/queue/payments"
        ));
        assert!(!acl.permits(&[], Operation::Read, "/queue/orders"));
    }
}
