//! The placement guard for the scheduler's store (issue 9 item 4): a `scheduler_dir` off the
//! shared directory's filesystem loses every pending schedule at failover, so lockd and brokerd
//! refuse to start with it, unless `scheduler_allow_local` turns the refusal into a warning in
//! the log and in `ctl status`.
//!
//! The foreign filesystem is a tmpfs: a directory the test makes under /dev/shm (removed when
//! the test ends), while the clusters' shared directories live under /tmp on another filesystem.

use ha_tests::*;
use shared_proto::admin::Role;
use shared_proto::mounts::Filesystem;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use tempfile::TempDir;

/// A new directory on the tmpfs at /dev/shm, writable by the broker user; removed when dropped.
fn tmpfs_dir() -> TempDir {
    let shm = Filesystem::probe(Path::new("/dev/shm")).expect("probe /dev/shm");
    assert_eq!(
        shm.fs_type, "tmpfs",
        "these tests need /dev/shm to be a tmpfs: {shm:?}"
    );
    let dir = tempfile::Builder::new()
        .prefix("scheduler-placement-")
        .tempdir_in("/dev/shm")
        .expect("a directory under /dev/shm");
    if is_root() {
        // brokerd runs as nobody, and lockd checks that it can write its stores.
        std::os::unix::fs::chown(dir.path(), Some(NOBODY), Some(NOBODY)).unwrap();
    }
    dir
}

/// `scheduler_dir = "..."` (and the opt-out when asked) as extra lines of a node's config.
fn scheduler_config(dir: &Path, allow_local: bool) -> String {
    format!(
        "scheduler_dir = \"{}\"\nscheduler_allow_local = {allow_local}\n",
        dir.display()
    )
}

/// The command line of a running process, one argument per element.
fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap()
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// The value after `flag` in `args`.
fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

#[test]
fn lockd_refuses_a_scheduler_dir_on_tmpfs_naming_both_paths_and_the_fix() {
    let scheduler = tmpfs_dir();
    let cluster = Cluster::new(1, &scheduler_config(scheduler.path(), false));
    let (code, stderr) = cluster.nodes[0].refused_start();
    assert_eq!(code, Some(2), "{stderr}");
    let expected = [
        format!(
            "scheduler_dir {} (tmpfs on /dev/shm",
            scheduler.path().display()
        ),
        format!(
            "is not on the filesystem of the shared directory {} (",
            cluster.shared.display()
        ),
        "scheduled messages kept there would be lost at failover".into(),
        "Put it under the shared directory (the default, SHARED/scheduler)".into(),
        "scheduler_allow_local = true".into(),
    ];
    for part in expected {
        assert!(stderr.contains(&part), "missing {part:?} in: {stderr}");
    }
}

#[test]
fn lockd_refuses_a_scheduler_dir_that_does_not_exist() {
    let cluster = Cluster::new(1, "");
    let missing = cluster.root.join("not-mounted/scheduler");
    let config = std::fs::read_to_string(&cluster.nodes[0].config).unwrap();
    std::fs::write(
        &cluster.nodes[0].config,
        config + &scheduler_config(&missing, true),
    )
    .unwrap();
    let (code, stderr) = cluster.nodes[0].refused_start();
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "scheduler_dir {} does not exist or is not a directory: create it on the shared filesystem",
            missing.display()
        )) && stderr.contains(&format!("{}/scheduler", cluster.shared.display())),
        "{stderr}"
    );
}

