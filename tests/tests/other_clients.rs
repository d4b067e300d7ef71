//! Real STOMP clients in other languages, against real nodes: the scenarios in `tests/ruby`
//! (Ruby's stomp gem, Debian's ruby-stomp) and `tests/php` (PHP's PECL stomp extension,
//! Debian's php8.2-stomp), each run as a subprocess with the nodes' addresses as arguments,
//! as `real_clients.rs` runs the stomp.py ones.
//!
//! The packages take root to install, so every test here is `#[ignore]`d: tests/run-all.sh
//! installs them and runs these tests as root. Run where a package is missing, a test fails
//! saying what to install. A scenario exits 0 when every check held; otherwise the test fails
//! with everything it printed, and the cluster's logs.
//!
//! Every scenario was also run against ActiveMQ 5.17 (Debian's activemq), and passes there.

use ha_tests::*;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

/// A STOMP client library whose scenarios these tests run.
#[derive(Clone, Copy, Debug)]
enum Library {
    /// Ruby's stomp gem: `ruby tests/ruby/SCRIPT.rb`.
    RubyStomp,
    /// PHP's PECL stomp extension: `php tests/php/SCRIPT.php`.
    PeclStomp,
}

impl Library {
    fn interpreter(self) -> &'static str {
        match self {
            Library::RubyStomp => "ruby",
            Library::PeclStomp => "php",
        }
    }

    /// The directory of its scenarios, under tests/, and their file extension.
    fn scripts(self) -> (&'static str, &'static str) {
        match self {
            Library::RubyStomp => ("ruby", "rb"),
            Library::PeclStomp => ("php", "php"),
        }
    }

    /// Interpreter arguments that exit 0 exactly when the library loads.
    fn probe(self) -> [&'static str; 2] {
        match self {
            Library::RubyStomp => ["-e", "require 'stomp'"],
            Library::PeclStomp => ["-r", "exit(extension_loaded('stomp') ? 0 : 1);"],
        }
    }

    /// The Debian packages that bring the interpreter and the library.
    fn packages(self) -> &'static str {
        match self {
            Library::RubyStomp => "ruby-stomp",
            Library::PeclStomp => "php8.2-cli php8.2-stomp",
        }
    }
}

/// Panics with how to install `library` if its interpreter cannot load it.
fn require(library: Library) {
    static CHECKED: [OnceLock<Result<(), String>>; 2] = [OnceLock::new(), OnceLock::new()];
    let checked = CHECKED[library as usize].get_or_init(|| {
        let out = Command::new(library.interpreter())
            .args(library.probe())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", library.interpreter()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "`{} {}` exits with {}: {}",
                library.interpreter(),
                library.probe().join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    });
    if let Err(e) = checked {
        panic!(
            "these tests need Debian's {packages}: apt-get install -y {packages} as root \
             (tests/run-all.sh does it)\n{e}",
            packages = library.packages()
        );
    }
}

/// `INTERPRETER tests/DIR/SCRIPT.EXT HOST:PORT...` for every node of `cluster`.
fn scenario(library: Library, script: &str, cluster: &Cluster) -> ClientProcess {
    let (dir, extension) = library.scripts();
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(dir)
        .join(format!("{script}.{extension}"));
    let mut cmd = Command::new(library.interpreter());
    cmd.arg(path);
    cmd.args(cluster.nodes.iter().map(|n| n.addr().to_string()));
    ClientProcess::spawn(&format!("{library:?} {script}"), cmd)
}

/// Runs `script` of `library` against a fresh single active node, with `extra` config lines,
/// to the end.
fn run_on_one_node(library: Library, script: &str, extra: &str) {
    // Before the cluster: a missing package fails the test with what to install, not with
    // a node's logs.
    require(library);
    let mut cluster = Cluster::new(1, extra);
    cluster.start_all();
    cluster.wait_for_one_active();
    scenario(library, script, &cluster).assert_passes();
}

#[test]
#[ignore = "needs ruby-stomp from Debian (tests/run-all.sh installs it as root)"]
fn ruby_stomp_sends_with_receipts_and_another_connection_receives_with_custom_headers() {
    run_on_one_node(Library::RubyStomp, "send_receive", "");
}

#[test]
#[ignore = "needs ruby-stomp from Debian (tests/run-all.sh installs it as root)"]
fn ruby_stomp_sends_and_receives_a_16_mib_message_intact() {
    run_on_one_node(Library::RubyStomp, "big_message", "");
}

#[test]
#[ignore = "needs ruby-stomp from Debian (tests/run-all.sh installs it as root)"]
fn ruby_stomp_gets_every_receipt_sending_to_a_queue_it_is_subscribed_to() {
    run_on_one_node(Library::RubyStomp, "receipt_while_subscribed", "");
}

#[test]
#[ignore = "needs php8.2-stomp from Debian (tests/run-all.sh installs it as root)"]
fn pecl_stomp_sends_with_receipts_and_another_connection_receives_with_custom_headers() {
    run_on_one_node(Library::PeclStomp, "send_receive", "");
}

#[test]
#[ignore = "needs php8.2-stomp from Debian (tests/run-all.sh installs it as root)"]
fn pecl_stomp_sends_and_receives_a_16_mib_message_intact() {
    run_on_one_node(Library::PeclStomp, "big_message", "");
}

#[test]
#[ignore = "needs php8.2-stomp from Debian (tests/run-all.sh installs it as root)"]
fn pecl_stomp_gets_every_receipt_sending_to_a_queue_it_is_subscribed_to() {
    run_on_one_node(Library::PeclStomp, "receipt_while_subscribed", "");
}

/// One test per library and scenario, each run on a fresh single node.
macro_rules! scenarios {
    ($($library:ident $script:literal $name:ident;)*) => {$(
        #[test]
        #[ignore = "needs ruby-stomp and php8.2-stomp from Debian (tests/run-all.sh installs them as root)"]
        fn $name() {
            run_on_one_node(Library::$library, $script, "");
        }
    )*};
}

scenarios! {
    RubyStomp "wildcards" ruby_stomp_subscribes_with_wildcards;
    RubyStomp "request_reply" ruby_stomp_does_request_reply_over_a_temporary_queue;
    RubyStomp "browse" ruby_stomp_browses_a_queue_without_consuming_it;
    RubyStomp "selector" ruby_stomp_subscribes_with_a_selector;
    PeclStomp "wildcards" pecl_stomp_subscribes_with_wildcards;
    PeclStomp "request_reply" pecl_stomp_does_request_reply_over_a_temporary_queue;
    PeclStomp "browse" pecl_stomp_browses_a_queue_without_consuming_it;
    PeclStomp "selector" pecl_stomp_subscribes_with_a_selector;
}
