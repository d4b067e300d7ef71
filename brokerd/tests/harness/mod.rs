//! A small harness for running the real brokerd binary in controlled mode: the test plays lockd
//! on a socketpair and a STOMP client over TCP. Every wait is bounded by [`PATIENCE`], and a
//! broker still running when its [`Broker`] is dropped is killed; on failure its log is printed.

#![allow(dead_code)] // Each test binary uses a different part of the harness.

pub mod node;

use shared_proto::control::{BrokerStats, Confinement, FromBroker, ToBroker, CONTROL_FD_ENV};
use shared_proto::wire;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The most any single step may take; generous so a loaded machine does not fail tests.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// The descriptor number the broker finds its control socket under.
const CHILD_FD: i32 = 3;

/// A brokerd process and the test's end of its control socket.
pub struct Broker {
    child: Child,
    control: Option<BufReader<UnixStream>>,
    log: PathBuf,
}

impl Broker {
    /// Starts brokerd on `data` with extra arguments, listening on an ephemeral port.
    pub fn spawn(data: &Path, extra: &[&str]) -> Broker {
        let (ours, theirs) = UnixStream::pair().expect("socketpair");
        ours.set_read_timeout(Some(PATIENCE)).unwrap();
        let log = data.with_extension("log");
        let log_file = std::fs::File::create(&log).expect("broker log file");
        let fd = theirs.as_raw_fd();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_brokerd"));
        cmd.arg("--data-dir")
            .arg(data)
            .args(["--listen", "127.0.0.1:0", "--node", "test"])
            .args(extra)
            .env(CONTROL_FD_ENV, CHILD_FD.to_string())
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        // SAFETY: only async-signal-safe calls (dup2, fcntl) run between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if fd == CHILD_FD {
                    // Already in place: just let it survive exec.
                    if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(fd, CHILD_FD) < 0 {
                    // dup2 clears close-on-exec on the new descriptor.
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn brokerd");
        drop(theirs);
        Broker {
            child,
            control: Some(BufReader::new(ours)),
            log,
        }
    }

    /// Sends a message as lockd would.
    pub fn send(&mut self, msg: &ToBroker) {
        self.send_raw(&wire::encode(msg));
    }

    /// Sends raw bytes on the control socket.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        let control = self.control.as_mut().expect("control socket open");
        // The broker may already have hung up on garbage; the exit status tells the story.
        let _ = control.get_mut().write_all(bytes);
    }

    /// The broker's next message; panics on EOF or after [`PATIENCE`].
    pub fn recv(&mut self) -> FromBroker {
        self.recv_within(PATIENCE)
            .expect("a message from brokerd within PATIENCE")
    }

