//! `ctl passwd`: the argon2id PHC string of a password, for a user's `password` in brokerd's
//! users file. It prompts twice on the terminal without echo, or takes `--password` for
//! scripts (visible to other users in the process list while ctl runs; prefer the prompt or
//! `--password-stdin`). The PHC string is the last line of its output, whatever came before.

use anyhow::{bail, Context};
use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
use argon2::Argon2;
use std::io::BufRead;

/// `ctl passwd`'s options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The password, for scripts; without it (or --password-stdin) ctl prompts twice.
    #[arg(long, conflicts_with = "password_stdin")]
    password: Option<String>,
    /// Read the password from the first line of standard input.
    #[arg(long)]
    password_stdin: bool,
}

/// Prints the PHC string of the password given or typed.
pub fn run(args: Args) -> anyhow::Result<()> {
    let password = match (args.password, args.password_stdin) {
        (Some(password), _) => password,
        (None, true) => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .context("reading the password from standard input")?;
            line.trim_end_matches(['\n', '\r']).to_owned()
        }
        (None, false) => prompt()?,
    };
    if password.is_empty() {
        bail!("the password is empty");
    }
    println!("{}", hash(&password)?);
    Ok(())
}

/// Asks twice on the terminal, without echo.
fn prompt() -> anyhow::Result<String> {
    let first = rpassword::prompt_password("Password: ")
        .context("cannot prompt for the password (no terminal? use --password-stdin)")?;
    let second = rpassword::prompt_password("Again: ").context("cannot prompt for the password")?;
    if first != second {
        bail!("the two passwords differ; nothing printed");
    }
    Ok(first)
}

/// argon2id with the crate's defaults (the OWASP recommendation: 19 MiB, 2 passes, 1 lane) and
/// a random salt.
fn hash(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| anyhow::anyhow!("cannot hash the password: {e}"))
}
