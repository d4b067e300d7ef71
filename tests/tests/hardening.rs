//! lockd against what others can plant or hold: files in the shared directory (DESIGN invariant
//! 8), the ctl socket's connections, and settings the README calls wrong. Real lockd, brokerd and
//! ctl processes, as everywhere in this crate.

use ha_tests::*;
use shared_proto::admin::Role;
use shared_proto::control::{Confinement, FULL_LANDLOCK_ABI};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Fence timeout of these clusters: the node must outlive several of them.
const FENCE_TIMEOUT_MS: u64 = 2000;

/// Regression: a FIFO named `SHARED/nodes/zz.json` stuck the keeper in a read, and the fence
/// timer fenced a healthy single active node after fence_timeout_ms, leaving no broker at all.
#[test]
fn a_fifo_in_nodes_does_not_fence_a_healthy_active() {
    let mut cluster = Cluster::new(1, &format!("fence_timeout_ms = {FENCE_TIMEOUT_MS}\n"));
    let fifo = cluster.shared.join("nodes").join("zz.json");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    cluster.start_all();
    let node = &cluster.nodes[0];
    let epoch = node.wait_for_role(Role::Active).epoch;
    throughout(Duration::from_millis(3 * FENCE_TIMEOUT_MS), || {
        let status = node.status().unwrap();
        assert_eq!(
            (status.role, status.epoch),
            (Role::Active, epoch),
            "{}",
            cluster.logs()
        );
    });
    assert!(answers_stomp(node.addr()));
}

/// A nodes/ directory anyone can write would let anyone plant such files: refused at start,
/// naming the path and the fix.
#[test]
fn a_control_path_others_can_write_is_refused_at_start() {
    let cluster = Cluster::new(1, "");
    let nodes = cluster.shared.join("nodes");
    std::fs::set_permissions(&nodes, std::fs::Permissions::from_mode(0o777)).unwrap();
    let (code, stderr) = cluster.nodes[0].refused_start();
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{} has mode 0777: writable by others",
            nodes.display()
        )) && stderr.contains(&format!("chmod go-w {}", nodes.display())),
        "{stderr}"
    );
}

/// Appends `line` to every node's config.
fn configure(cluster: &Cluster, line: &str) {
    for node in &cluster.nodes {
        let mut text = std::fs::read_to_string(&node.config).unwrap();
        text.push_str(line);
        std::fs::write(&node.config, text).unwrap();
    }
}

/// Through one path a node cannot see how late its changes reach other nodes. Given a second
/// path to the shared directory (`lock_check_other_path`), lockd's start-up lock check measures
/// that lag and sets the takeover grace from it; a path that is not the same directory fails
/// the check, and lockd refuses to start, naming it.
#[test]
fn lockd_measures_the_visibility_lag_through_a_second_path_at_start() {
    // A symlink is a second path an ordinary user can make (a second mount needs root); it
    // shows every change at once, so the grace stays the default 20 ms.
    let mut cluster = Cluster::new(1, "");
    let other = cluster.root.join("other-path");
    std::os::unix::fs::symlink(&cluster.shared, &other).unwrap();
    configure(
        &cluster,
        &format!("lock_check_other_path = \"{}\"\n", other.display()),
    );
    cluster.start_all();
    cluster.nodes[0].wait_for_role(Role::Active);
    let logs = cluster.logs();
    let measured = logs
        .lines()
        .find(|l| l.contains("visibility lag across the two paths measured"))
        .unwrap_or_else(|| panic!("no lag measured:\n{logs}"));
    assert!(
        measured.contains(&format!("other_path={}", other.display()))
            && measured.contains("grace_ms=20"),
        "{measured}"
    );

    let cluster = Cluster::new(1, "");
    let unrelated = cluster.root.join("unrelated");
    std::fs::create_dir(&unrelated).unwrap();
    configure(
        &cluster,
        &format!("lock_check_other_path = \"{}\"\n", unrelated.display()),
    );
    let (code, stderr) = cluster.nodes[0].refused_start();
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "is {} a mount of the same directory?",
            unrelated.display()
        )),
        "{stderr}"
    );
}

/// `ctl status` shows what `SHARED/broken-locks` says; a 10 MiB record made the reply longer
/// than the protocol's line limit, so status failed for as long as the file was there.
#[test]
fn ctl_status_stays_bounded_whatever_broken_locks_holds() {
    let mut cluster = Cluster::new(1, "");
    std::fs::write(cluster.shared.join("broken-locks"), vec![b'x'; 10 << 20]).unwrap();
    cluster.start_all();
    let node = &cluster.nodes[0];
    let status = wait_until("status with the broken-locks warning", || {
        node.status()
            .ok()
            .filter(|s| s.warnings.iter().any(|w| w.contains("xxxx")))
    });
    let warning = status.warnings.iter().find(|w| w.contains("xxxx")).unwrap();
    assert!(warning.len() < 4096, "{} bytes", warning.len());
    assert!(warning.contains("cut off"), "{warning}");
}

