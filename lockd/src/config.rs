//! lockd's settings: a TOML file, flags for quick use, defaults in code, all checked at start.
//!
//! Every check names the setting and what to do about it, so a node that will not start says so
//! at once instead of failing later in a half-started state.

use crate::sys::users;
use serde::Deserialize;
use shared_proto::endpoint::{Endpoint, Transport};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Settings as written in the TOML file; every field has a default in code.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// This node's name, unique in the cluster.
    pub node: String,
    /// The shared directory (cluster filesystem mount).
    pub shared_dir: PathBuf,
    /// Unix socket ctl talks to.
    pub socket: PathBuf,
    /// Permission bits of the ctl socket, e.g. "0660": who may connect at all.
    pub socket_mode: String,
    /// Group that may change anything through the socket (failover), besides root and lockd's
    /// user; the socket's group is set to it.
    pub admin_group: Option<String>,
    /// STOMP listeners brokerd opens when active: "host:port" or "tcp://host:port" for plain
    /// STOMP, "ssl://host:port" for STOMP over TLS (needs tls_cert_file and tls_key_file).
    pub listen: Vec<String>,
    /// PEM certificate chain for the ssl:// listeners, passed to brokerd (`--tls-cert-file`),
    /// which reads it again on `systemctl reload`.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of tls_cert_file (`--tls-key-file`); brokerd's user must be able to read
    /// it.
    pub tls_key_file: Option<PathBuf>,
    /// PEM CA certificates: when set, ssl:// clients must present a certificate signed by one of
    /// them (`--tls-client-ca-file`).
    pub tls_client_ca_file: Option<PathBuf>,
    /// The brokerd binary; default: `brokerd` beside lockd's own executable.
    pub broker_binary: Option<PathBuf>,
    /// User and group brokerd runs as when lockd runs as root (default: `nobody`).
    pub broker_user: Option<String>,
    pub broker_group: Option<String>,
    /// Extra brokerd options (`brokerd --help`), e.g. ["--users-file", "/etc/lockd/users.toml"].
    pub broker_args: Vec<String>,
    /// How often a passive tries the lock.
    pub lock_poll_ms: u64,
    /// How often the active verifies it still holds the lock.
    pub keepalive_ms: u64,
    /// A keepalive that has not completed for this long fences the broker. Must stay well below
    /// the shared filesystem's lease (90 s on NFSv4), so the broker is dead before another node
    /// can be granted the lock.
    pub fence_timeout_ms: u64,
    /// After `ctl failover`, how long this node stays out of the competition, unless another
    /// node takes the lock sooner.
    pub failover_hold_off_ms: u64,
    /// How long brokerd may take to open its store and listeners.
    pub broker_ready_timeout_ms: u64,
    /// How long a graceful stop of brokerd may take before it is killed.
    pub broker_stop_timeout_ms: u64,
    /// How long a ready brokerd may leave a liveness ping unanswered before it is SIGKILLed and
    /// replaced like a crashed one (stopped, deadlocked): DESIGN invariant 7.
    pub broker_liveness_timeout_ms: u64,
    /// Restarts in place of a crashed brokerd allowed within `restart_window_ms`; past that the
    /// node releases the lock so a peer can try.
    pub max_restarts: u32,
    pub restart_window_ms: u64,
    /// A holder whose heartbeat is older than this is reported as stale by `ctl status` and in
    /// the log: its lockd may be dead while its lock lingers (NFSv3), or its host stalled.
    /// Longer than fence_timeout_ms, after which a healthy holder has fenced itself.
    pub stale_holder_ms: u64,
    /// Whether lockd prepares a shared directory that has no marker yet (as `ctl init` does),
    /// so that a package's install is: write the config, start the unit.
    pub init: Init,
    /// What to do when the lock self-test (`ctl check-lock`) fails at start.
    pub lock_check: LockCheck,
    /// A second mount of the shared directory (as `ctl check-lock --other-path` takes). Through
    /// one path alone a node cannot see how late its changes reach other nodes; with this, the
    /// start-up lock check measures that lag, and a lag above the takeover grace lengthens the
    /// grace (DESIGN invariant 1: a stale broker must see a new epoch within it).
    pub lock_check_other_path: Option<PathBuf>,
    /// The scheduler's store (ActiveMQ's scheduler `dataDirectory`); default `scheduler/` in the
    /// shared directory. It must be on the shared directory's filesystem, or a failover loses
    /// every pending schedule: lockd and brokerd refuse to start otherwise.
    pub scheduler_dir: Option<PathBuf>,
    /// Start anyway with a `scheduler_dir` off the shared filesystem, warning in the log and in
    /// `ctl status` (one host, or schedules the operator can afford to lose).
    pub scheduler_allow_local: bool,
    /// HOST:PORT where lockd serves its own metrics at `/metrics` (Prometheus text format);
    /// off when absent.
    pub metrics_listen: Option<String>,
    /// HOST:PORT of the web console: brokerd serves it (with its `/metrics`) while this node is
    /// active; otherwise lockd answers there with a page naming the active node. Off when absent.
    pub console_listen: Option<String>,
}

