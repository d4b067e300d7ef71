//! The README's first command, as a new user runs it: `lockd --init` on a fresh shared directory,
//! with no config file and no `--broker-user`, from a build directory only its owner can enter
//! (a checkout under /root). It must serve STOMP, as root and as an ordinary user alike.

use ha_tests::{answers_stomp, bins, free_port, is_root, wait_until, NOBODY, WAIT};
use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

/// The uid a process runs as, from /proc.
fn uid_of(pid: u32) -> u32 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// lockd, SIGKILLed (its brokerd dies with it) if the test fails before stopping it.
struct Lockd(std::process::Child);

impl Drop for Lockd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Regression: as root, lockd refused to start without `broker_user`; with it, brokerd could not
/// be executed from a build directory closed to the broker user ("Permission denied").
#[test]
fn the_first_command_serves_stomp_from_a_private_build_directory() {
    let build = tempfile::tempdir().unwrap();
    fs::set_permissions(build.path(), fs::Permissions::from_mode(0o700)).unwrap();
    for bin in [&bins().lockd, &bins().brokerd, &bins().ctl] {
        fs::copy(bin, build.path().join(bin.file_name().unwrap())).unwrap();
    }
    let work = tempfile::tempdir().unwrap();
    // Like /tmp: the broker user must reach the shared directory it is given.
    fs::set_permissions(work.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let shared = work.path().join("broker-shared");
    let socket = work.path().join("lockd-node1.sock");
    let log = work.path().join("lockd.log");
    let port = free_port();
    let mut lockd = Lockd(
        Command::new(build.path().join("lockd"))
            .args(["--init", "--node", "node1", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--shared-dir")
            .arg(&shared)
            .arg("--socket")
            .arg(&socket)
            .stdin(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let served = (|| {
        let deadline = std::time::Instant::now() + WAIT;
        while std::time::Instant::now() < deadline {
            if answers_stomp(addr) {
                return true;
            }
            if lockd.0.try_wait().unwrap().is_some() {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        false
    })();
    let text = || fs::read_to_string(&log).unwrap();
    assert!(served, "no STOMP on {addr}; lockd's log:\n{}", text());
    let status = wait_until("ctl status to name the broker", || {
        let out = Command::new(build.path().join("ctl"))
            .arg("--socket")
            .arg(&socket)
            .args(["status", "--json"])
            .output()
            .ok()?;
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        status["broker_pid"].as_u64()
    });
    let expected = if is_root() {
        assert!(text().contains("brokerd runs as nobody"), "{}", text());
        NOBODY
    } else {
        // SAFETY: getuid(2) reads this process's uid.
        unsafe { libc::getuid() }
    };
    assert_eq!(uid_of(status as u32), expected, "brokerd's uid");
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(lockd.0.id() as i32, libc::SIGTERM) };
    let code = lockd.0.wait().unwrap().code();
    assert_eq!(code, Some(0), "lockd's exit; its log:\n{}", text());
}