/// A client holding connections open took every slot of the ctl socket (they were taken before
/// accept), so `ctl failover` waited in the backlog for as long as it cared to hold them.
#[test]
#[ignore = "needs root, to hold the connections as another uid; tests/run-all.sh runs it as root"]
fn a_client_holding_connections_cannot_lock_admins_out_of_failover() {
    assert!(is_root(), "run as root");
    let mut cluster = Cluster::new(2, "socket_mode = \"0666\"\n");
    cluster.start_all();
    let active = cluster.wait_for_one_active();
    let node = &cluster.nodes[active];
    let hold = "import socket, sys, time\n\
                held = []\n\
                for _ in range(64):\n\
                \x20   s = socket.socket(socket.AF_UNIX)\n\
                \x20   s.connect(sys.argv[1])\n\
                \x20   held.append(s)\n\
                print('held', flush=True)\n\
                time.sleep(120)\n";
    let mut python = Command::new("/usr/bin/python3");
    python.arg("-c").arg(hold).arg(&node.socket);
    let mut hog = ClientProcess::spawn("connection hog", as_user(python, NOBODY, NOBODY, &[]));
    hog.wait_for_line("held");
    let mut failover = node.ctl_command(&["failover"]).spawn().unwrap();
    let code = wait_until("ctl failover to finish", || {
        failover.try_wait().unwrap().map(|s| s.code())
    });
    assert_eq!(code, Some(0), "{}", cluster.logs());
    assert_ne!(cluster.wait_for_active_other_than(active), active);
}

/// DESIGN.md: lockd runs as root "or a user with CAP_SETUID/CAP_SETGID/CAP_KILL". lockd looked
/// at its uid only and refused broker_user unless it was 0.
#[test]
#[ignore = "needs root, to start lockd as nobody with capabilities; tests/run-all.sh runs it as root"]
fn a_non_root_lockd_with_the_capabilities_runs_brokerd_as_the_broker_user() {
    assert!(is_root(), "run as root");
    let daemon = nix::unistd::User::from_name("daemon").unwrap().unwrap();
    let cluster = Cluster::new(1, "");
    let node = &cluster.nodes[0];
    let config = std::fs::read_to_string(&node.config)
        .unwrap()
        .replace("broker_user = \"nobody\"", "broker_user = \"daemon\"");
    std::fs::write(&node.config, config).unwrap();
    // lockd's user owns the directory and everything in it but the broker's stores.
    let chown = |path: &std::path::Path, uid: u32, gid: u32| {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap()
    };
    chown(&cluster.root, NOBODY, NOBODY);
    for entry in ["", "lock", "epoch", "epochs", "nodes", "cluster.json"] {
        chown(&cluster.shared.join(entry), NOBODY, NOBODY);
    }
    for store in ["data", "scheduler"] {
        chown(
            &cluster.shared.join(store),
            daemon.uid.as_raw(),
            daemon.gid.as_raw(),
        );
    }
    let log = std::fs::File::create(&node.log).unwrap();
    let mut lockd = Command::new(&bins().lockd);
    lockd
        .arg("--config")
        .arg(&node.config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    // SAFETY: only async-signal-safe syscalls in the forked child before exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut lockd, || {
            let caps: u32 = (1 << 5) | (1 << 6) | (1 << 7); // CAP_KILL, CAP_SETGID, CAP_SETUID
            let mut header = [0x2008_0522u32, 0];
            let data = [caps, caps, caps, 0, 0, 0];
            let failed = libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0
                || libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(NOBODY) != 0
                || libc::setuid(NOBODY) != 0
                || libc::syscall(libc::SYS_capset, header.as_mut_ptr(), data.as_ptr()) != 0
                || [5, 6, 7].iter().any(|cap| {
                    libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_RAISE, *cap, 0, 0) != 0
                });
            if failed {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut lockd = lockd.spawn().unwrap();
    let status = wait_until("lockd as nobody to be active", || {
        if let Some(exit) = lockd.try_wait().unwrap() {
            panic!(
                "lockd exited ({exit}): {}",
                std::fs::read_to_string(&node.log).unwrap()
            );
        }
        node.status().ok().filter(|s| s.role == Role::Active)
    });
    let uid_of = |pid: u32| {
        let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .unwrap()
            .to_owned();
        line.split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u32>()
            .unwrap()
    };
    assert_eq!(uid_of(lockd.id()), NOBODY);
    assert_eq!(uid_of(status.broker_pid.unwrap()), daemon.uid.as_raw());
    assert!(answers_stomp(node.addr()));
    lockd.kill().unwrap();
    lockd.wait().unwrap();
}

/// brokerd's scheduled-message store sits beside its message store and must be as writable by
/// the broker user; lockd checked only data/ and let the first takeover find out.
#[test]
#[ignore = "needs root, so that brokerd runs as another user; tests/run-all.sh runs it as root"]
fn a_scheduler_directory_the_broker_cannot_write_is_refused_at_start() {
    assert!(is_root(), "run as root");
    let cluster = Cluster::new(1, "");
    let scheduler = cluster.shared.join("scheduler");
    std::os::unix::fs::chown(&scheduler, Some(0), Some(0)).unwrap();
    let (code, stderr) = cluster.nodes[0].refused_start();
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("{} (owner uid 0", scheduler.display()))
            && stderr.contains("not writable by the broker user"),
        "{stderr}"
    );
}

