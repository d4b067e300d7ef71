//! brokerd confines its own writes (issue 11): with Landlock, the kernel refuses it every kind
//! of write (writing, truncating, creating, removing, renaming, linking, device ioctls) outside
//! its two store directories, the message store (`--data-dir`) and the scheduler's. Reads stay
//! allowed everywhere (users file, certificates, `/proc`, the shared directory's epoch).
//!
//! Why: brokerd parses what any client sends. A broker taken over through a bug could otherwise
//! write wherever its user can, and in the shared directory that includes files the broker user
//! may reach by mistake (DESIGN.md: "A broker that could delete or replace `lock` could hand a
//! second node the lock while it still runs"). Those two directories are all brokerd writes
//! (checked with strace): sled keeps every file under its directory, the scheduler's
//! `jobs.redb` and its `jobs.redb.new` twin sit in theirs, and the shared directory's epoch is
//! only read (`crate::fence`).
//!
//! Landlock restricts the calling thread and the threads it starts afterwards, not those already
//! running (restricting every thread at once needs ABI 8). So `main` confines before it starts
//! the async runtime or any other thread: every thread brokerd ever runs inherits the rules.
//!
//! The kernel may lack Landlock, or have an older ABI that cannot restrict every kind of write;
//! the crate then applies what it can (best effort), and [`Confinement`] says how much that was,
//! in the log at start and, through lockd, in `ctl status`.

use landlock::{
    AccessFs, BitFlags, LandlockStatus, PathBeneath, PathFd, PathFdError, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetError, RulesetStatus, ABI,
};
use shared_proto::control::{Confinement, FULL_LANDLOCK_ABI};
use std::path::{Path, PathBuf};
use tracing::{info, warn, Instrument};

/// The Landlock ABI whose write rights brokerd restricts: the newest that added one
/// (`IoctlDev`), tested here. Newer ABIs add no write right, and an ABI pinned in code keeps a
/// crate upgrade from restricting something untested.
const TARGET: ABI = ABI::V5;

/// Why brokerd could not confine itself although the kernel has Landlock.
#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    /// A store directory did not exist and could not be made; the store could not be either.
    #[error("cannot create {} to confine brokerd's writes to it: {source}; check that brokerd's user may create it", path.display())]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A store directory could not be opened to attach the rule to.
    #[error("cannot open {} to confine brokerd's writes beneath it: {source}", path.display())]
    Open { path: PathBuf, source: PathFdError },
    /// The kernel refused the rules (not merely lacked Landlock, which is reported as
    /// [`Confinement::Unavailable`]).
    #[error("cannot confine brokerd's writes to {dirs} with Landlock: {source}; brokerd refuses to run less confined than the kernel allows", dirs = .dirs.join(" and "))]
    Landlock {
        dirs: Vec<String>,
        source: RulesetError,
    },
}

