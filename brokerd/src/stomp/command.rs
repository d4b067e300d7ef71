//! What each STOMP command name means to this broker.
//!
//! Classifying a frame's command in one place keeps the session's dispatch a single `match`, so
//! implementing SEND or SUBSCRIBE later means moving a name from [`Command::Unsupported`] to a
//! variant of its own and handling it, nothing else.

use super::frame::Frame;

/// The client commands of STOMP 1.0-1.2, as the broker currently understands them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command<'a> {
    /// CONNECT or STOMP: opens a session.
    Connect,
    /// DISCONNECT: ends a session, with a RECEIPT when asked for one.
    Disconnect,
    /// A valid STOMP client command the broker does not implement yet.
    Unsupported(&'static str),
    /// Not a STOMP client command at all.
    Unknown(&'a str),
}

/// Client commands that exist in STOMP but are not implemented yet.
const NOT_YET: [&str; 8] = [
    "SEND",
    "SUBSCRIBE",
    "UNSUBSCRIBE",
    "ACK",
    "NACK",
    "BEGIN",
    "COMMIT",
    "ABORT",
];

impl<'a> Command<'a> {
    /// Classifies a received frame by its command name (names are case-sensitive in STOMP).
    pub fn of(frame: &'a Frame) -> Self {
        match frame.command.as_str() {
            "CONNECT" | "STOMP" => Command::Connect,
            "DISCONNECT" => Command::Disconnect,
            other => match NOT_YET.iter().find(|name| **name == other) {
                Some(name) => Command::Unsupported(name),
                None => Command::Unknown(other),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_every_client_command() {
        let check = |name: &str, expected: Command<'_>| {
            assert_eq!(Command::of(&Frame::new(name)), expected, "{name}");
        };
        check("CONNECT", Command::Connect);
        check("STOMP", Command::Connect);
        check("DISCONNECT", Command::Disconnect);
        for name in NOT_YET {
            check(name, Command::Unsupported(name));
        }
        check("send", Command::Unknown("send"));
        check("MESSAGE", Command::Unknown("MESSAGE"));
    }
}
