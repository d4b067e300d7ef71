//! Checking a CONNECT's passcode against the users file: argon2id PHC strings (from
//! `ctl passwd`), or clear text where the file explicitly allows it.
//!
//! An argon2 check costs tens of milliseconds of CPU by design, so it runs on the blocking
//! pool, a few at a time: a flood of CONNECTs with wrong passwords slows logins down but never
//! the threads that move messages.

use argon2::password_hash::{PasswordHash, PasswordVerifier};
use argon2::Argon2;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// Password checks running at once, at most.
const CONCURRENT_CHECKS: usize = 2;

/// A user's password as the users file gives it.
#[derive(Debug, Clone)]
pub enum Password {
    /// An argon2 PHC string (`$argon2id$v=19$...`), already parsed once at load.
    Hashed(Arc<str>),
    /// The password itself; only where `allow_clear_text_passwords = true`.
    Clear(Arc<str>),
}

impl Password {
    /// Reads a users-file value: a value starting with `$argon2` must be a valid argon2 PHC
    /// string; anything else is clear text.
    pub fn parse(value: &str) -> Result<Password, String> {
        if !value.starts_with("$argon2") {
            return Ok(Password::Clear(value.into()));
        }
        let invalid = |why: String| {
            format!("not a valid argon2 PHC string ({why}); make one with `ctl passwd`")
        };
        let hash = PasswordHash::new(value).map_err(|e| invalid(e.to_string()))?;
        argon2::Algorithm::try_from(hash.algorithm).map_err(|e| invalid(e.to_string()))?;
        argon2::Params::try_from(&hash).map_err(|e| invalid(e.to_string()))?;
        if hash.salt.is_none() || hash.hash.is_none() {
            return Err(invalid("no salt or no hash".into()));
        }
        Ok(Password::Hashed(value.into()))
    }

    /// What an unknown login is checked against: an argon2id hash (of a password nobody
    /// knows) with the defaults `ctl passwd` uses, so that it costs what a real check costs.
    pub fn unknown_user() -> Password {
        Password::Hashed(
            "$argon2id$v=19$m=19456,t=2,p=1$qHm2K2NP3kI9LSQJ/rGdeQ$\
             o/7rk1VzA0xZepC4YYnUZJ9dhBtPGveyz4ChTpCnnRU"
                .into(),
        )
    }

    /// Whether `given` is this password. Waits for a free check slot first.
    pub async fn verify(&self, given: &str) -> bool {
        match self {
            Password::Clear(expected) => constant_time_eq(expected.as_bytes(), given.as_bytes()),
            Password::Hashed(phc) => {
                static SLOTS: Semaphore = Semaphore::const_new(CONCURRENT_CHECKS);
                let Ok(_slot) = SLOTS.acquire().await else {
                    return false;
                };
                let phc = Arc::clone(phc);
                let given = given.to_owned();
                tokio::task::spawn_blocking(move || {
                    PasswordHash::new(&phc).is_ok_and(|hash| {
                        Argon2::default()
                            .verify_password(given.as_bytes(), &hash)
                            .is_ok()
                    })
                })
                .await
                .unwrap_or(false)
            }
        }
    }
}

/// Compares without stopping at the first difference, so the time taken does not tell an
/// attacker how much of a clear-text password was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::{PasswordHasher, SaltString};

    #[tokio::test]
    async fn a_hash_verifies_its_password_only() {
        let salt = SaltString::encode_b64(b"sixteen byte salt").unwrap();
        let phc = Argon2::default()
            .hash_password(b"s3cret", &salt)
            .unwrap()
            .to_string();
        assert!(phc.starts_with("$argon2id$v=19$"));
        let password = Password::parse(&phc).unwrap();
        assert!(password.verify("s3cret").await);
        assert!(!password.verify("s3cret ").await);
        assert!(!password.verify("").await);
    }

    #[tokio::test]
    async fn clear_text_compares_whole_values() {
        let password = Password::parse("pass").unwrap();
        assert!(matches!(password, Password::Clear(_)));
        assert!(password.verify("pass").await);
        assert!(!password.verify("pas").await);
        assert!(!password.verify("passs").await);
    }

    #[test]
    fn an_unknown_login_is_checked_against_a_real_hash() {
        let Password::Hashed(phc) = Password::unknown_user() else {
            panic!("not a hash");
        };
        assert!(matches!(Password::parse(&phc), Ok(Password::Hashed(_))));
    }

    #[test]
    fn a_broken_hash_is_refused_at_load() {
        let err = Password::parse("$argon2id$v=19$nonsense").unwrap_err();
        assert!(err.contains("ctl passwd"), "{err}");
    }
}