/// When lockd prepares a shared directory without a marker at start. The marker is what stops a
/// node whose cluster filesystem is not mounted from locking the empty local directory beneath
/// the mount point and becoming a second active, so only an operator's choice removes that guard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Init {
    /// Refuse it: someone runs `ctl init` once per cluster.
    Never,
    /// Prepare it when it is the cluster filesystem's and not the directory beneath it: a
    /// mount point of its own, or on a network or cluster filesystem, and holding nothing but
    /// what a preparing peer puts there. Where the mount is missing, it is on the local disk
    /// and not a mount point, and lockd still refuses.
    IfMounted,
    /// Prepare it wherever it is (`--init`): one host, or an operator at a terminal.
    Always,
}

/// By hand, so that `init = true` (the likely slip) is told the three values.
impl<'de> Deserialize<'de> for Init {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = toml::Value::deserialize(deserializer)?;
        match value.as_str() {
            Some("never") => Ok(Init::Never),
            Some("if-mounted") => Ok(Init::IfMounted),
            Some("always") => Ok(Init::Always),
            _ => Err(serde::de::Error::custom(format!(
                "init = {value} is not one of \"never\", \"if-mounted\" or \"always\""
            ))),
        }
    }
}

/// lockd's answer to a shared directory whose lock failed the self-test at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockCheck {
    /// Refuse to start: two nodes could both run a broker.
    Refuse,
    /// Log the failure as an error and start anyway, for an operator who has another fence.
    Warn,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node: String::new(),
            shared_dir: PathBuf::new(),
            socket: PathBuf::from("/run/lockd/lockd.sock"),
            socket_mode: "0660".into(),
            admin_group: None,
            listen: vec!["127.0.0.1:61613".into()],
            tls_cert_file: None,
            tls_key_file: None,
            tls_client_ca_file: None,
            broker_binary: None,
            broker_user: None,
            broker_group: None,
            broker_args: Vec::new(),
            lock_poll_ms: 20,
            keepalive_ms: 500,
            fence_timeout_ms: 10_000,
            failover_hold_off_ms: 5_000,
            broker_ready_timeout_ms: 30_000,
            broker_stop_timeout_ms: 10_000,
            broker_liveness_timeout_ms: 2_000,
            max_restarts: 3,
            restart_window_ms: 60_000,
            stale_holder_ms: 15_000,
            init: Init::Never,
            lock_check: LockCheck::Refuse,
            lock_check_other_path: None,
            scheduler_dir: None,
            scheduler_allow_local: false,
            metrics_listen: None,
            console_listen: None,
        }
    }
}

/// Flags that override the file, for running a node without one.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub node: Option<String>,
    pub shared_dir: Option<PathBuf>,
    pub socket: Option<PathBuf>,
    pub listen: Vec<String>,
    pub broker_user: Option<String>,
    pub broker_liveness_timeout_ms: Option<u64>,
    /// `--init`: prepare the shared directory wherever it is ([`Init::Always`]).
    pub init: bool,
}

/// A checked configuration with everything resolved to what the code uses.
#[derive(Debug, Clone)]
pub struct Settings {
    pub node: String,
    pub shared_dir: PathBuf,
    pub socket: PathBuf,
    pub socket_mode: u32,
    /// (name, gid)
    pub admin_group: Option<(String, u32)>,
    pub listen: Vec<String>,
    /// brokerd's `--tls-*-file` options, checked: present when a listener is ssl://.
    pub tls_args: Vec<String>,
    pub broker_binary: PathBuf,
    pub broker_credentials: Option<(u32, u32)>,
    pub broker_args: Vec<String>,
    pub lock_poll: Duration,
    pub keepalive: Duration,
    pub fence_timeout: Duration,
    pub failover_hold_off: Duration,
    pub broker_ready_timeout: Duration,
    pub broker_stop_timeout: Duration,
    pub broker_liveness_timeout: Duration,
    pub max_restarts: u32,
    pub restart_window: Duration,
    pub stale_holder: Duration,
    pub init: Init,
    pub lock_check: LockCheck,
    pub lock_check_other_path: Option<PathBuf>,
    /// The scheduler's store, absolute: `scheduler_dir`, or the shared directory's `scheduler/`.
    pub scheduler_dir: PathBuf,
    pub scheduler_allow_local: bool,
    /// Where lockd serves `/metrics`, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// The web console's address (brokerd's while active, lockd's page otherwise), if any.
    pub console_listen: Option<SocketAddr>,
}

