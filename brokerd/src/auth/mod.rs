//! Who may connect and what they may do, in ActiveMQ's model: users with argon2id passwords
//! belong to groups, and authorisation entries grant groups `read` (SUBSCRIBE, browse),
//! `write` (SEND) and `admin` (create a destination that does not exist yet) on destinations
//! by name or wildcard. It all comes from the users file ([`users_file`]), read again on SIGHUP:
//! open connections keep their login and see the new entries from their next frame.

mod acl;
mod password;
pub mod users_file;

use crate::broker::names;
use crate::reload::Current;
use password::Password;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// The groups of a client that connected without a login where `allow_anonymous` is set, as
/// ActiveMQ names them.
const ANONYMOUS_GROUPS: &[&str] = &["anonymous"];

/// Destination headers a session remembers as allowed before it starts over: a client that
/// sends to ever new destinations must not grow its session without bound.
const GUARD_CACHE: usize = 1024;

/// What an authorisation entry grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Subscribe to, or browse, a destination.
    Read,
    /// Send to a destination.
    Write,
    /// Create a destination (a SEND or SUBSCRIBE to one that does not exist yet).
    Admin,
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Operation::Read => "read",
            Operation::Write => "write",
            Operation::Admin => "admin",
        })
    }
}

/// A user of the users file.
#[derive(Debug)]
struct User {
    password: Password,
    groups: Vec<Arc<str>>,
}

/// The users file, checked.
#[derive(Debug)]
pub struct Security {
    users: HashMap<String, User>,
    /// Clients without login and passcode may connect (as groups [`ANONYMOUS_GROUPS`]).
    anonymous: bool,
    /// `None`: the file has no authorisation entries, and every client that connected may do
    /// everything (authentication only, as before entries existed).
    acl: Option<acl::Acl>,
    /// Users whose password is in clear text (allowed by the file; warned about).
    clear_text: Vec<String>,
}

impl Security {
    /// Users whose passwords are in clear text, for the warning at load.
    pub fn clear_text_users(&self) -> &[String] {
        &self.clear_text
    }

    /// The groups of `identity` now; a user removed by a reload has none.
    fn groups(&self, identity: &Identity) -> Vec<Arc<str>> {
        match identity {
            Identity::Anonymous => ANONYMOUS_GROUPS.iter().map(|&g| Arc::from(g)).collect(),
            Identity::User(name) => self
                .users
                .get(&**name)
                .map(|user| user.groups.clone())
                .unwrap_or_default(),
        }
    }

    fn permits(&self, identity: &Identity, op: Operation, canonical: &str) -> bool {
        match &self.acl {
            None => true,
            Some(acl) => acl.permits(&self.groups(identity), op, canonical),
        }
    }
}

/// Who a connection is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    Anonymous,
    User(Arc<str>),
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Identity::Anonymous => f.write_str("anonymous"),
            Identity::User(name) => write!(f, "{name:?}"),
        }
    }
}

/// Why a CONNECT was refused; the client is told no more than that (which login exists is
/// not its business), the log says which.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("no login given and anonymous access is not allowed")]
    NoLogin,
    #[error("unknown login")]
    UnknownUser,
    #[error("wrong passcode")]
    WrongPasscode,
    /// Password checks were busy (a flood of logins) until the CONNECT deadline.
    #[error("no password check free before the CONNECT deadline")]
    TimedOut,
}

/// A connection's identity and the users file as it is now: what the session and the broker
/// core ask before they let the connection use a destination.
#[derive(Debug, Clone)]
pub struct Access {
    identity: Identity,
    security: Current<Security>,
}

impl Access {
    /// Checks a CONNECT's `login` and `passcode`: a known user with the right passcode, or
    /// neither header where anonymous access is allowed.
    pub async fn authenticate(
        security: &Current<Security>,
        login: Option<&str>,
        passcode: Option<&str>,
    ) -> Result<Access, LoginError> {
        let identity = match login {
            None if passcode.is_none() => {
                if !security.borrow().anonymous {
                    return Err(LoginError::NoLogin);
                }
                Identity::Anonymous
            }
            None => return Err(LoginError::NoLogin),
            Some(login) => {
                let known = security
                    .borrow()
                    .users
                    .get(login)
                    .map(|user| user.password.clone());
                // An unknown login costs a check too, so that the time taken does not tell
                // which logins exist.
                let password = known.clone().unwrap_or_else(Password::unknown_user);
                let right = password.verify(passcode.unwrap_or_default()).await;
                match (known, right) {
                    (None, _) => return Err(LoginError::UnknownUser),
                    (Some(_), false) => return Err(LoginError::WrongPasscode),
                    (Some(_), true) => {}
                }
                Identity::User(login.into())
            }
        };
        Ok(Access {
            identity,
            security: security.clone(),
        })
    }

    /// Who the connection is.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Whether this is a user of the users file in `group` now: a reload that removed the user
    /// or took them out of the group answers no from then on. Anonymous access never is.
    pub fn in_group(&self, group: &str) -> bool {
        matches!(self.identity, Identity::User(_))
            && (self.security.borrow().groups(&self.identity))
                .iter()
                .any(|g| &**g == group)
    }

    /// Whether the connection may do `op` on the canonical destination `canonical` now.
    pub fn permits(&self, op: Operation, canonical: &str) -> bool {
        self.security
            .borrow()
            .permits(&self.identity, op, canonical)
    }

    /// The refusal of `op` on `destination`.
    pub fn denied(&self, op: Operation, destination: &str) -> Denied {
        Denied {
            identity: self.identity.clone(),
            op,
            destination: destination.into(),
            groups: self.security.borrow().groups(&self.identity),
        }
    }
}

