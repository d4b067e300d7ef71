//! Harness for cross-process tests and benchmarks: real lockd, brokerd and ctl binaries on a
//! temporary shared directory, with ports from 127.0.0.1:0.
//!
//! The binaries must be built first (`cargo build --workspace --bins`, the test command does);
//! they are found beside the running test binary's target directory. Every process a [`Cluster`]
//! starts is SIGKILLed when it is dropped, and a failing test prints every node's log.

pub mod accept;
pub mod bindfs;
pub mod fuse;
pub mod http;
pub mod powercut;
pub mod soak;
pub mod tls;

use accept::AcceptProber;
use anyhow::{bail, Context};
use shared_proto::admin::{Role, Status};
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Generous bound for anything the tests wait for; never a measure of speed.
pub const WAIT: Duration = Duration::from_secs(30);

/// A users file with one console user, `admin` (password `password`, group `admins`), and
/// anonymous STOMP clients allowed: what [`Cluster::with_http_pages`] needs when a test does not
/// care who logs in.
pub const CONSOLE_USERS: &str = "allow_anonymous = true\n[users.admin]\npassword = \"$argon2id$v=19$m=19456,t=2,p=1$m/tq9pPX9fc6jlcYHpqG+Q$L3fSgC3jpAJqH+qKy/uo8frfqe7gBCmFTFmePDJmkls\"\ngroups = [\"admins\"]\n";

/// The uid tests use for "somebody else" when they run as root.
pub const NOBODY: u32 = 65534;

/// Paths of the built binaries.
pub struct Bins {
    pub lockd: PathBuf,
    pub brokerd: PathBuf,
    pub ctl: PathBuf,
}

/// Locates the binaries in the target directory this test binary was built into.
pub fn bins() -> &'static Bins {
    static BINS: OnceLock<Bins> = OnceLock::new();
    BINS.get_or_init(|| {
        let exe = std::env::current_exe().expect("current_exe");
        let dir = exe
            .ancestors()
            .skip(1)
            .find(|d| d.join("lockd").is_file())
            .unwrap_or_else(|| {
                panic!(
                    "lockd not found above {}: build the binaries first with `cargo build --workspace --bins`",
                    exe.display()
                )
            })
            .to_path_buf();
        Bins {
            lockd: dir.join("lockd"),
            brokerd: dir.join("brokerd"),
            ctl: dir.join("ctl"),
        }
    })
}

/// Whether the tests run as root (then brokerd runs as `nobody`, as in production).
pub fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// Panics unless the tests run as root: the first line of every test `#[ignore]`d for needing
/// root, so that running it where it cannot run is a failure, never a pass.
pub fn require_root(why: &str) {
    assert!(is_root(), "this test cannot run here: it needs root {why}");
}

/// A port on 127.0.0.1 that was free a moment ago, for a node's STOMP listener, which must be
/// known before the node is active (clients list every node's port).
///
/// Taken below the kernel's ephemeral range (32768 and up), so no client connection of the
/// tests can be using it by the time the node binds it, and never handed out twice by this
/// process, so clusters of tests running in parallel never share one.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let seed = std::process::id() as usize * 7919 + given.len() * 104_729;
    for attempt in 0..10_000 {
        let port = 20_000 + ((seed + attempt * 7_727) % 12_000) as u16;
        if !given.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return port;
        }
    }
    panic!("no free port found in 20000-31999");
}

/// Several nodes sharing one temporary shared directory.
pub struct Cluster {
    /// Keeps the temporary directory alive.
    _dir: tempfile::TempDir,
    pub root: PathBuf,
    pub shared: PathBuf,
    pub nodes: Vec<Node>,
    /// The "one active" oracle, probing every node's port for the cluster's whole life; checked
    /// by [`Cluster::wait_for_one_active`] and when the cluster is dropped.
    pub accepts: AcceptProber,
}

/// One node: its config, socket, STOMP port and, while running, its lockd process.
pub struct Node {
    pub name: String,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub port: u16,
    pub log: PathBuf,
    pub child: Option<Child>,
    /// The umask lockd starts with (systemd's `UMask=`); the harness's own when `None`.
    pub umask: Option<u32>,
    /// lockd's `metrics_listen`, once [`Cluster::with_http_pages`] set it.
    pub metrics: Option<SocketAddr>,
    /// The node's `console_listen`, once [`Cluster::with_http_pages`] set it.
    pub console: Option<SocketAddr>,
}