    /// The broker's next message if one arrives within `within`, else None (the socket's read
    /// timeout is [`PATIENCE`] again afterwards).
    pub fn recv_within(&mut self, within: Duration) -> Option<FromBroker> {
        let control = self.control.as_mut().expect("control socket open");
        control.get_ref().set_read_timeout(Some(within)).unwrap();
        let mut line = Vec::new();
        let read = control.read_until(b'\n', &mut line);
        control.get_ref().set_read_timeout(Some(PATIENCE)).unwrap();
        match read {
            Ok(0) => panic!("brokerd closed the control socket"),
            Ok(_) => Some(wire::decode(&line[..line.len() - 1]).expect("a valid message")),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                assert!(line.is_empty(), "half a message within {within:?}");
                None
            }
            Err(e) => panic!("reading from brokerd: {e}"),
        }
    }

    /// Plays lockd's side of the handshake.
    pub fn handshake(&mut self) {
        match self.recv() {
            FromBroker::Hello { version, pid } => {
                assert_eq!(version, shared_proto::PROTOCOL_VERSION);
                assert_eq!(pid, self.child.id());
            }
            other => panic!("expected Hello, got {other:?}"),
        }
        self.send(&ToBroker::Hello {
            version: shared_proto::PROTOCOL_VERSION,
        });
    }

    /// Handshakes and activates under `epoch`; returns the first listener's address.
    pub fn activate(&mut self, epoch: u64) -> String {
        self.handshake();
        self.send(&ToBroker::Activate { epoch });
        match self.recv() {
            FromBroker::Ready {
                epoch: ready,
                listeners,
                ..
            } => {
                assert_eq!(ready, epoch);
                assert!(!listeners.is_empty());
                assert!(listeners[0].starts_with("127.0.0.1:"), "{listeners:?}");
                assert!(!listeners[0].ends_with(":0"), "{listeners:?}");
                listeners[0].clone()
            }
            other => panic!("expected Ready, got {other:?}"),
        }
    }

    /// SIGKILLs the broker and waits for it to be gone.
    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL brokerd");
        self.wait_exit();
    }

    /// Closes the test's end of the control socket, as a dying lockd would.
    pub fn close_control(&mut self) {
        self.control = None;
    }

    /// Waits for the broker to exit; panics after [`PATIENCE`].
    pub fn wait_exit(&mut self) -> ExitStatus {
        wait_exit(&mut self.child)
    }

    /// The broker's figures, as `ctl status` would get them.
    pub fn stats(&mut self) -> BrokerStats {
        self.send(&ToBroker::Stats);
        match self.recv() {
            FromBroker::Stats { stats } => stats,
            other => panic!("expected Stats, got {other:?}"),
        }
    }

    /// Waits (up to [`PATIENCE`]) for the broker's log to contain `needle`: how a test knows
    /// the broker has done something it only logs (a reload).
    pub fn wait_for_log(&self, needle: &str) {
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            if log.contains(needle) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "brokerd never logged {needle:?}: {log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The broker's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Asks for a graceful stop and checks the broker says so and exits 0.
    pub fn stop(&mut self, reason: &str) {
        self.send(&ToBroker::Stop {
            deadline_ms: PATIENCE.as_millis() as u64,
            reason: reason.into(),
        });
        assert_eq!(
            self.recv(),
            FromBroker::Stopping {
                reason: reason.into(),
                fatal: false
            }
        );
        assert_eq!(self.wait_exit().code(), Some(0));
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!("---- brokerd log ----\n{log}---- end of brokerd log ----");
        }
    }
}

