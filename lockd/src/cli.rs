//! lockd's command line. Read with lexopt rather than clap: lockd must stay within 4 MiB
//! resident while active, nearly all of its code pages are resident, and clap's builder was
//! 146 KiB of its 1.2 MiB of code for nine options.

use std::ffi::OsString;
use std::path::PathBuf;

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    /// Run the node with these options.
    Run(Args),
    /// `--help`: print [`HELP`].
    Help,
    /// `--version`: print the version.
    Version,
}

/// The options; each one a flag sets overrides the config file's value.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Args {
    /// `-c`/`--config`: the TOML config file.
    pub config: Option<PathBuf>,
    /// `--shared-dir`: the shared directory.
    pub shared_dir: Option<PathBuf>,
    /// `--node`: this node's name.
    pub node: Option<String>,
    /// `--listen`, repeatable: brokerd's STOMP listeners.
    pub listen: Vec<String>,
    /// `--socket`, or the environment's `LOCKD_SOCKET`: the ctl socket.
    pub socket: Option<PathBuf>,
    /// `--broker-user`: who brokerd runs as when lockd runs as root.
    pub broker_user: Option<String>,
    /// `--broker-liveness-timeout-ms`.
    pub broker_liveness_timeout_ms: Option<u64>,
    /// `--init`: prepare a shared directory that has no marker, wherever it is.
    pub init: bool,
}

/// `lockd --help`.
pub const HELP: &str = "\
Holds the shared-directory lock and runs brokerd while it does

Usage: lockd [OPTIONS]

Options:
  -c, --config <FILE>
          TOML config file (see /etc/lockd/lockd.example.toml); flags override it
      --shared-dir <DIR>
          The shared directory (cluster filesystem mount)
      --node <NAME>
          This node's name, unique in the cluster
      --listen <ADDRESS>
          STOMP listener for brokerd when active: HOST:PORT, tcp://HOST:PORT or ssl://HOST:PORT
          (ssl:// needs tls_cert_file and tls_key_file in the config); repeatable
      --socket <PATH>
          Unix socket for ctl [env: LOCKD_SOCKET=]
      --broker-user <USER>
          User brokerd runs as when lockd runs as root (default: nobody)
      --broker-liveness-timeout-ms <MS>
          Milliseconds a ready brokerd may leave a liveness ping unanswered before it is killed
          and replaced (config: broker_liveness_timeout_ms, default 2000)
      --init
          Prepare the shared directory first if it has no marker (as `ctl init` does)
  -h, --help
          Print help
  -V, --version
          Print version
";

/// Reads `args` (without the program name); `socket_env` is `LOCKD_SOCKET`'s value, used when
/// `--socket` is not given. The error says what was wrong, for `lockd: ERROR (see lockd --help)`.
pub fn parse(
    args: impl IntoIterator<Item = OsString>,
    socket_env: Option<OsString>,
) -> Result<Command, lexopt::Error> {
    use lexopt::prelude::*;
    let mut parsed = Args::default();
    let mut parser = lexopt::Parser::from_args(args);
    while let Some(arg) = parser.next()? {
        match arg {
            Short('c') | Long("config") => parsed.config = Some(parser.value()?.into()),
            Long("shared-dir") => parsed.shared_dir = Some(parser.value()?.into()),
            Long("node") => parsed.node = Some(parser.value()?.string()?),
            Long("listen") => parsed.listen.push(parser.value()?.string()?),
            Long("socket") => parsed.socket = Some(parser.value()?.into()),
            Long("broker-user") => parsed.broker_user = Some(parser.value()?.string()?),
            Long("broker-liveness-timeout-ms") => {
                parsed.broker_liveness_timeout_ms = Some(parser.value()?.parse()?)
            }
            Long("init") => parsed.init = true,
            Short('h') | Long("help") => return Ok(Command::Help),
            Short('V') | Long("version") => return Ok(Command::Version),
            _ => return Err(arg.unexpected()),
        }
    }
    if parsed.socket.is_none() {
        parsed.socket = socket_env.filter(|s| !s.is_empty()).map(PathBuf::from);
    }
    Ok(Command::Run(parsed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(args: &[&str], env: Option<&str>) -> Result<Command, String> {
        parse(args.iter().map(OsString::from), env.map(OsString::from)).map_err(|e| e.to_string())
    }

    #[test]
    fn every_option_in_both_spellings() {
        let parsed = parse_str(
            &[
                "-c",
                "/etc/lockd/n1.toml",
                "--shared-dir=/srv/shared",
                "--node",
                "n1",
                "--listen",
                "127.0.0.1:1",
                "--listen=ssl://127.0.0.1:2",
                "--socket",
                "/run/l.sock",
                "--broker-user",
                "broker",
                "--broker-liveness-timeout-ms",
                "750",
                "--init",
            ],
            Some("/ignored.sock"),
        )
        .unwrap();
        assert_eq!(
            parsed,
            Command::Run(Args {
                config: Some("/etc/lockd/n1.toml".into()),
                shared_dir: Some("/srv/shared".into()),
                node: Some("n1".into()),
                listen: vec!["127.0.0.1:1".into(), "ssl://127.0.0.1:2".into()],
                socket: Some("/run/l.sock".into()),
                broker_user: Some("broker".into()),
                broker_liveness_timeout_ms: Some(750),
                init: true,
            })
        );
    }

    #[test]
    fn the_socket_comes_from_the_environment_unless_given() {
        let Command::Run(args) = parse_str(&[], Some("/run/env.sock")).unwrap() else {
            panic!("not a run");
        };
        assert_eq!(args.socket, Some("/run/env.sock".into()));
        let Command::Run(args) = parse_str(&[], Some("")).unwrap() else {
            panic!("not a run");
        };
        assert_eq!(args.socket, None);
    }

    #[test]
    fn help_and_version() {
        assert_eq!(parse_str(&["--help"], None).unwrap(), Command::Help);
        assert_eq!(parse_str(&["-V"], None).unwrap(), Command::Version);
    }

    #[test]
    fn mistakes_say_what_was_wrong() {
        let unknown = parse_str(&["--nod", "n1"], None).unwrap_err();
        assert!(unknown.contains("--nod"), "{unknown}");
        let missing = parse_str(&["--node"], None).unwrap_err();
        assert!(missing.contains("--node"), "{missing}");
        let bad = parse_str(&["--broker-liveness-timeout-ms", "soon"], None).unwrap_err();
        assert!(bad.contains("soon"), "{bad}");
        let positional = parse_str(&["n1"], None).unwrap_err();
        assert!(positional.contains("n1"), "{positional}");
    }
}