impl Cluster {
    /// Prepares `n` nodes (not started) with `extra` TOML lines appended to each config.
    pub fn new(n: usize, extra: &str) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("ha-test-")
            .tempdir()
            .expect("tempdir");
        let root = dir.path().to_path_buf();
        // brokerd runs as nobody under root: it must be able to reach the shared directory.
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
        let shared = root.join("shared");
        let mut init = Command::new(&bins().ctl);
        init.arg("init").arg(&shared);
        if is_root() {
            init.args(["--broker-user", "nobody"]);
        }
        let out = init.output().expect("run ctl init");
        assert!(
            out.status.success(),
            "ctl init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let nodes = (1..=n)
            .map(|i| {
                let name = format!("node{i}");
                let socket = root.join(format!("{name}.sock"));
                let port = free_port();
                let config = root.join(format!("{name}.toml"));
                let mut text = format!(
                    "node = \"{name}\"\nshared_dir = \"{}\"\nsocket = \"{}\"\nlisten = [\"127.0.0.1:{port}\"]\n\
                     broker_binary = \"{}\"\nkeepalive_ms = 100\nfailover_hold_off_ms = 3000\n",
                    shared.display(),
                    socket.display(),
                    bins().brokerd.display()
                );
                if is_root() {
                    text.push_str("broker_user = \"nobody\"\n");
                }
                text.push_str(extra);
                fs::write(&config, text).unwrap();
                Node {
                    log: root.join(format!("{name}.log")),
                    name,
                    config,
                    socket,
                    port,
                    child: None,
                    umask: None,
                    metrics: None,
                    console: None,
                }
            })
            .collect::<Vec<Node>>();
        let addrs: Vec<(String, SocketAddr)> =
            nodes.iter().map(|n| (n.name.clone(), n.addr())).collect();
        Cluster {
            _dir: dir,
            root,
            shared,
            nodes,
            accepts: AcceptProber::start(&addrs),
        }
    }

    /// Gives every node's brokerd `text` as its users file (`--users-file`), readable by the
    /// broker user; call before the nodes start. Returns the file's path.
    pub fn users_file(&mut self, text: &str) -> PathBuf {
        let users = self.root.join("users.toml");
        fs::write(&users, text).unwrap();
        fs::set_permissions(&users, fs::Permissions::from_mode(0o644)).unwrap();
        let option = format!("\"--users-file\", \"{}\"", users.display());
        for node in &self.nodes {
            let config = fs::read_to_string(&node.config).unwrap();
            // One broker_args key (TOML refuses a second): added to the one `extra` gave.
            let config = match config.find("broker_args = [") {
                Some(at) => {
                    let open = at + "broker_args = [".len();
                    format!("{}{option}, {}", &config[..open], &config[open..])
                }
                None => format!("{config}broker_args = [{option}]\n"),
            };
            fs::write(&node.config, config).unwrap();
        }
        users
    }

    /// Gives every node a `metrics_listen` and a `console_listen` of its own, and brokerd
    /// `users` as its users file (the console's logins; [`CONSOLE_USERS`] will do); call before
    /// the nodes start.
    pub fn with_http_pages(&mut self, users: &str) {
        self.users_file(users);
        for node in &mut self.nodes {
            let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let console = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let mut config = fs::read_to_string(&node.config).unwrap();
            config.push_str(&format!(
                "metrics_listen = \"{metrics}\"\nconsole_listen = \"{console}\"\n"
            ));
            fs::write(&node.config, config).unwrap();
            node.metrics = Some(metrics);
            node.console = Some(console);
        }
    }

    /// Starts every node, one after the other.
    pub fn start_all(&mut self) {
        for node in &mut self.nodes {
            node.start();
        }
    }