/// Confines the calling thread, and every thread it starts from now on, to writing beneath
/// `writable` (created if missing: a Landlock rule needs a directory to attach to), then logs
/// how far the kernel enforced it, with a warning unless fully. Call it before any other thread
/// exists (see the module header).
pub fn confine(writable: &[&Path]) -> Result<Confinement, ConfineError> {
    let dirs: Vec<String> = writable.iter().map(|d| d.display().to_string()).collect();
    for dir in writable {
        std::fs::create_dir_all(dir).map_err(|source| ConfineError::Create {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let landlock = |source| ConfineError::Landlock {
        dirs: dirs.clone(),
        source,
    };
    let writes = AccessFs::from_write(TARGET);
    let mut ruleset = Ruleset::default()
        .handle_access(writes)
        .and_then(Ruleset::create)
        .map_err(landlock)?;
    for dir in writable {
        let beneath = PathFd::new(dir).map_err(|source| ConfineError::Open {
            path: dir.to_path_buf(),
            source,
        })?;
        ruleset = ruleset
            .add_rule(PathBeneath::new(beneath, writes))
            .map_err(landlock)?;
    }
    let status = ruleset.restrict_self().map_err(landlock)?;
    let confinement = outcome(&status.ruleset, status.landlock, dirs);
    match confinement.warning() {
        None => info!(%confinement, "brokerd's writes are confined"),
        Some(warning) => warn!(%confinement, "{warning}"),
    }
    Ok(confinement)
}

/// What the kernel enforced, for the log and `ctl status`.
fn outcome(
    ruleset: &RulesetStatus,
    landlock: LandlockStatus,
    writable: Vec<String>,
) -> Confinement {
    let abi = match landlock {
        LandlockStatus::Available {
            effective_abi,
            kernel_abi,
        } => kernel_abi.map_or_else(|| abi_number(effective_abi), |v| v.unsigned_abs()),
        LandlockStatus::NotEnabled => {
            return Confinement::Unavailable {
                reason: "the kernel has Landlock but does not enable it (`landlock` is missing \
                         from the lsm= boot parameter)"
                    .into(),
            }
        }
        LandlockStatus::NotImplemented => {
            return Confinement::Unavailable {
                reason: "the kernel has no Landlock (it needs Linux 5.13 or later built with \
                         CONFIG_SECURITY_LANDLOCK=y)"
                    .into(),
            }
        }
    };
    match ruleset {
        RulesetStatus::FullyEnforced => Confinement::Enforced { abi, writable },
        RulesetStatus::PartiallyEnforced => Confinement::Partial {
            abi,
            writable,
            unrestricted: unrestricted(abi),
        },
        RulesetStatus::NotEnforced => Confinement::Unavailable {
            reason: format!("the kernel's Landlock (ABI {abi}) enforced none of the rules"),
        },
    }
}

/// The ABI's number (the crate's `ABI` is not meant to be cast); 0 when unsupported.
fn abi_number(abi: ABI) -> u32 {
    abi.to_string().parse().unwrap_or(0)
}

/// The kinds of write that Landlock ABI `abi` cannot restrict but [`TARGET`] can, as an
/// operator would name them.
fn unrestricted(abi: u32) -> Vec<String> {
    let missing: BitFlags<AccessFs> = AccessFs::from_write(TARGET)
        & !AccessFs::from_write(ABI::from(i32::try_from(abi).unwrap_or(i32::MAX)));
    missing
        .iter()
        .map(|right| match right {
            AccessFs::Refer => "linking or renaming across directories".to_owned(),
            AccessFs::Truncate => "truncate".to_owned(),
            AccessFs::IoctlDev => "ioctl on devices".to_owned(),
            other => format!("{other:?}"),
        })
        .collect()
}

/// Test hook (`--test-try-write`): tries to create `path` on a thread of the async runtime,
/// not the one that confined itself, so that a test also proves the threads brokerd does its
/// I/O on inherited the rules; logs one line saying whether the kernel refused. Never used in
/// production.
pub async fn try_write(path: PathBuf) {
    let attempt = tokio::task::spawn_blocking(move || {
        let created = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path);
        (path, created)
    })
    .in_current_span()
    .await;
    match attempt {
        Ok((path, Ok(_))) => info!(path = %path.display(), "test hook --test-try-write: allowed"),
        Ok((path, Err(error))) => info!(
            path = %path.display(),
            errno = error.raw_os_error().unwrap_or(0),
            %error,
            "test hook --test-try-write: refused"
        ),
        Err(error) => warn!(%error, "test hook --test-try-write: the attempt did not run"),
    }
}

// FULL_LANDLOCK_ABI (what `ctl status` tells operators to run) must be the ABI confined here.
const _: () = assert!(TARGET as u32 == FULL_LANDLOCK_ABI);

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::ErrorKind;

    #[test]
    fn older_abis_name_the_writes_they_cannot_restrict() {
        assert_eq!(
            unrestricted(1),
            [
                "linking or renaming across directories",
                "truncate",
                "ioctl on devices"
            ]
        );
        assert_eq!(unrestricted(3), ["ioctl on devices"]);
        assert!(unrestricted(5).is_empty() && unrestricted(7).is_empty());
    }

    #[test]
    fn a_kernel_without_landlock_is_reported_as_unconfined_saying_why() {
        let dirs = vec!["/s/data".to_owned()];
        let none = outcome(
            &RulesetStatus::NotEnforced,
            LandlockStatus::NotImplemented,
            dirs.clone(),
        );
        assert!(
            matches!(&none, Confinement::Unavailable { reason } if reason.contains("no Landlock")),
            "{none:?}"
        );
        let off = outcome(
            &RulesetStatus::NotEnforced,
            LandlockStatus::NotEnabled,
            dirs.clone(),
        );
        assert!(off.to_string().contains("lsm="), "{off}");
        let old = outcome(
            &RulesetStatus::PartiallyEnforced,
            LandlockStatus::Available {
                effective_abi: ABI::V2,
                kernel_abi: None,
            },
            dirs,
        );
        assert_eq!(
            old,
            Confinement::Partial {
                abi: 2,
                writable: vec!["/s/data".into()],
                unrestricted: vec!["truncate".into(), "ioctl on devices".into()],
            }
        );
    }

    /// Landlock confines the calling thread only, so a thread of its own can be confined here
    /// without touching the rest of the test binary.
    #[test]
    fn a_confined_thread_writes_beneath_its_directories_and_nowhere_else() {
        let root = tempfile::tempdir().unwrap();
        let store = root.path().join("data");
        let elsewhere = root.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::fs::write(elsewhere.join("existing"), b"x").unwrap();
        let (store_dir, outside) = (store.clone(), elsewhere.clone());
        let confinement = std::thread::spawn(move || {
            let confinement = confine(&[&store_dir]).unwrap();
            std::fs::write(store_dir.join("inside"), b"ok").unwrap();
            let refusals = [
                std::fs::write(outside.join("new"), b"no"),
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(outside.join("existing"))
                    .map(drop),
                std::fs::remove_file(outside.join("existing")),
                std::fs::create_dir(outside.join("dir")),
            ];
            (confinement, refusals.map(|r| r.map_err(|e| e.kind())))
        })
        .join()
        .unwrap();
        let (confinement, refusals) = confinement;
        assert!(store.join("inside").is_file());
        match confinement {
            Confinement::Enforced { .. } | Confinement::Partial { .. } => {
                assert_eq!(refusals, [Err(ErrorKind::PermissionDenied); 4]);
                assert!(!elsewhere.join("new").exists() && elsewhere.join("existing").exists());
            }
            // A kernel without Landlock: nothing to prove but that it says so.
            Confinement::Unavailable { reason } => eprintln!("no Landlock here: {reason}"),
        }
        // This thread was never confined.
        std::fs::write(elsewhere.join("after"), b"ok").unwrap();
    }
}