/// A refused operation: what the client's ERROR frame says.
#[derive(Debug, thiserror::Error)]
#[error("user {identity} is not authorised to {op} {destination}")]
pub struct Denied {
    identity: Identity,
    op: Operation,
    destination: Box<str>,
    groups: Vec<Arc<str>>,
}

impl Denied {
    /// The ERROR frame's body: which entries would have to say what.
    pub fn detail(&self) -> String {
        let groups: Vec<&str> = self.groups.iter().map(|g| &**g).collect();
        format!(
            "No [[authorization]] entry of the users file that covers {} grants {} to a group \
             of this user (groups: {}).",
            self.destination,
            self.op,
            if groups.is_empty() {
                "none".into()
            } else {
                groups.join(", ")
            }
        )
    }
}

/// A session's checks of its SENDs and SUBSCRIBEs. It remembers the destination headers it
/// allowed, so the common SEND (to a destination used before) costs one hash lookup; a reload
/// of the users file forgets them all.
#[derive(Debug)]
pub struct Guard {
    access: Access,
    /// The connection's temporary-destination prefix, to read headers as the core does.
    temporary: Arc<str>,
    readable: HashSet<Box<str>>,
    writable: HashSet<Box<str>>,
}

impl Guard {
    pub fn new(access: Access, temporary: Arc<str>) -> Guard {
        Guard {
            access,
            temporary,
            readable: HashSet::new(),
            writable: HashSet::new(),
        }
    }

    /// The connection's access, for the broker core's checks.
    pub fn access(&self) -> &Access {
        &self.access
    }

    /// Whether the connection may `op` (read or write) every destination `header` names. A
    /// header that names nothing passes: the core refuses it with the reason.
    pub fn check(&mut self, op: Operation, header: &str) -> Result<(), Denied> {
        if self.access.security.has_changed().unwrap_or(false) {
            self.access.security.mark_unchanged();
            self.readable.clear();
            self.writable.clear();
        }
        // Creating (`Admin`) is the core's check, where it knows what exists; a session asks
        // only to read or write, and remembers each apart.
        let allowed = match op {
            Operation::Read => &mut self.readable,
            Operation::Write | Operation::Admin => &mut self.writable,
        };
        if allowed.contains(header) {
            return Ok(());
        }
        let Ok(resolved) = names::resolve(header, &self.temporary) else {
            return Ok(());
        };
        if let Some(refused) = resolved.iter().find(|name| !self.access.permits(op, name)) {
            return Err(self
                .access
                .denied(op, &names::shown(refused, &self.temporary)));
        }
        if allowed.len() == GUARD_CACHE {
            allowed.clear();
        }
        allowed.insert(header.into());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reload;

    const FILE: &str = r#"
allow_anonymous = true
allow_clear_text_passwords = true
[users.alice]
password = "a"
groups = ["apps"]
[users.bob]
password = "b"
groups = ["admins"]
[[authorization]]
destination = "/queue/orders.>"
read = ["apps"]
write = ["apps", "anonymous"]
[[authorization]]
destination = "/temp-queue/>"
read = ["apps"]
write = ["apps"]
admin = ["apps"]
"#;

    async fn guard(login: Option<&str>, passcode: Option<&str>) -> Guard {
        let security = reload::fixed(users_file::parse(FILE).unwrap());
        let access = Access::authenticate(&security, login, passcode)
            .await
            .unwrap();
        Guard::new(access, names::temporary_prefix("n1-1-1"))
    }

    #[tokio::test]
    async fn logins_are_checked() {
        let security = reload::fixed(users_file::parse(FILE).unwrap());
        let login = |l, p| Access::authenticate(&security, l, p);
        assert!(matches!(
            login(Some("alice"), Some("x")).await,
            Err(LoginError::WrongPasscode)
        ));
        assert!(matches!(
            login(Some("carol"), Some("a")).await,
            Err(LoginError::UnknownUser)
        ));
        assert!(matches!(
            login(None, Some("a")).await,
            Err(LoginError::NoLogin)
        ));
        assert_eq!(
            login(None, None).await.unwrap().identity(),
            &Identity::Anonymous
        );
    }

    #[tokio::test]
    async fn a_guard_checks_every_destination_of_a_header() {
        let mut alice = guard(Some("alice"), Some("a")).await;
        assert!(alice.check(Operation::Write, "/queue/orders.eu").is_ok());
        assert!(alice.check(Operation::Write, "/queue/orders.eu").is_ok());
        assert!(alice.check(Operation::Read, "/queue/orders.>").is_ok());
        assert!(alice.check(Operation::Write, "/temp-queue/replies").is_ok());
        let denied = alice
            .check(Operation::Write, "/queue/orders.eu,/queue/payments")
            .unwrap_err();
        assert_eq!(
            denied.to_string(),
            "user \"alice\" is not authorised to write /queue/payments"
        );
        assert!(
            denied.detail().contains("groups: apps"),
            "{}",
            denied.detail()
        );
        assert!(alice.check(Operation::Read, "/queue/>").is_err());
        let mut anonymous = guard(None, None).await;
        assert!(anonymous
            .check(Operation::Write, "/queue/orders.eu")
            .is_ok());
        let denied = anonymous
            .check(Operation::Read, "/queue/orders.eu")
            .unwrap_err();
        assert_eq!(
            denied.to_string(),
            "user anonymous is not authorised to read /queue/orders.eu"
        );
        let bob = guard(Some("bob"), Some("b")).await;
        assert!(!bob.access().permits(Operation::Admin, "/queue/orders.eu"));
    }
}