    /// Waits until exactly one node is active and every other started node passive; returns
    /// the active node's index. Panics if two brokers' accept windows overlapped so far.
    pub fn wait_for_one_active(&self) -> usize {
        let deadline = Instant::now() + WAIT;
        loop {
            let roles: Vec<Option<Role>> = self
                .nodes
                .iter()
                .map(|n| {
                    n.child
                        .as_ref()
                        .and_then(|_| n.status().ok())
                        .map(|s| s.role)
                })
                .collect();
            let active: Vec<usize> = roles
                .iter()
                .enumerate()
                .filter(|(_, r)| **r == Some(Role::Active))
                .map(|(i, _)| i)
                .collect();
            let settled = roles
                .iter()
                .zip(&self.nodes)
                .all(|(r, n)| n.child.is_none() || matches!(r, Some(Role::Active | Role::Passive)));
            self.accepts.assert_one_active();
            if active.len() == 1 && settled {
                return active[0];
            }
            assert!(active.len() <= 1, "two active nodes at once: {roles:?}");
            if Instant::now() > deadline {
                panic!("no single active node within {WAIT:?}: roles {roles:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until a node other than `not` is active; returns it.
    pub fn wait_for_active_other_than(&self, not: usize) -> usize {
        wait_until(
            &format!(
                "a node other than {} to become active",
                self.nodes[not].name
            ),
            || {
                (0..self.nodes.len()).find(|&i| {
                    i != not
                        && self.nodes[i].child.is_some()
                        && self.nodes[i].status().is_ok_and(|s| s.role == Role::Active)
                })
            },
        )
    }

    /// Every node's log, for a failing test.
    pub fn logs(&self) -> String {
        let mut all = String::new();
        for node in &self.nodes {
            all.push_str(&format!("===== {} ({})\n", node.name, node.log.display()));
            all.push_str(&fs::read_to_string(&node.log).unwrap_or_default());
        }
        all
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill(libc::SIGKILL);
        }
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        } else if !self.accepts.overlaps().is_empty() {
            // Every test on a cluster checks invariant 1, whatever else it checks.
            eprintln!("{}", self.logs());
            self.accepts.assert_one_active();
        }
    }
}

impl Node {
    /// Starts this node's lockd; its stderr goes to the node's log (appended, across restarts).
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} already running", self.name);
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut command = Command::new(&bins().lockd);
        command
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "info")
            // As under systemd: lockd must not hand this to brokerd.
            .env("NOTIFY_SOCKET", self.log.with_extension("notify"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if let Some(mask) = self.umask {
            // SAFETY: umask(2) in the child between fork and exec; async-signal-safe.
            unsafe {
                command.pre_exec(move || {
                    libc::umask(mask as libc::mode_t);
                    Ok(())
                });
            }
        }
        let child = command.spawn().expect("spawn lockd");
        self.child = Some(child);
        let socket = self.socket.clone();
        wait_until(&format!("{} to serve its socket", self.name), || {
            std::os::unix::net::UnixStream::connect(&socket).ok()
        });
    }

    /// Runs this (stopped) node's lockd expecting it to refuse to start; returns its exit code
    /// and stderr. Panics if it is still running after [`WAIT`].
    pub fn refused_start(&self) -> (Option<i32>, String) {
        let mut child = Command::new(&bins().lockd)
            .arg("--config")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn lockd");
        let deadline = Instant::now() + WAIT;
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{} started instead of refusing", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Points this (stopped) node at another path to the shared directory, e.g. its own mount
    /// of it.
    pub fn set_shared_dir(&mut self, path: &std::path::Path) {
        let text = fs::read_to_string(&self.config).unwrap();
        let text: String = text
            .lines()
            .map(|line| {
                if line.starts_with("shared_dir = ") {
                    format!("shared_dir = \"{}\"\n", path.display())
                } else {
                    format!("{line}\n")
                }
            })
            .collect();
        fs::write(&self.config, text).unwrap();
    }

    /// Sends `signal` to lockd and, for SIGKILL, reaps it.
    pub fn kill(&mut self, signal: i32) {
        if let Some(child) = &mut self.child {
            // SAFETY: kill(2) on our own child's pid; no memory involved.
            unsafe { libc::kill(child.id() as i32, signal) };
            if signal == libc::SIGKILL {
                let _ = child.wait();
                self.child = None;
            }
        }
    }

    /// Waits for lockd to exit (after a signal) and returns its exit code.
    pub fn wait_exit(&mut self) -> Option<i32> {
        let mut child = self.child.take().expect("node not running");
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("{} did not exit within {WAIT:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Runs ctl against this node.
    pub fn ctl(&self, args: &[&str]) -> Output {
        self.ctl_command(args).output().expect("run ctl")
    }

    /// A ctl command against this node, to adjust (e.g. run as another user) before running.
    pub fn ctl_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&bins().ctl);
        cmd.arg("--socket").arg(&self.socket).args(args);
        cmd
    }

    /// `ctl status --json`.
    pub fn status(&self) -> anyhow::Result<Status> {
        let out = self.ctl(&["status", "--json"]);
        if !out.status.success() {
            bail!("ctl status: {}", String::from_utf8_lossy(&out.stderr));
        }
        serde_json::from_slice(&out.stdout).context("parse ctl status --json")
    }

    /// Waits until this node reports `role`.
    pub fn wait_for_role(&self, role: Role) -> Status {
        wait_until(&format!("{} to become {role}", self.name), || {
            self.status().ok().filter(|s| s.role == role)
        })
    }

    /// This node's STOMP address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

/// What a benchmark runs: `--rounds N` of each `--mode` (one of `modes`, or `both`).
pub struct BenchOptions {
    pub rounds: usize,
    pub modes: Vec<&'static str>,
}

impl BenchOptions {
    /// Parses the command line of benchmark `name`; `Err` is the message to print.
    pub fn parse(name: &str, rounds: usize, modes: [&'static str; 2]) -> Result<Self, String> {
        let mut options = BenchOptions {
            rounds,
            modes: modes.to_vec(),
        };
        let usage = format!(
            "usage: {name} [--rounds N] [--mode {}|{}|both]",
            modes[0], modes[1]
        );
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--rounds" => {
                    options.rounds = args
                        .next()
                        .and_then(|n| n.parse().ok())
                        .filter(|n| *n > 0)
                        .ok_or("--rounds needs a positive number")?;
                }
                "--mode" => {
                    options.modes = match args.next().as_deref() {
                        Some("both") => modes.to_vec(),
                        Some(mode) if modes.contains(&mode) => {
                            modes.into_iter().filter(|m| *m == mode).collect()
                        }
                        _ => return Err(usage),
                    }
                }
                "-h" | "--help" => return Err(usage),
                other => return Err(format!("unknown argument {other:?}; {usage}")),
            }
        }
        Ok(options)
    }

    /// [`BenchOptions::parse`], or the message on stderr and exit code 2.
    pub fn parse_or_exit(name: &str, rounds: usize, modes: [&'static str; 2]) -> Self {
        BenchOptions::parse(name, rounds, modes).unwrap_or_else(|e| {
            eprintln!("{name}: {e}");
            std::process::exit(2);
        })
    }
}

/// Prints one mode's min/median/max line (with its target, if it has one) and returns them
/// as the JSON object the benchmarks print at the end. Sorts the samples.
pub fn summarize(mode: &str, samples: &mut [f64], target_ms: Option<u64>) -> serde_json::Value {
    let (min, median, max) = min_median_max(samples);
    let target = target_ms.map_or(String::new(), |t| format!(" (target at most {t} ms)"));
    println!(
        "{mode:8} {} rounds: min {min:.1} ms, median {median:.1} ms, max {max:.1} ms{target}",
        samples.len()
    );
    let mut json = serde_json::json!({"rounds": samples.len(), "min_ms": min, "median_ms": median, "max_ms": max});
    if let Some(target_ms) = target_ms {
        json["target_ms"] = target_ms.into();
    }
    json
}

/// (min, median, max) of a benchmark's samples; sorts them. Panics on none.
pub fn min_median_max(samples: &mut [f64]) -> (f64, f64, f64) {
    samples.sort_by(f64::total_cmp);
    let n = samples.len();
    let median = if n % 2 == 1 {
        samples[n / 2]
    } else {
        (samples[n / 2 - 1] + samples[n / 2]) / 2.0
    };
    (samples[0], median, samples[n - 1])
}

/// Polls `probe` until it returns something, for at most [`WAIT`].
pub fn wait_until<T>(what: &str, probe: impl FnMut() -> Option<T>) -> T {
    wait_until_every(what, Duration::from_millis(10), probe)
}

/// [`wait_until`], polling every `every` (benchmarks that time what they observe poll fast).
pub fn wait_until_every<T>(what: &str, every: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        if Instant::now() > deadline {
            panic!("timed out after {WAIT:?} waiting for {what}");
        }
        std::thread::sleep(every);
    }
}

/// Runs `check` (which asserts) every 50 ms for `span`: for a state that must hold throughout,
/// not only once.
pub fn throughout(span: Duration, mut check: impl FnMut()) {
    let end = Instant::now() + span;
    while Instant::now() < end {
        check();
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends a STOMP CONNECT and returns the broker's first frame (up to its NUL), or an error if
/// the port refuses or the broker does not answer within `timeout`.
pub fn stomp_connect(addr: SocketAddr, timeout: Duration) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.write_all(b"CONNECT\naccept-version:1.2\nhost:localhost\n\n\0")?;
    read_frame(&mut stream)
}

/// Reads one STOMP frame up to its NUL, skipping heart-beat newlines before it.
pub fn read_frame(stream: &mut impl Read) -> anyhow::Result<String> {
    let mut frame = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        if stream.read(&mut byte)? == 0 {
            bail!("connection closed after {} bytes", frame.len());
        }
        match byte[0] {
            0 => return Ok(String::from_utf8_lossy(&frame).into_owned()),
            b'\n' if frame.is_empty() => {}
            b => frame.push(b),
        }
        if frame.len() > 1 << 20 {
            bail!("frame longer than 1 MiB");
        }
    }
}

/// Whether a broker answers CONNECT with CONNECTED at `addr` right now.
pub fn answers_stomp(addr: SocketAddr) -> bool {
    stomp_connect(addr, Duration::from_secs(2)).is_ok_and(|f| f.starts_with("CONNECTED"))
}

/// A `kB` field of `/proc/PID/status` (`VmRSS` resident, `VmHWM` peak resident), in KiB: the
/// benchmarks' memory figures.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Whether process `pid` is gone (or a zombie nobody reaped yet).
pub fn process_gone(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// Whether process `pid` is gone or can never run again: SIGKILL is pending (a process blocked
/// in an uninterruptible filesystem call, e.g. a FUSE request its stopped daemon already read,
/// dies the moment the call returns, without running another instruction of its own).
pub fn process_gone_or_killed(pid: u32) -> bool {
    const SIGKILL_BIT: u64 = 1 << (libc::SIGKILL - 1);
    process_gone(pid)
        || fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|status| {
            status.lines().any(|line| {
                line.strip_prefix("ShdPnd:")
                    .or_else(|| line.strip_prefix("SigPnd:"))
                    .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
                    .is_some_and(|mask| mask & SIGKILL_BIT != 0)
            })
        })
}

/// Runs a command as `uid` with primary group `gid` and exactly the supplementary `groups`
/// (tests that need "somebody else" while running as root).
pub fn as_user(mut cmd: Command, uid: u32, gid: u32, groups: &[u32]) -> Command {
    let groups: Vec<libc::gid_t> = groups.to_vec();
    // SAFETY: runs in the forked child before exec; setgroups/setgid/setuid are
    // async-signal-safe and `groups` was allocated before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                || libc::setgid(gid) != 0
                || libc::setuid(uid) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

// ---- Client programs run beside a cluster (e.g. the stomp.py scenarios in tests/python) ----

/// Bound on one whole client scenario; each of its own waits is bounded more tightly.
pub const SCENARIO_TIMEOUT: Duration = Duration::from_secs(180);

/// A client program a test runs against a cluster. Its stdout arrives line by line, so the
/// test can act on what it prints (kill a node when it prints `KILL`), and everything it wrote
/// to stdout and stderr is kept for a failing test's message. Killed when dropped.
pub struct ClientProcess {
    what: String,
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    transcript: std::sync::Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl ClientProcess {
    /// Starts `cmd` with stdin closed and stdout and stderr captured; `what` names it in
    /// failures.
    pub fn spawn(what: &str, mut cmd: Command) -> ClientProcess {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {what} ({cmd:?}): {e}"));
        let transcript = std::sync::Arc::new(Mutex::new(String::new()));
        let (tx, lines) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let out_transcript = std::sync::Arc::clone(&transcript);
        let err_transcript = std::sync::Arc::clone(&transcript);
        let readers = vec![
            std::thread::spawn(move || {
                for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
                    let Ok(line) = line else { break };
                    lock_text(&out_transcript).push_str(&format!("{line}\n"));
                    // The receiver may be gone (the test stopped listening); keep reading so
                    // the client never blocks on a full pipe.
                    let _ = tx.send(line);
                }
            }),
            std::thread::spawn(move || {
                for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)) {
                    let Ok(line) = line else { break };
                    lock_text(&err_transcript).push_str(&format!("{line}\n"));
                }
            }),
        ];
        ClientProcess {
            what: what.to_string(),
            child,
            lines,
            transcript,
            readers,
        }
    }