/// Issue 11 item 4: under lockd, brokerd runs as broker_user without any capability it could
/// ever regain (effective, permitted, bounding and ambient sets empty, no_new_privs set), and
/// `ctl status` (human and --json) says how Landlock confines its writes to data/ and
/// scheduler/, with a warning on a kernel that cannot.
#[test]
#[ignore = "needs root, so that brokerd runs as broker_user; tests/run-all.sh runs it as root"]
fn brokerd_holds_no_capability_and_status_shows_its_confinement() {
    require_root("so that lockd starts brokerd as broker_user");
    let mut cluster = Cluster::new(1, "");
    cluster.start_all();
    let node = &cluster.nodes[0];
    let status = node.wait_for_role(Role::Active);
    let pid = status.broker_pid.expect("an active node has a broker");
    let proc_status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        proc_status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status:\n{proc_status}"))
    };
    assert_eq!(field("Uid").split_whitespace().next(), Some("65534"));
    for caps in ["CapEff", "CapPrm", "CapBnd", "CapAmb"] {
        assert_eq!(field(caps), "0000000000000000", "{caps}:\n{proc_status}");
    }
    assert_eq!(field("NoNewPrivs"), "1");

    let confinement = status
        .confinement
        .clone()
        .unwrap_or_else(|| panic!("no confinement in the status: {status:?}"));
    let (data, scheduler) = (
        cluster.shared.join("data"),
        cluster.shared.join("scheduler"),
    );
    let abi = kernel_landlock_abi();
    let warned = status
        .warnings
        .iter()
        .any(|w| w.contains("not fully confined"));
    match &confinement {
        Confinement::Enforced { abi: reported, .. } => {
            assert!(
                abi >= FULL_LANDLOCK_ABI && *reported == abi && !warned,
                "{status:?}"
            );
            assert!(
                confinement.to_string().contains(&format!(
                    "writes only under {} and {}",
                    data.display(),
                    scheduler.display()
                )),
                "{confinement}"
            );
        }
        Confinement::Partial { .. } => assert!((1..FULL_LANDLOCK_ABI).contains(&abi) && warned),
        Confinement::Unavailable { .. } => assert!(abi == 0 && warned, "{status:?}"),
    }
    let human = stdout(&node.ctl(&["status"]));
    assert!(
        human
            .lines()
            .any(|l| l == format!("confinement {confinement}")),
        "{human}"
    );
}

/// The running kernel's Landlock ABI, 0 without Landlock: what brokerd's confinement must say.
fn kernel_landlock_abi() -> u32 {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: landlock_create_ruleset(NULL, 0, VERSION) only returns the ABI version (or -1
    // with ENOSYS/EOPNOTSUPP); it reads no memory.
    let abi = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    u32::try_from(abi).unwrap_or(0)
}

#[test]
#[ignore = "needs root, so that brokerd runs as another user; tests/run-all.sh runs it as root"]
fn files_lockd_writes_stay_readable_by_the_broker_under_a_strict_umask() {
    require_root("so that lockd starts brokerd as broker_user");
    let mut cluster = Cluster::new(1, "");
    // A unit with UMask=0027 or stricter: the epoch file brokerd's fence reads must still be
    // 0644, or the broker (another user) could never start.
    cluster.nodes[0].umask = Some(0o077);
    cluster.start_all();
    cluster.wait_for_one_active();
    let mode = std::fs::metadata(cluster.shared.join("epoch"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o644, "epoch is {:o}", mode & 0o777);
    let url = failover_url(&cluster);
    send_receipted(&url, "/queue/umask", &[]);
}
