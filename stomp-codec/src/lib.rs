//! The STOMP codec, one for the broker and its client: frames between bytes and [`frame::Frame`]s
//! ([`frame`]: incremental, bounded, no I/O), the protocol versions and how each escapes
//! header text ([`Version`], [`Escaping`]).

pub mod frame;

use std::fmt;

/// A STOMP protocol version; it decides how header values are escaped on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    V1_0,
    V1_1,
    V1_2,
}

impl Version {
    /// Every version spoken here, oldest first.
    pub const SUPPORTED: [Version; 3] = [Version::V1_0, Version::V1_1, Version::V1_2];

    /// The version as STOMP headers spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V1_0 => "1.0",
            Version::V1_1 => "1.1",
            Version::V1_2 => "1.2",
        }
    }

    /// Picks the highest version both sides speak from a CONNECT frame's `accept-version`
    /// header. A client that sends no such header speaks 1.0, as the 1.1 specification says;
    /// versions we do not know are ignored. `None` means nothing in common.
    pub fn negotiate(accept_version: Option<&str>) -> Option<Version> {
        let Some(offered) = accept_version else {
            return Some(Version::V1_0);
        };
        offered
            .split(',')
            .filter_map(|v| {
                Version::SUPPORTED
                    .into_iter()
                    .find(|s| s.as_str() == v.trim())
            })
            .max()
    }

    /// The `version` header value listing every supported version, for a refused CONNECT.
    pub fn supported_list() -> String {
        Version::SUPPORTED
            .iter()
            .map(|v| v.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// How header names and values are escaped in frames with this command. Version 1.0 has
    /// no escaping, and CONNECT/CONNECTED never escape so that a client can connect before it
    /// knows the version (STOMP is CONNECT's other name and is treated the same).
    pub fn escaping(self, command: &str) -> Escaping {
        match self {
            _ if matches!(command, "CONNECT" | "CONNECTED" | "STOMP") => Escaping::None,
            Version::V1_0 => Escaping::None,
            Version::V1_1 => Escaping::V1_1,
            Version::V1_2 => Escaping::V1_2,
        }
    }
}

/// The header escapes of one frame, as its version and command decide.
///
/// STOMP 1.1 defines `\n`, `\c` and `\\` only: its lines end with LF alone, so a CR is
/// ordinary header text, sent and received as it is, and `\r` is an undefined escape (a fatal
/// protocol error, as for any other). STOMP 1.2 lets lines end with CRLF and adds `\r`.
/// The broker reads CRLF line ends from clients of every version, as many 1.0 and 1.1 clients
/// send them, so a CR that ends a 1.1 header line is taken as part of the line end; for the
/// same reason one that ends a header's text is sent to a 1.1 peer as a space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escaping {
    /// STOMP 1.0, CONNECT and CONNECTED: nothing is escaped.
    None,
    /// `\n`, `\c`, `\\`.
    V1_1,
    /// `\r`, `\n`, `\c`, `\\`.
    V1_2,
}

impl Escaping {
    /// The escape sequences defined, for error messages.
    pub fn defined(self) -> &'static str {
        match self {
            Escaping::None => "none",
            Escaping::V1_1 => r"\n, \c and \\ (STOMP 1.1)",
            Escaping::V1_2 => r"\r, \n, \c and \\ (STOMP 1.2)",
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The start of a bad line, printable, for error messages about input we refuse.
pub fn excerpt(line: &[u8]) -> String {
    let end = line.len().min(80);
    let mut text = String::from_utf8_lossy(&line[..end]).into_owned();
    if line.len() > end {
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_picks_the_highest_common_version() {
        assert_eq!(Version::negotiate(None), Some(Version::V1_0));
        assert_eq!(Version::negotiate(Some("1.0,1.1")), Some(Version::V1_1));
        assert_eq!(Version::negotiate(Some("1.2, 1.0")), Some(Version::V1_2));
        assert_eq!(Version::negotiate(Some("1.3,1.1")), Some(Version::V1_1));
        assert_eq!(Version::negotiate(Some("2.0")), None);
        assert_eq!(Version::negotiate(Some("")), None);
    }

    #[test]
    fn escaping_depends_on_version_and_command() {
        assert_eq!(Version::V1_0.escaping("SEND"), Escaping::None);
        assert_eq!(Version::V1_1.escaping("SEND"), Escaping::V1_1);
        assert_eq!(Version::V1_2.escaping("ERROR"), Escaping::V1_2);
        assert_eq!(Version::V1_2.escaping("CONNECT"), Escaping::None);
        assert_eq!(Version::V1_1.escaping("CONNECTED"), Escaping::None);
        assert_eq!(Version::V1_2.escaping("STOMP"), Escaping::None);
    }

    #[test]
    fn supported_list_names_every_version() {
        assert_eq!(Version::supported_list(), "1.0,1.1,1.2");
    }
}