    /// Waits at most [`WAIT`] for the client to print `line` (surrounding blanks ignored);
    /// panics with its output if it does not, or exits first.
    pub fn wait_for_line(&mut self, line: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(got) if got.trim() == line => return,
                Ok(_) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!(
                    "{} did not print {line:?} within {WAIT:?}; its output:\n{}",
                    self.what,
                    self.transcript()
                ),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().ok();
                    panic!(
                        "{} ended ({status:?}) without printing {line:?}; its output:\n{}",
                        self.what,
                        self.transcript()
                    )
                }
            }
        }
    }

    /// Waits for a client scenario to end, within [`SCENARIO_TIMEOUT`], and asserts it passed
    /// (exit status 0: every check it made held), with its output if it did not.
    pub fn assert_passes(mut self) {
        let status = self.finish(SCENARIO_TIMEOUT);
        let (what, transcript) = (&self.what, self.transcript());
        match status {
            Some(status) if status.success() => print!("{transcript}"),
            Some(status) => panic!("{what} failed ({status}); its output:\n{transcript}"),
            None => {
                panic!("{what} still running after {SCENARIO_TIMEOUT:?}; its output:\n{transcript}")
            }
        }
    }

    /// Waits at most `timeout` for the client to exit (SIGKILLs it after that) and returns its
    /// exit status, or None if it had to be killed.
    pub fn finish(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        let status = loop {
            match self.child.try_wait().expect("wait for a client process") {
                Some(status) => break Some(status),
                None if Instant::now() > deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break None;
                }
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        // The pipes close with the process: the readers have the whole output once joined.
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        status
    }

    /// Everything the client printed so far, stdout and stderr interleaved by line.
    pub fn transcript(&self) -> String {
        lock_text(&self.transcript).clone()
    }
}