impl Config {
    /// Reads a TOML file.
    pub fn from_file(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read config file {}: {e}", path.display()))?;
        Config::from_toml(&text)
            .map_err(|e| anyhow::anyhow!("config file {}: {e:#}", path.display()))
    }

    /// Parses TOML text.
    pub fn from_toml(text: &str) -> anyhow::Result<Config> {
        Ok(toml::from_str(text)?)
    }

    /// Applies flags on top of the file.
    pub fn apply(&mut self, overrides: Overrides) {
        if let Some(node) = overrides.node {
            self.node = node;
        }
        if let Some(dir) = overrides.shared_dir {
            self.shared_dir = dir;
        }
        if let Some(socket) = overrides.socket {
            self.socket = socket;
        }
        if !overrides.listen.is_empty() {
            self.listen = overrides.listen;
        }
        if let Some(user) = overrides.broker_user {
            self.broker_user = Some(user);
        }
        if let Some(ms) = overrides.broker_liveness_timeout_ms {
            self.broker_liveness_timeout_ms = ms;
        }
        if overrides.init {
            self.init = Init::Always;
        }
    }

    /// Checks every setting that can be checked without touching the shared directory, and
    /// resolves names to ids. Errors name the setting and what to fix.
    pub fn validate(self) -> Result<Settings, String> {
        if self.node.is_empty() {
            return Err(
                "node is not set: give --node NAME or `node = \"...\"` in the config".into(),
            );
        }
        if !self
            .node
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            || self.node.len() > 64
        {
            return Err(format!(
                "node {:?}: use at most 64 letters, digits, '-', '_' or '.'",
                self.node
            ));
        }
        if self.shared_dir.as_os_str().is_empty() {
            return Err(
                "shared_dir is not set: give --shared-dir DIR or `shared_dir = \"...\"`".into(),
            );
        }
        let shared_dir = std::path::absolute(&self.shared_dir)
            .map_err(|e| format!("shared_dir {}: {e}", self.shared_dir.display()))?;
        if self.listen.is_empty() {
            return Err("listen is empty: give at least one --listen HOST:PORT".into());
        }
        let stomp = (self.listen.iter())
            .map(|entry| check_listen(entry))
            .collect::<Result<Vec<_>, _>>()?;
        let tls_args = tls_args(
            &self.listen,
            self.tls_cert_file.as_deref(),
            self.tls_key_file.as_deref(),
            self.tls_client_ca_file.as_deref(),
        )?;
        let socket_mode = u32::from_str_radix(self.socket_mode.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| {
                format!(
                    "socket_mode {:?} is not an octal permission like \"0660\"",
                    self.socket_mode
                )
            })?;
        match self.socket.parent() {
            Some(parent) if parent.as_os_str().is_empty() || parent.is_dir() => {}
            _ => {
                return Err(format!(
                    "socket {}: its directory does not exist; create it or choose another --socket",
                    self.socket.display()
                ))
            }
        }
        let admin_group = match self.admin_group {
            Some(name) => {
                let gid = users::lookup_group(&name).map_err(|e| format!("admin_group: {e}"))?;
                Some((name, gid))
            }
            None => None,
        };
        let broker_binary = match self.broker_binary {
            Some(path) => path,
            None => std::env::current_exe()
                .map_err(|e| format!("cannot find lockd's own path to locate brokerd: {e}"))?
                .with_file_name("brokerd"),
        };
        if !is_executable(&broker_binary) {
            return Err(format!(
                "broker_binary {} is missing or not executable; build it (cargo build) or set broker_binary",
                broker_binary.display()
            ));
        }
        let broker_credentials = broker_credentials(self.broker_user, self.broker_group)?;
        for (name, value) in [
            ("lock_poll_ms", self.lock_poll_ms),
            ("keepalive_ms", self.keepalive_ms),
            ("fence_timeout_ms", self.fence_timeout_ms),
            ("broker_ready_timeout_ms", self.broker_ready_timeout_ms),
            ("broker_stop_timeout_ms", self.broker_stop_timeout_ms),
            (
                "broker_liveness_timeout_ms",
                self.broker_liveness_timeout_ms,
            ),
            ("restart_window_ms", self.restart_window_ms),
            ("stale_holder_ms", self.stale_holder_ms),
        ] {
            if value == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        if self.fence_timeout_ms <= self.keepalive_ms {
            return Err(format!(
                "fence_timeout_ms ({}) must be longer than keepalive_ms ({}): otherwise every keepalive fences the broker",
                self.fence_timeout_ms, self.keepalive_ms
            ));
        }
        if self.stale_holder_ms <= self.fence_timeout_ms {
            return Err(format!(
                "stale_holder_ms ({}) must be longer than fence_timeout_ms ({}): a holder is only stale once a healthy one would have fenced itself; raise stale_holder_ms",
                self.stale_holder_ms, self.fence_timeout_ms
            ));
        }
        let lock_check_other_path = match self.lock_check_other_path {
            Some(path) if path.is_dir() => Some(path),
            Some(path) => {
                return Err(format!(
                    "lock_check_other_path {} is not a directory: name a second mount of shared_dir, or remove the key",
                    path.display()
                ))
            }
            None => None,
        };
        let scheduler_dir = scheduler_dir(self.scheduler_dir, &shared_dir)?;
        let metrics_listen = http_listen("metrics_listen", self.metrics_listen.as_deref())?;
        let console_listen = http_listen("console_listen", self.console_listen.as_deref())?;
        if let (Some(metrics), Some(console)) = (metrics_listen, console_listen) {
            if same_port(metrics, console) {
                return Err(format!(
                    "metrics_listen {metrics} and console_listen {console} take the same address: \
                     lockd's metrics need one of their own (brokerd's are on console_listen)"
                ));
            }
        }
        // On a STOMP port, lockd's pages would answer failover clients on a passive node
        // (DESIGN invariant 5), and brokerd could not bind it when the node turns active.
        for (key, http) in [
            ("metrics_listen", metrics_listen),
            ("console_listen", console_listen),
        ] {
            if let Some(http) = http {
                if let Some(addr) = stomp.iter().find(|addr| same_port(**addr, http)) {
                    return Err(format!(
                        "{key} {http} takes the same address as the STOMP listener {addr}: give \
                         it a port of its own"
                    ));
                }
            }
        }
        // brokerd refuses a console without logins; refused here, not at every activation.
        if console_listen.is_some()
            && !(self.broker_args.iter())
                .any(|arg| arg == "--users-file" || arg.starts_with("--users-file="))
        {
            return Err(
                "console_listen needs a users file for its logins: add \"--users-file\", \"FILE\" \
                 to broker_args (README: Security)"
                    .into(),
            );
        }
        check_watchdog(
            self.keepalive_ms,
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
        )?;
        Ok(Settings {
            node: self.node,
            shared_dir,
            socket: self.socket,
            socket_mode,
            admin_group,
            listen: self.listen,
            tls_args,
            broker_binary,
            broker_credentials,
            broker_args: self.broker_args,
            lock_poll: Duration::from_millis(self.lock_poll_ms),
            keepalive: Duration::from_millis(self.keepalive_ms),
            fence_timeout: Duration::from_millis(self.fence_timeout_ms),
            failover_hold_off: Duration::from_millis(self.failover_hold_off_ms),
            broker_ready_timeout: Duration::from_millis(self.broker_ready_timeout_ms),
            broker_stop_timeout: Duration::from_millis(self.broker_stop_timeout_ms),
            broker_liveness_timeout: Duration::from_millis(self.broker_liveness_timeout_ms),
            max_restarts: self.max_restarts,
            restart_window: Duration::from_millis(self.restart_window_ms),
            stale_holder: Duration::from_millis(self.stale_holder_ms),
            init: self.init,
            lock_check: self.lock_check,
            lock_check_other_path,
            scheduler_dir,
            scheduler_allow_local: self.scheduler_allow_local,
            metrics_listen,
            console_listen,
        })
    }
}

/// Resolves `scheduler_dir` (default: the shared directory's `scheduler/`) and refuses the
/// places brokerd cannot keep a store of its own: the shared directory itself or one of its
/// control files (only lockd may change those, DESIGN invariant 8), and the message store's
/// directory or anything in it (sled takes a lock of its own on its directory). Where it is
/// mounted is checked at start, with the shared directory ([`shared_proto::placement`]).
fn scheduler_dir(configured: Option<PathBuf>, shared_dir: &Path) -> Result<PathBuf, String> {
    let layout = shared_proto::layout::Layout::new(shared_dir);
    let Some(configured) = configured else {
        return Ok(layout.scheduler());
    };
    let dir = std::path::absolute(&configured)
        .map_err(|e| format!("scheduler_dir {}: {e}", configured.display()))?;
    let shown = dir.display();
    if layout.control_paths().contains(&dir) {
        return Err(format!(
            "scheduler_dir {shown} is the shared directory or one of its control files, which only lockd may change; use a directory of its own (the default is {})",
            layout.scheduler().display()
        ));
    }
    if dir.starts_with(layout.data()) {
        return Err(format!(
            "scheduler_dir {shown} is the message store's directory {} or inside it; the scheduler needs a store of its own (the default is {})",
            layout.data().display(),
            layout.scheduler().display()
        ));
    }
    Ok(dir)
}

/// A listen entry, as brokerd's `--listen` takes it ([`Endpoint`]), resolved.
fn check_listen(entry: &str) -> Result<SocketAddr, String> {
    let endpoint: Endpoint = entry.parse().map_err(|e| format!("listen entry {e}"))?;
    resolve(&endpoint.addr).ok_or_else(|| {
        format!(
            "listen entry {entry:?}: {:?} is not an address this host can listen on (for \
             example 127.0.0.1:61613)",
            endpoint.addr
        )
    })
}

/// `HOST:PORT` as an address, the host by name if it is not an IP.
fn resolve(addr: &str) -> Option<SocketAddr> {
    (addr.parse().ok()).or_else(|| addr.to_socket_addrs().ok()?.next())
}

/// Whether two listeners would take the same port: the same address, or either on all of them.
fn same_port(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

fn http_listen(key: &str, entry: Option<&str>) -> Result<Option<SocketAddr>, String> {
    let Some(entry) = entry else { return Ok(None) };
    let addr = resolve(entry)
        .ok_or_else(|| format!("{key} {entry:?} is not HOST:PORT (for example 127.0.0.1:9571)"))?;
    if addr.port() == 0 {
        return Err(format!(
            "{key} {entry:?} has port 0: give a fixed port, which scrapers and browsers can find"
        ));
    }
    Ok(Some(addr))
}

/// brokerd's TLS options from the `tls_*_file` keys. An ssl:// listener needs a certificate and
/// its key; each file named must be a regular file. Whether the files hold a matching
/// certificate and key brokerd checks at its start (lockd has no TLS code): a node refusing
/// them fails at its first activation with brokerd's message, exit status 2.
fn tls_args(
    listen: &[String],
    cert: Option<&Path>,
    key: Option<&Path>,
    client_ca: Option<&Path>,
) -> Result<Vec<String>, String> {
    let secure = listen.iter().find(|entry| {
        entry
            .parse::<Endpoint>()
            .is_ok_and(|e| e.transport == Transport::Ssl)
    });
    let (cert, key) = match (secure, cert, key) {
        (None, None, None) if client_ca.is_none() => return Ok(Vec::new()),
        (None, _, _) => {
            return Err(
                "tls_cert_file, tls_key_file and tls_client_ca_file serve ssl://HOST:PORT \
                 listen entries, and there is none: add one, or remove the tls_* keys"
                    .into(),
            )
        }
        (Some(_), Some(cert), Some(key)) => (cert, key),
        (Some(entry), _, _) => {
            return Err(format!(
                "listen entry {entry:?} needs tls_cert_file and tls_key_file: the PEM \
                 certificate chain and private key it serves"
            ))
        }
    };
    let mut args = Vec::new();
    for (key_name, option, path) in [
        ("tls_cert_file", "--tls-cert-file", Some(cert)),
        ("tls_key_file", "--tls-key-file", Some(key)),
        ("tls_client_ca_file", "--tls-client-ca-file", client_ca),
    ] {
        let Some(path) = path else { continue };
        if !std::fs::metadata(path).is_ok_and(|m| m.is_file()) {
            return Err(format!(
                "{key_name} {} is missing or not a regular file: give the path of a PEM file",
                path.display()
            ));
        }
        args.push(option.to_owned());
        args.push(path.display().to_string());
    }
    Ok(args)
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Refuses a keepalive that cannot feed systemd's watchdog: the state machine pings it once per
/// keepalive, so a period of half the watchdog's or more lets one late tick kill a healthy node.
/// `usec` and `pid` are `WATCHDOG_USEC` and `WATCHDOG_PID`; a watchdog meant for another process
/// (`WATCHDOG_PID` not ours) is not lockd's to feed.
fn check_watchdog(keepalive_ms: u64, usec: Option<&str>, pid: Option<&str>) -> Result<(), String> {
    let Some(usec) = usec else { return Ok(()) };
    if pid.is_some_and(|pid| pid.trim() != std::process::id().to_string()) {
        return Ok(());
    }
    let usec: u64 = usec
        .trim()
        .parse()
        .map_err(|_| format!("WATCHDOG_USEC {usec:?} from systemd is not a number of microseconds; check WatchdogSec= in lockd's unit"))?;
    if usec != 0 && keepalive_ms.saturating_mul(2000) >= usec {
        return Err(format!(
            "keepalive_ms ({keepalive_ms}) must be below half of systemd's watchdog ({} ms, WatchdogSec=): lockd feeds the watchdog once per keepalive; lower keepalive_ms or raise WatchdogSec=",
            usec / 1000
        ));
    }
    Ok(())
}

/// Who brokerd runs as when lockd is root and the config names nobody: an unprivileged user
/// every Debian system has, so the README's first command works as root too.
const DEFAULT_BROKER_USER: &str = "nobody";

/// As root, brokerd must run as someone else: a broker that could write the shared directory's
/// root could delete `lock` and hand a second node the lock while it still runs. A lockd that is
/// not root may name a broker_user when it holds CAP_SETUID, CAP_SETGID and CAP_KILL (DESIGN.md).
fn broker_credentials(
    user: Option<String>,
    group: Option<String>,
) -> Result<Option<(u32, u32)>, String> {
    let root = users::effective_uid() == 0;
    match (root, user) {
        (false, None) => {
            if group.is_some() {
                return Err("broker_group is set but lockd is not root, so it cannot change groups; remove it or run lockd as root".into());
            }
            Ok(None)
        }
        (false, Some(user)) => {
            let missing = users::missing_broker_capabilities()
                .map_err(|e| format!("cannot read lockd's capabilities (capget): {e}"))?;
            if !missing.is_empty() {
                return Err(format!(
                    "broker_user = {user:?} needs lockd to run as root or with CAP_SETUID, CAP_SETGID and CAP_KILL (missing: {}); grant them (e.g. AmbientCapabilities= in lockd's unit) or remove broker_user to run brokerd as lockd's own user",
                    missing.join(", ")
                ));
            }
            unprivileged_broker(&user, group).map(Some)
        }
        (true, None) => {
            tracing::warn!(
                broker_user = DEFAULT_BROKER_USER,
                "lockd runs as root and broker_user is not set: brokerd runs as {DEFAULT_BROKER_USER}; \
                 set broker_user to a dedicated unprivileged user in production"
            );
            broker_credentials(Some(DEFAULT_BROKER_USER.into()), group)
        }
        (true, Some(user)) => unprivileged_broker(&user, group).map(Some),
    }
}

/// (uid, gid) of the broker user, which must not be root.
fn unprivileged_broker(user: &str, group: Option<String>) -> Result<(u32, u32), String> {
    let (uid, primary) = users::lookup_user(user).map_err(|e| format!("broker_user: {e}"))?;
    if uid == 0 {
        return Err("broker_user must not be root".into());
    }
    Ok((uid, broker_gid(group, primary)?))
}

/// brokerd's group: `broker_group`, else the broker user's primary group; never root's, whose
/// group can write what root's group may (the shared directory's root-group paths among them).
fn broker_gid(group: Option<String>, primary: u32) -> Result<u32, String> {
    let gid = match &group {
        Some(group) => users::lookup_group(group).map_err(|e| format!("broker_group: {e}"))?,
        None => primary,
    };
    if gid != 0 {
        return Ok(gid);
    }
    Err(match group {
        Some(group) => format!(
            "broker_group = {group:?} is root's group (gid 0): set broker_group to an unprivileged group"
        ),
        None => "broker_user's primary group is root's group (gid 0): set broker_group to an unprivileged group, or choose another broker_user".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_parses() {
        let text = include_str!("../../systemd/lockd.example.toml");
        let config = Config::from_toml(text).unwrap();
        assert_eq!(config.node, "node1");
        assert_eq!(config.keepalive_ms, 500);
        assert!(config.scheduler_dir.is_none() && !config.scheduler_allow_local);
        assert_eq!(
            config.init,
            Init::IfMounted,
            "the package installs in three steps"
        );
    }

    #[test]
    fn init_is_never_unless_set_and_names_its_values() {
        assert_eq!(Config::default().init, Init::Never);
        for (text, init) in [
            ("never", Init::Never),
            ("if-mounted", Init::IfMounted),
            ("always", Init::Always),
        ] {
            let config = Config::from_toml(&format!("init = \"{text}\"\n")).unwrap();
            assert_eq!(config.init, init);
        }
        let err = format!("{:#}", Config::from_toml("init = true\n").unwrap_err());
        assert!(err.contains("if-mounted"), "{err}");
        let mut config = Config::from_toml("init = \"never\"\n").unwrap();
        config.apply(Overrides {
            init: true,
            ..Overrides::default()
        });
        assert_eq!(config.init, Init::Always, "--init overrides the file");
    }

    #[test]
    fn without_broker_user_a_root_lockd_runs_brokerd_as_nobody() {
        let expected = (users::effective_uid() == 0).then(|| users::lookup_user("nobody").unwrap());
        assert_eq!(broker_credentials(None, None).unwrap(), expected);
    }

    #[test]
    fn unknown_settings_are_refused_by_name() {
        let err = Config::from_toml("node = \"a\"\nkeepalive = 5\n").unwrap_err();
        assert!(
            format!("{err:#}").contains("unknown field `keepalive`"),
            "{err:#}"
        );
    }

    #[test]
    fn ssl_listeners_need_certificate_files_that_exist() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, "").unwrap();
        std::fs::write(&key, "").unwrap();
        let listen = |entries: &[&str]| entries.iter().map(|e| e.to_string()).collect::<Vec<_>>();
        let ssl = listen(&["tcp://127.0.0.1:61613", "ssl://127.0.0.1:61614"]);
        for entry in ["127.0.0.1:1", "tcp://127.0.0.1:1", "ssl://localhost:1"] {
            check_listen(entry).unwrap_or_else(|e| panic!("{entry}: {e}"));
        }
        assert!(check_listen("udp://127.0.0.1:1")
            .unwrap_err()
            .contains("unknown scheme \"udp\""));
        assert_eq!(
            tls_args(&listen(&["127.0.0.1:1"]), None, None, None),
            Ok(vec![])
        );
        let err = tls_args(&ssl, Some(&cert), None, None).unwrap_err();
        assert!(
            err.contains("needs tls_cert_file and tls_key_file"),
            "{err}"
        );
        let err = tls_args(&listen(&["127.0.0.1:1"]), Some(&cert), Some(&key), None).unwrap_err();
        assert!(err.contains("there is none"), "{err}");
        let missing = dir.path().join("ca.pem");
        let err = tls_args(&ssl, Some(&cert), Some(&key), Some(&missing)).unwrap_err();
        assert!(
            err.contains("tls_client_ca_file") && err.contains("ca.pem"),
            "{err}"
        );
        let err = tls_args(&ssl, Some(dir.path()), Some(&key), None).unwrap_err();
        assert!(
            err.contains("tls_cert_file") && err.contains("not a regular file"),
            "{err}"
        );
        let args = tls_args(&ssl, Some(&cert), Some(&key), Some(&cert)).unwrap();
        assert_eq!(
            args,
            [
                "--tls-cert-file",
                &cert.display().to_string(),
                "--tls-key-file",
                &key.display().to_string(),
                "--tls-client-ca-file",
                &cert.display().to_string(),
            ]
        );
    }

    #[test]
    fn http_addresses_are_checked_and_passed_on_resolved() {
        let base = || Config {
            node: "n1".into(),
            shared_dir: "/tmp".into(),
            socket: "/tmp/x.sock".into(),
            broker_binary: Some("/bin/sh".into()),
            broker_user: (users::effective_uid() == 0).then(|| "nobody".into()),
            broker_args: vec!["--users-file".into(), "/etc/lockd/users.toml".into()],
            ..Config::default()
        };
        let settings = Config {
            metrics_listen: Some("127.0.0.1:9571".into()),
            console_listen: Some("localhost:8161".into()),
            ..base()
        }
        .validate()
        .unwrap();
        assert_eq!(
            settings.metrics_listen,
            Some("127.0.0.1:9571".parse().unwrap())
        );
        assert_eq!(settings.console_listen.map(|a| a.port()), Some(8161));
        assert_eq!(base().validate().unwrap().metrics_listen, None);
        for (metrics, console, named) in [
            (
                Some("nonsense"),
                None,
                "metrics_listen \"nonsense\" is not HOST:PORT",
            ),
            (
                None,
                Some("0.0.0.0:0"),
                "console_listen \"0.0.0.0:0\" has port 0",
            ),
            (
                Some("127.0.0.1:80"),
                Some("127.0.0.1:80"),
                "the same address",
            ),
            (Some("0.0.0.0:80"), Some("127.0.0.1:80"), "the same address"),
            // The default STOMP listener is 127.0.0.1:61613.
            (
                Some("0.0.0.0:61613"),
                None,
                "metrics_listen 0.0.0.0:61613 takes the same address as the STOMP listener",
            ),
            (
                None,
                Some("127.0.0.1:61613"),
                "console_listen 127.0.0.1:61613 takes the same address as the STOMP listener",
            ),
        ] {
            let err = Config {
                metrics_listen: metrics.map(Into::into),
                console_listen: console.map(Into::into),
                ..base()
            }
            .validate()
            .unwrap_err();
            assert!(err.contains(named), "{err}");
        }
        let err = Config {
            console_listen: Some("127.0.0.1:8161".into()),
            broker_args: Vec::new(),
            ..base()
        }
        .validate()
        .unwrap_err();
        assert!(err.contains("console_listen needs a users file"), "{err}");
        // The example's commented keys, uncommented, are valid settings.
        let example = include_str!("../../systemd/lockd.example.toml");
        for key in ["metrics_listen", "console_listen"] {
            let line = example
                .lines()
                .find_map(|l| l.strip_prefix("# ").filter(|l| l.starts_with(key)))
                .unwrap_or_else(|| panic!("{key} is not in the example config"));
            let config = Config::from_toml(&format!("node = \"n1\"\n{line}\n")).unwrap();
            assert!(config.metrics_listen.is_some() || config.console_listen.is_some());
        }
    }

    #[test]
    fn validation_names_the_setting_to_fix() {
        let base = || Config {
            node: "n1".into(),
            shared_dir: "/tmp".into(),
            socket: "/tmp/x.sock".into(),
            broker_binary: Some("/bin/sh".into()),
            broker_user: (users::effective_uid() == 0).then(|| "nobody".into()),
            ..Config::default()
        };
        let err = Config {
            node: String::new(),
            ..base()
        }
        .validate()
        .unwrap_err();
        assert!(err.contains("--node"), "{err}");
        let err = Config {
            listen: vec!["nonsense".into()],
            ..base()
        }
        .validate()
        .unwrap_err();
        assert!(err.contains("not HOST:PORT"), "{err}");
        let err = Config {
            fence_timeout_ms: 100,
            ..base()
        }
        .validate()
        .unwrap_err();
        assert!(err.contains("fence_timeout_ms"), "{err}");
        let err = Config {
            socket_mode: "rw".into(),
            ..base()
        }
        .validate()
        .unwrap_err();
        assert!(err.contains("socket_mode"), "{err}");
        let err = Config {
            socket: "/nonexistent/dir/s.sock".into(),
            ..base()
        }
        .validate()
        .unwrap_err();
        assert!(err.contains("its directory does not exist"), "{err}");
        let err = Config {
            broker_binary: Some("/nonexistent".into()),
            ..base()
        }
        .validate()
        .unwrap_err();
        assert!(err.contains("broker_binary"), "{err}");
        let err = Config {
            stale_holder_ms: 10_000,
            ..base()
        }
        .validate()
        .unwrap_err();
        assert!(
            err.contains("stale_holder_ms (10000) must be longer than fence_timeout_ms (10000)"),
            "{err}"
        );
        let err = Config {
            lock_check_other_path: Some("/nonexistent/mount".into()),
            ..base()
        }
        .validate()
        .unwrap_err();
        assert!(
            err.contains("lock_check_other_path /nonexistent/mount is not a directory"),
            "{err}"
        );
    }

    #[test]
    fn scheduler_dir_defaults_to_the_shared_directorys_and_may_not_be_a_control_path_or_the_store()
    {
        let shared = Path::new("/srv/shared");
        assert_eq!(
            scheduler_dir(None, shared).unwrap(),
            shared.join("scheduler")
        );
        assert_eq!(
            scheduler_dir(Some("/mnt/sched".into()), shared).unwrap(),
            Path::new("/mnt/sched")
        );
        for control in ["/srv/shared", "/srv/shared/lock", "/srv/shared/nodes"] {
            let err = scheduler_dir(Some(control.into()), shared).unwrap_err();
            assert!(
                err.contains(&format!(
                    "scheduler_dir {control} is the shared directory or one of its control files"
                )),
                "{err}"
            );
        }
        for store in ["/srv/shared/data", "/srv/shared/data/scheduler"] {
            let err = scheduler_dir(Some(store.into()), shared).unwrap_err();
            assert!(
                err.contains("is the message store's directory /srv/shared/data or inside it"),
                "{err}"
            );
        }
    }

    #[test]
    fn a_broker_group_of_root_is_refused() {
        let err = broker_gid(Some("root".into()), 65534).unwrap_err();
        assert!(
            err.contains("broker_group = \"root\" is root's group"),
            "{err}"
        );
        let err = broker_gid(None, 0).unwrap_err();
        assert!(err.contains("set broker_group"), "{err}");
        assert_eq!(broker_gid(None, 65534), Ok(65534));
    }

    #[test]
    fn a_keepalive_that_cannot_feed_the_watchdog_is_refused() {
        let ours = std::process::id().to_string();
        let err = check_watchdog(500, Some("1000000"), Some(&ours)).unwrap_err();
        assert!(
            err.contains("keepalive_ms (500) must be below half") && err.contains("WatchdogSec"),
            "{err}"
        );
        assert!(check_watchdog(500, Some("1000000"), None).is_err());
        assert_eq!(check_watchdog(499, Some("1000000"), Some(&ours)), Ok(()));
        assert_eq!(check_watchdog(500, None, None), Ok(()), "no watchdog");
        assert_eq!(
            check_watchdog(500, Some("1000000"), Some("1")),
            Ok(()),
            "another process's watchdog"
        );
        assert!(check_watchdog(500, Some("soon"), None).is_err());
    }
}
