//! The users file (`--users-file`): users with passwords and groups, whether anonymous clients
//! may connect, and the authorisation entries, checked whole before anything uses it.
//!
//! ```toml
//! allow_anonymous = false            # clients without login connect as group "anonymous"
//! allow_clear_text_passwords = false # refuse `password = "plain"` unless true
//! [users.alice]
//! password = "$argon2id$v=19$..."    # from `ctl passwd`
//! groups = ["apps"]
//! [[authorization]]
//! destination = "/queue/orders.>"
//! read = ["apps"]
//! write = ["apps"]
//! admin = ["admins"]
//! ```
//!
//! The first form of the file, `[users]` with `login = "passcode"` lines, still reads: users
//! without groups, with clear-text passwords (so it needs `allow_clear_text_passwords`).

use super::acl::{Acl, Entry};
use super::password::Password;
use super::{Security, User};
use anyhow::{anyhow, bail, Result};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// Largest users file read; anything larger is a mistake (a wrong path).
const MAX_BYTES: u64 = 4 << 20;

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    allow_anonymous: bool,
    #[serde(default)]
    allow_clear_text_passwords: bool,
    #[serde(default)]
    users: HashMap<String, UserEntry>,
    /// `None` when the file has no `[[authorization]]`: every user may do everything.
    authorization: Option<Vec<AuthorizationEntry>>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
enum UserEntry {
    /// The first form: `alice = "passcode"`.
    Password(String),
    Table(UserTable),
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct UserTable {
    password: String,
    #[serde(default)]
    groups: Vec<String>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthorizationEntry {
    destination: String,
    #[serde(default)]
    read: Vec<String>,
    #[serde(default)]
    write: Vec<String>,
    #[serde(default)]
    admin: Vec<String>,
}

/// Reads and checks the users file; every error names the file and what to change.
pub fn load(path: &Path) -> Result<Security> {
    let metadata = std::fs::metadata(path)
        .map_err(|e| anyhow!("cannot read users file {}: {e}", path.display()))?;
    if !metadata.is_file() || metadata.len() > MAX_BYTES {
        bail!(
            "users file {} is not a regular file of at most {MAX_BYTES} bytes",
            path.display()
        );
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow!("cannot read users file {}: {e}", path.display()))?;
    parse(&text).map_err(|e| anyhow!("users file {}: {e}", path.display()))
}

/// The file's text as [`Security`].
pub fn parse(text: &str) -> Result<Security> {
    let file: File = toml::from_str(text)?;
    if file.users.is_empty() && !file.allow_anonymous {
        bail!(
            "no users: add a [users.NAME] table with a password (from `ctl passwd`), set \
             allow_anonymous = true, or drop --users-file to allow anyone"
        );
    }
    let mut clear = Vec::new();
    let mut users = HashMap::with_capacity(file.users.len());
    for (name, entry) in file.users {
        let (password, groups) = match entry {
            UserEntry::Password(password) => (password, Vec::new()),
            UserEntry::Table(table) => (table.password, table.groups),
        };
        let password =
            Password::parse(&password).map_err(|e| anyhow!("password of user {name:?}: {e}"))?;
        if matches!(password, Password::Clear(_)) {
            clear.push(name.clone());
        }
        let groups = groups.into_iter().map(Arc::from).collect();
        users.insert(name, User { password, groups });
    }
    clear.sort();
    if !clear.is_empty() && !file.allow_clear_text_passwords {
        bail!(
            "users {} have clear-text passwords: replace each with the argon2id hash `ctl passwd` \
             prints (or set allow_clear_text_passwords = true, never in production)",
            clear.join(", ")
        );
    }
    let acl = file
        .authorization
        .map(|entries| {
            entries
                .into_iter()
                .enumerate()
                .map(|(i, e)| {
                    let groups = |names: Vec<String>| names.into_iter().map(Arc::from).collect();
                    Entry::new(
                        &e.destination,
                        groups(e.read),
                        groups(e.write),
                        groups(e.admin),
                    )
                    .map_err(|err| anyhow!("[[authorization]] entry {}: {err}", i + 1))
                })
                .collect::<Result<Vec<_>>>()
                .map(Acl::new)
        })
        .transpose()?;
    Ok(Security {
        users,
        anonymous: file.allow_anonymous,
        acl,
        clear_text: clear,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_form_still_reads_where_clear_text_is_allowed() {
        let security =
            parse("allow_clear_text_passwords = true\n[users]\nalice = \"pass\"\n").unwrap();
        assert_eq!(security.clear_text, ["alice"]);
        assert!(security.acl.is_none());
        let err = parse("[users]\nalice = \"pass\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("alice") && err.contains("ctl passwd"), "{err}");
    }

    #[test]
    fn mistakes_are_named() {
        for (text, expected) in [
            ("", "no users"),
            ("[users.a]\npassword = \"$argon2id$x\"\n", "user \"a\""),
            ("allow_anonymous = true\n[[authorization]]\ndestination = \"orders\"\n", "entry 1"),
            ("allow_anonymous = true\nsurprise = 1\n", "surprise"),
            ("allow_anonymous = true\n[[authorization]]\ndestination = \"/queue/a\"\nreed = []\n", "reed"),
        ] {
            let err = format!("{:#}", parse(text).unwrap_err());
            assert!(err.contains(expected), "{text:?}: {err}");
        }
    }

    #[test]
    fn anonymous_only_needs_no_users() {
        let security = parse("allow_anonymous = true\n").unwrap();
        assert!(security.anonymous && security.users.is_empty());
    }
}