impl Drop for ClientProcess {
    fn drop(&mut self) {
        // Already reaped after `finish`; then both calls fail harmlessly.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Locks a transcript even if a reader thread panicked while holding it.
fn lock_text(text: &Mutex<String>) -> std::sync::MutexGuard<'_, String> {
    text.lock().unwrap_or_else(|e| e.into_inner())
}

// ---- Failover clients (the no-loss tests) ----

/// `python3 -u tests/python/SCRIPT ARGS... ADDRS...`: one of the stomp.py scenarios, as a client
/// process. Panics, saying how to install it, when python3 cannot import stomp.py.
pub fn stomp_py(
    script: &str,
    args: &[&str],
    addrs: impl IntoIterator<Item = SocketAddr>,
) -> ClientProcess {
    static CHECKED: OnceLock<Result<(), String>> = OnceLock::new();
    let checked = CHECKED.get_or_init(|| {
        let out = Command::new("python3")
            .args(["-c", "import stomp"])
            .output()
            .map_err(|e| format!("cannot run python3: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    });
    if let Err(e) = checked {
        panic!(
            "these tests need stomp.py: python3 -m pip install 'stomp.py>=8' (tests/run-all.sh \
             does it)\n{e}"
        );
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join(script);
    let mut cmd = Command::new("python3");
    // No __pycache__ left in the source tree.
    cmd.env("PYTHONDONTWRITEBYTECODE", "1");
    cmd.arg("-u").arg(path).args(args);
    cmd.args(addrs.into_iter().map(|a| a.to_string()));
    ClientProcess::spawn(script, cmd)
}

/// A failover URL listing every node of `cluster` in order, reconnecting quickly and forever:
/// `failover:(tcp://127.0.0.1:P1,...)?initialReconnectDelay=5&maxReconnectDelay=100&...`.
pub fn failover_url(cluster: &Cluster) -> String {
    let addresses: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| format!("tcp://{}", n.addr()))
        .collect();
    format!(
        "failover:({})?initialReconnectDelay=5&maxReconnectDelay=100&randomize=false&maxReconnectAttempts=-1",
        addresses.join(",")
    )
}

/// Runs `work` with a connected failover client on a runtime of its own.
pub fn with_client<T>(url: &str, work: impl AsyncFnOnce(&stomp_client::Client) -> T) -> T {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = stomp_client::Client::connect(url, stomp_client::Options::default())
            .await
            .unwrap();
        let result = work(&client).await;
        let _ = tokio::time::timeout(WAIT, client.disconnect()).await;
        result
    })
}

/// Runs `cmd` with stdout and stderr on a new pseudo-terminal (120 columns, 40 rows) and stdin
/// closed; returns its exit status and everything it wrote to the terminal, or `None` for the
/// status when it was still running after `timeout` (then it was killed). For the terminal
/// behaviour of ctl (redrawn screens, progress bars).
pub fn run_in_pty(
    mut cmd: Command,
    timeout: Duration,
) -> (Option<std::process::ExitStatus>, String) {
    use std::os::fd::{FromRawFd, OwnedFd};
    let (mut master, mut slave) = (-1, -1);
    let size = libc::winsize {
        ws_row: 40,
        ws_col: 120,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: openpty writes two descriptors into the ints we pass; no name buffer, default
    // termios, a window size that lives across the call.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &size,
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened by openpty and are owned by nobody else.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave.try_clone().unwrap())
        .spawn()
        .expect("spawn a command on a pseudo-terminal");
    // Only the child holds the terminal now (the command kept copies of it until dropped):
    // reads end (EIO) once it has exited.
    drop(cmd);
    drop(slave);
    let reader = std::thread::spawn(move || {
        let mut file = fs::File::from(master);
        let mut all = Vec::new();
        let mut chunk = [0u8; 4096];
        while let Ok(n) = file.read(&mut chunk) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&chunk[..n]);
        }
        String::from_utf8_lossy(&all).into_owned()
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait().expect("wait for the command") {
            Some(status) => break Some(status),
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    (status, reader.join().expect("the terminal reader"))
}

/// A finished command's stdout, as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A finished command's stderr, as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Sends one receipted SEND with `headers` (a scheduled one: its receipt means the schedule is
/// durable) through the failover URL `url`, on a runtime of its own; returns when it was sent.
pub fn send_receipted(url: &str, destination: &str, headers: &[(&str, &str)]) -> Instant {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        let options = stomp_client::Options::default();
        let client = stomp_client::Client::connect(url, options)
            .await
            .expect("connect through the failover URL");
        let sent = Instant::now();
        let receipt = client
            .send(destination, headers, "scheduled")
            .await
            .expect("the SEND queued");
        tokio::time::timeout(WAIT, receipt)
            .await
            .expect("the receipt within WAIT")
            .expect("a receipt");
        let _ = tokio::time::timeout(WAIT, client.disconnect()).await;
        sent
    })
}

/// SIGKILLs the active node `active`'s lockd, waits for another node to take over, restarts
/// the killed node and waits until it is passive again. Returns the new active node's index.
pub fn kill_active_and_restart(cluster: &mut Cluster, active: usize) -> usize {
    cluster.nodes[active].kill(libc::SIGKILL);
    let next = cluster.wait_for_active_other_than(active);
    cluster.nodes[active].start();
    let settled = cluster.wait_for_one_active();
    assert_eq!(
        settled, next,
        "the active node changed again after a restart"
    );
    next
}
