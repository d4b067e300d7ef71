//! What each STOMP command name means to this broker.
//!
//! Classifying a frame's command in one place keeps the session's dispatch a single `match`.

use super::frame::Frame;

/// The client commands of STOMP 1.0-1.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command<'a> {
    /// CONNECT or STOMP: opens a session.
    Connect,
    Send,
    Subscribe,
    Unsubscribe,
    Ack,
    Nack,
    Begin,
    Commit,
    Abort,
    /// DISCONNECT: ends a session, with a RECEIPT when asked for one.
    Disconnect,
    /// Not a STOMP client command at all.
    Unknown(&'a str),
}

impl<'a> Command<'a> {
    /// Classifies a received frame by its command name (names are case-sensitive in STOMP).
    pub fn of(frame: &'a Frame) -> Self {
        match frame.command.as_str() {
            "CONNECT" | "STOMP" => Command::Connect,
            "SEND" => Command::Send,
            "SUBSCRIBE" => Command::Subscribe,
            "UNSUBSCRIBE" => Command::Unsubscribe,
            "ACK" => Command::Ack,
            "NACK" => Command::Nack,
            "BEGIN" => Command::Begin,
            "COMMIT" => Command::Commit,
            "ABORT" => Command::Abort,
            "DISCONNECT" => Command::Disconnect,
            other => Command::Unknown(other),
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
        check("SEND", Command::Send);
        check("SUBSCRIBE", Command::Subscribe);
        check("UNSUBSCRIBE", Command::Unsubscribe);
        check("ACK", Command::Ack);
        check("NACK", Command::Nack);
        check("BEGIN", Command::Begin);
        check("COMMIT", Command::Commit);
        check("ABORT", Command::Abort);
        check("DISCONNECT", Command::Disconnect);
        check("send", Command::Unknown("send"));
        check("MESSAGE", Command::Unknown("MESSAGE"));
    }
}