/// Waits for a brokerd process to exit; panics after [`PATIENCE`].
pub fn wait_exit(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "brokerd did not exit within {PATIENCE:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The running kernel's Landlock ABI, 0 without Landlock: what brokerd's confinement must say.
pub fn kernel_landlock_abi() -> u32 {
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

/// Checks that brokerd reported the confinement this kernel allows, with `writable` as the
/// directories it may write beneath.
pub fn assert_confinement_fits_the_kernel(confinement: &Confinement, writable: &[&Path]) {
    let writable: Vec<String> = writable.iter().map(|d| d.display().to_string()).collect();
    let abi = kernel_landlock_abi();
    let fits = match confinement {
        Confinement::Enforced {
            abi: reported,
            writable: dirs,
        } => abi >= 5 && *reported == abi && *dirs == writable,
        Confinement::Partial {
            abi: reported,
            writable: dirs,
            unrestricted,
        } => {
            (1..5).contains(&abi)
                && *reported == abi
                && *dirs == writable
                && !unrestricted.is_empty()
        }
        Confinement::Unavailable { .. } => abi == 0,
    };
    assert!(
        fits,
        "kernel Landlock ABI {abi}, brokerd reported {confinement:?}"
    );
}

/// A temporary shared directory with the store path inside it (not created: brokerd must do that
/// only once activated).
pub struct Dirs {
    _tmp: tempfile::TempDir,
    pub data: PathBuf,
}

impl Dirs {
    pub fn new() -> Dirs {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = tmp.path().join("data");
        Dirs { _tmp: tmp, data }
    }

    /// Whether the broker created its store.
    pub fn store_exists(&self) -> bool {
        self.data.join("db").exists()
    }
}

/// A received STOMP frame, headers unescaped the 1.2 way.
#[derive(Debug)]
pub struct Frame {
    pub command: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Frame {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The `message` header, which every ERROR frame carries.
    pub fn message(&self) -> &str {
        self.get("message").expect("ERROR frame with a message")
    }
}

/// A minimal STOMP client: raw bytes out, frames in.
pub struct Client {
    reader: BufReader<TcpStream>,
}

impl Client {
    pub fn connect(addr: &str) -> Client {
        let stream = TcpStream::connect(addr).expect("connect to brokerd");
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        Client {
            reader: BufReader::new(stream),
        }
    }

    /// Connects and completes a STOMP 1.2 CONNECT.
    pub fn stomp(addr: &str) -> Client {
        let mut client = Client::connect(addr);
        client.send(b"CONNECT\naccept-version:1.2\nhost:test\n\n\0");
        let connected = client.read_frame();
        assert_eq!(connected.command, "CONNECTED", "{connected:?}");
        client
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.reader
            .get_mut()
            .write_all(bytes)
            .expect("write to brokerd");
    }

    /// Reads one frame (ours never carry NUL in bodies); panics on EOF or timeout.
    pub fn read_frame(&mut self) -> Frame {
        let mut raw = Vec::new();
        let n = self
            .reader
            .read_until(0, &mut raw)
            .expect("read a frame within the time limit");
        assert!(n > 0 && raw.last() == Some(&0), "EOF instead of a frame");
        raw.pop();
        let text = String::from_utf8(raw).expect("UTF-8 frame");
        let text = text.trim_start_matches(['\r', '\n']);
        let (head, body) = text.split_once("\n\n").expect("frame with a blank line");
        let mut lines = head.lines();
        let command = lines.next().expect("command line").to_owned();
        let headers = lines
            .map(|line| {
                let (name, value) = line.split_once(':').expect("header with a colon");
                (unescape(name), unescape(value))
            })
            .collect();
        Frame {
            command,
            headers,
            body: body.to_owned(),
        }
    }

    /// Asserts the broker closes the connection (after any frames already read, and the
    /// end-of-line that follows every frame's NUL).
    pub fn expect_eof(&mut self) {
        let mut rest = Vec::new();
        self.reader
            .read_to_end(&mut rest)
            .expect("EOF within the time limit");
        assert!(
            rest.iter().all(|b| *b == b'\n'),
            "unexpected bytes before EOF: {rest:?}"
        );
    }
}

/// A received STOMP frame exactly as sent: header names and values not unescaped (the test decides
/// how, by the version it speaks), the body as bytes, read by its `content-length` so it may hold
/// NUL octets.
#[derive(Debug)]
pub struct RawFrame {
    pub command: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawFrame {
    /// The first header called `name` (STOMP: the first of repeated headers wins), as sent.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first header called `name`; panics, showing the frame, if there is none.
    pub fn header(&self, name: &str) -> &str {
        self.get(name)
            .unwrap_or_else(|| panic!("no {name} header in {self:?}"))
    }

    /// The first header called `name`, unescaped as STOMP 1.1 and 1.2 frames (other than
    /// CONNECT and CONNECTED) require; panics on an undefined escape.
    pub fn unescaped(&self, name: &str) -> Option<String> {
        self.get(name).map(unescape_strictly)
    }

    /// The `message` header of an ERROR frame, as sent (STOMP 1.0 or a refused CONNECT).
    pub fn message(&self) -> &str {
        assert_eq!(self.command, "ERROR", "{self:?}");
        self.header("message")
    }

    /// The body as text.
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("UTF-8 body")
    }
}

impl Client {
    /// Writes one frame: `headers` are `name:value` lines as they go on the wire (escaped by the
    /// caller), and a non-empty body gets no `content-length` unless the caller adds one.
    pub fn send_frame(&mut self, command: &str, headers: &[&str], body: &[u8]) {
        let mut bytes = format!("{command}\n").into_bytes();
        for header in headers {
            bytes.extend_from_slice(header.as_bytes());
            bytes.push(b'\n');
        }
        bytes.push(b'\n');
        bytes.extend_from_slice(body);
        bytes.push(0);
        self.send(&bytes);
    }

    /// Writes `bytes` in writes of `piece` bytes each, with Nagle off so that they leave as
    /// separate segments rather than being merged by our side.
    pub fn send_in_pieces(&mut self, bytes: &[u8], piece: usize) {
        let stream = self.reader.get_mut();
        stream.set_nodelay(true).expect("TCP_NODELAY");
        for chunk in bytes.chunks(piece) {
            stream.write_all(chunk).expect("write to brokerd");
        }
    }

    /// Writes raw bytes, returning the error when the broker has closed the connection.
    pub fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.reader.get_mut().write_all(bytes)
    }

    /// Reads one frame, skipping heart-beat EOLs before it; the body is read by `content-length`
    /// when there is one. Panics on EOF or after [`PATIENCE`].
    pub fn read_raw(&mut self) -> RawFrame {
        let command = loop {
            let line = self.read_line();
            if !line.is_empty() {
                break line;
            }
        };
        let mut headers = Vec::new();
        loop {
            let line = self.read_line();
            if line.is_empty() {
                break;
            }
            let (name, value) = line
                .split_once(':')
                .unwrap_or_else(|| panic!("header line without a colon: {line:?}"));
            headers.push((name.to_owned(), value.to_owned()));
        }
        let length = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map(|(_, v)| v.parse::<usize>().expect("numeric content-length"));
        let body = match length {
            Some(length) => {
                let mut body = vec![0; length + 1];
                self.reader
                    .read_exact(&mut body)
                    .expect("a whole body within the time limit");
                assert_eq!(body.pop(), Some(0), "body not followed by NUL");
                body
            }
            None => {
                let mut body = Vec::new();
                self.reader
                    .read_until(0, &mut body)
                    .expect("a body within the time limit");
                assert_eq!(body.pop(), Some(0), "EOF in the middle of a body");
                body
            }
        };
        RawFrame {
            command,
            headers,
            body,
        }
    }

    /// One line without its EOL; panics on EOF.
    fn read_line(&mut self) -> String {
        let mut line = Vec::new();
        let n = self
            .reader
            .read_until(b'\n', &mut line)
            .expect("read a line within the time limit");
        assert!(n > 0, "EOF instead of a frame");
        if line.ends_with(b"\n") {
            line.pop();
        }
        if line.ends_with(b"\r") {
            line.pop();
        }
        String::from_utf8(line).expect("UTF-8 frame head")
    }

    /// The next byte from the broker, `None` at EOF; panics after [`PATIENCE`] of silence.
    pub fn read_byte(&mut self) -> Option<u8> {
        let mut byte = [0u8];
        match self.reader.read(&mut byte) {
            Ok(0) => None,
            Ok(_) => Some(byte[0]),
            Err(err) => panic!("no byte from brokerd within {PATIENCE:?}: {err}"),
        }
    }

    /// How long reads wait from now on.
    pub fn set_read_timeout(&mut self, timeout: Duration) {
        self.reader
            .get_ref()
            .set_read_timeout(Some(timeout))
            .unwrap();
    }

    /// The next frame if one starts within the read timeout, else `None`; panics on EOF.
    /// End-of-lines before it (heart-beats, the one after each frame's NUL) are skipped.
    pub fn try_read_raw(&mut self) -> Option<RawFrame> {
        while let Ok([b'\n' | b'\r', ..]) = self.reader.fill_buf() {
            self.reader.consume(1);
        }
        match self.reader.fill_buf() {
            Ok([]) => panic!("EOF instead of a frame"),
            Ok(_) => Some(self.read_raw()),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            Err(e) => panic!("reading from brokerd: {e}"),
        }
    }

    /// Reads the next frame and checks it is the RECEIPT for `id`.
    pub fn expect_receipt(&mut self, id: &str) {
        let frame = self.read_raw();
        assert_eq!(
            (frame.command.as_str(), frame.get("receipt-id")),
            ("RECEIPT", Some(id)),
            "expected the RECEIPT for {id:?}, got {frame:?}"
        );
    }

    /// Reads the next frame, checks it is an ERROR whose `message` contains `needle`, and that
    /// the broker then closes the connection; returns the ERROR.
    pub fn expect_refusal(&mut self, needle: &str) -> RawFrame {
        let error = self.read_raw();
        assert_eq!(error.command, "ERROR", "{error:?}");
        assert!(
            error.message().contains(needle),
            "ERROR message {:?} does not mention {needle:?}",
            error.message()
        );
        self.expect_eof();
        error
    }
}

/// Undoes STOMP 1.1/1.2 header escaping; panics on an undefined or unfinished escape.
pub fn unescape_strictly(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        out.push(match chars.next() {
            Some('n') => '\n',
            Some('r') => '\r',
            Some('c') => ':',
            Some('\\') => '\\',
            other => panic!("undefined escape \\{other:?} in {text:?}"),
        });
    }
    out
}

fn unescape(text: &str) -> String {
    text.replace("\\n", "\n")
        .replace("\\r", "\r")
        .replace("\\c", ":")
        .replace("\\\\", "\\")
}