#[test]
fn with_scheduler_allow_local_lockd_starts_and_warns_in_its_log_and_ctl_status() {
    let scheduler = tmpfs_dir();
    let mut cluster = Cluster::new(1, &scheduler_config(scheduler.path(), true));
    cluster.start_all();
    let node = &cluster.nodes[0];
    let status = node.wait_for_role(Role::Active);
    let expected = format!("scheduler_dir {} (tmpfs", scheduler.path().display());
    let warning = status
        .warnings
        .iter()
        .find(|w| w.starts_with(&expected))
        .unwrap_or_else(|| panic!("no scheduler warning in {:?}", status.warnings));
    assert!(
        warning.contains(&format!(
            "the shared directory {}",
            cluster.shared.display()
        )) && warning.contains("Accepted because scheduler_allow_local is set"),
        "{warning}"
    );
    let text = node.ctl(&["status"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains(&format!("WARNING   {expected}")),
        "ctl status: {text}"
    );

    let log = std::fs::read_to_string(&node.log).unwrap();
    let line = log
        .lines()
        .find(|l| l.contains("scheduler_dir is not on the shared filesystem; starting anyway because scheduler_allow_local = true"))
        .unwrap_or_else(|| panic!("no warning line in the log: {log}"));
    assert!(
        line.contains("WARN") && line.contains("node=node1") && line.contains(&expected),
        "{line}"
    );

    let broker = cmdline(status.broker_pid.expect("an active node has a broker"));
    assert_eq!(
        flag_value(&broker, "--scheduler-dir"),
        Some(scheduler.path().to_str().unwrap()),
        "{broker:?}"
    );
    assert!(
        broker.iter().any(|a| a == "--scheduler-allow-local"),
        "{broker:?}"
    );
    // brokerd checked too, and accepted it because lockd passed the opt-out on.
    assert!(
        log.contains("starting anyway because of --scheduler-allow-local"),
        "{log}"
    );
}

#[test]
fn the_default_scheduler_dir_in_the_shared_directory_starts_without_a_warning() {
    let mut cluster = Cluster::new(1, "");
    cluster.start_all();
    let node = &cluster.nodes[0];
    let status = node.wait_for_role(Role::Active);
    assert!(
        !status.warnings.iter().any(|w| w.contains("scheduler_dir")),
        "{:?}",
        status.warnings
    );
    let broker = cmdline(status.broker_pid.expect("an active node has a broker"));
    let default = cluster.shared.join("scheduler");
    assert_eq!(
        flag_value(&broker, "--scheduler-dir"),
        Some(default.to_str().unwrap()),
        "{broker:?}"
    );
    assert!(
        !broker.iter().any(|a| a == "--scheduler-allow-local"),
        "{broker:?}"
    );
    let log = std::fs::read_to_string(&node.log).unwrap();
    assert!(
        log.contains("scheduler store on the shared filesystem")
            && !log.contains("starting anyway because"),
        "{log}"
    );
}

/// brokerd run by hand, standalone, with its stderr kept.
fn brokerd(data: &Path, port: u16, extra: &[&str]) -> Command {
    let mut cmd = Command::new(&bins().brokerd);
    cmd.arg("--data-dir")
        .arg(data)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(extra)
        .env("RUST_LOG", "info")
        .env_remove("LOCKD_CONTROL_FD")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    cmd
}

#[test]
fn standalone_brokerd_refuses_a_scheduler_dir_on_tmpfs_unless_allowed() {
    let scheduler = tmpfs_dir();
    let local = tempfile::Builder::new()
        .prefix("ha-test-")
        .tempdir()
        .unwrap();
    let data: PathBuf = local.path().join("data");
    let sched = scheduler.path().to_str().unwrap();
    let port = free_port();

    // Against its data directory.
    let out = brokerd(&data, port, &["--scheduler-dir", sched])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("scheduler_dir {sched} (tmpfs"))
            && stderr.contains(&format!("of the data directory {} (", data.display()))
            && stderr.contains("--scheduler-allow-local"),
        "{stderr}"
    );
    assert!(!answers_stomp(loopback(port)), "refused, yet serving");

    // Against a shared directory, when given one.
    let shared = local.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    let shared_arg = shared.to_str().unwrap();
    let out = brokerd(
        &data,
        port,
        &["--scheduler-dir", sched, "--shared-dir", shared_arg],
    )
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("of the shared directory {shared_arg} (")),
        "{stderr}"
    );

    // With the opt-out it serves, and says why it should not.
    let log = local.path().join("brokerd.log");
    let mut child = brokerd(
        &data,
        port,
        &["--scheduler-dir", sched, "--scheduler-allow-local"],
    )
    .stderr(std::fs::File::create(&log).unwrap())
    .spawn()
    .unwrap();
    wait_until("the allowed brokerd to serve STOMP", || {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "brokerd exited ({status}): {}",
                std::fs::read_to_string(&log).unwrap()
            );
        }
        answers_stomp(loopback(port)).then_some(())
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("WARN")
            && text.contains("starting anyway because of --scheduler-allow-local")
            && text.contains(&format!("scheduler_dir {sched} (tmpfs")),
        "{text}"
    );
}

/// 127.0.0.1:`port`.
fn loopback(port: u16) -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], port))
}
