//! The Debian package and its unit (issue 12, items 2 and 3): the `.deb` that `cargo deb -p lockd`
//! builds, installed into a scratch root with `dpkg --root` and checked file by file; the unit
//! checked by `systemd-analyze verify` in that root, and its sandbox rated by
//! `systemd-analyze security --offline=true`.
//!
//! The package is a release build (fat LTO), too slow to make in a test: tests/run-all.sh builds
//! it with `cargo deb -p lockd` before `cargo test`, and these tests take
//! `target/debian/lockd_VERSION-1_ARCH.deb`. Its unit, users, directories, maintainer scripts'
//! sources, example config and README must equal the repository's, so a package built before a
//! change to them fails here instead of passing.

use ha_tests::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The highest `systemd-analyze security` exposure issue 12 allows the unit.
const MAX_EXPOSURE: f64 = 2.5;

/// Every check `systemd-analyze security` (systemd 252) still marks exposed in the unit, each
/// explained by an "Exposed" comment in the unit. A check that appears or disappears fails
/// [`the_units_sandbox_is_rated_at_most_2_5`]: explain it in the unit, then list it here.
const EXPLAINED_EXPOSURES: &[&str] = &[
    "User=/DynamicUser=",
    "CapabilityBoundingSet=~CAP_SET(UID|GID|PCAP)",
    "CapabilityBoundingSet=~CAP_KILL",
    "CapabilityBoundingSet=~CAP_(CHOWN|FSETID|SETFCAP)",
    "PrivateUsers=",
    "SystemCallFilter=~@privileged",
    "RootDirectory=/RootImage=",
    "UMask=",
    "DeviceAllow=",
    "ProcSubset=",
    "PrivateNetwork=",
    "RestrictAddressFamilies=~AF_(INET|INET6)",
    "IPAddressDeny=",
    "RestrictAddressFamilies=~AF_UNIX",
];

/// The repository's root (the workspace).
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Runs `program` with `args`; panics with its output unless it exits 0.
fn run(program: &str, args: &[&str]) -> Output {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} (is it installed?): {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?}: {}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The package tests/run-all.sh built: `target/debian/lockd_VERSION-1_ARCH.deb`, beside the
/// directory of the binaries these tests run.
fn package() -> PathBuf {
    let arch = run("dpkg", &["--print-architecture"]);
    let arch = String::from_utf8_lossy(&arch.stdout).trim().to_string();
    let target = bins()
        .lockd
        .parent()
        .and_then(Path::parent)
        .expect("the binaries are in target/PROFILE/");
    let deb = target
        .join("debian")
        .join(format!("lockd_{}-1_{arch}.deb", env!("CARGO_PKG_VERSION")));
    assert!(
        deb.is_file(),
        "no package at {}: build it with `cargo deb -p lockd` (tests/run-all.sh does; \
         `cargo install cargo-deb --locked` if cargo deb is missing)",
        deb.display()
    );
    deb
}

/// A scratch root with the package installed by dpkg, maintainer scripts included: they run
/// outside the root (`--force-script-chrootless`, as the root has no shell) with `DPKG_ROOT` set,
/// which the scripts pass to systemd-sysusers. The host has none of the package's dependencies
/// registered in this root's dpkg database, hence `--force-depends`.
struct Installed {
    root: tempfile::TempDir,
}

impl Installed {
    fn new() -> Installed {
        let root = tempfile::tempdir().unwrap();
        let admin = root.path().join("var/lib/dpkg");
        for dir in ["updates", "info"] {
            std::fs::create_dir_all(admin.join(dir)).unwrap();
        }
        std::fs::write(admin.join("status"), "").unwrap();
        let deb = package();
        run(
            "dpkg",
            &[
                &format!("--root={}", root.path().display()),
                "--force-script-chrootless",
                "--force-depends",
                "--install",
                deb.to_str().unwrap(),
            ],
        );
        Installed { root }
    }

    /// `path` (absolute, as installed) inside the scratch root.
    fn path(&self, path: &str) -> PathBuf {
        self.root.path().join(path.trim_start_matches('/'))
    }

    fn read(&self, path: &str) -> String {
        std::fs::read_to_string(self.path(path))
            .unwrap_or_else(|e| panic!("the package installs no readable {path}: {e}"))
    }
}

/// The package installs the three binaries (runnable), the unit, the users and directories, the
/// example config as a conffile and the README; its maintainer scripts create the broker user
/// and the admin group; its control fields name what it needs.
#[test]
#[ignore = "needs root for dpkg --root, and the package tests/run-all.sh builds; tests/run-all.sh runs it as root"]
fn the_package_installs_binaries_unit_users_directories_config_and_readme() {
    require_root("to install the package into a scratch root with dpkg --root");
    let installed = Installed::new();

    for bin in ["lockd", "brokerd", "ctl"] {
        let path = installed.path(&format!("/usr/bin/{bin}"));
        let mode = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("/usr/bin/{bin} is not installed: {e}"))
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o755, "/usr/bin/{bin} has mode {mode:o}");
        let version = run(path.to_str().unwrap(), &["--version"]);
        let version = String::from_utf8_lossy(&version.stdout);
        assert!(
            version.contains(env!("CARGO_PKG_VERSION")),
            "/usr/bin/{bin} --version says {version:?}"
        );
    }

    // Installed exactly as they are in the repository: a package built before a change to them
    // fails here.
    for (installed_path, source) in [
        (
            "/usr/lib/systemd/system/lockd@.service",
            "systemd/lockd@.service",
        ),
        ("/usr/lib/sysusers.d/lockd.conf", "systemd/lockd.sysusers"),
        ("/usr/lib/tmpfiles.d/lockd.conf", "systemd/lockd.tmpfile"),
        (
            "/etc/lockd/lockd.example.toml",
            "systemd/lockd.example.toml",
        ),
        ("/usr/share/doc/lockd/README.md", "README.md"),
    ] {
        let expected = std::fs::read_to_string(repo().join(source)).unwrap();
        assert!(
            installed.read(installed_path) == expected,
            "{installed_path} differs from {source}: rebuild the package with `cargo deb -p lockd`"
        );
    }
    assert!(installed.path("/usr/share/doc/lockd/copyright").is_file());

    // dpkg keeps an operator's edits of the example config on upgrade.
    let conffiles = installed.read("/var/lib/dpkg/info/lockd.conffiles");
    assert_eq!(
        conffiles.lines().collect::<Vec<_>>(),
        ["/etc/lockd/lockd.example.toml"]
    );

    // postinst ran systemd-sysusers: the broker user (no login) and the admin group exist.
    let passwd = installed.read("/etc/passwd");
    let broker = passwd
        .lines()
        .find(|line| line.starts_with("lockd-broker:"))
        .unwrap_or_else(|| panic!("postinst made no lockd-broker user:\n{passwd}"));
    assert!(broker.ends_with(":/usr/sbin/nologin"), "{broker}");
    let group = installed.read("/etc/group");
    assert!(
        group.lines().any(|line| line.starts_with("lockd-admin:")),
        "postinst made no lockd-admin group:\n{group}"
    );
    // The example config names them, and a shared directory the unit may write.
    let example = installed.read("/etc/lockd/lockd.example.toml");
    for line in [
        "broker_user = \"lockd-broker\"",
        "admin_group = \"lockd-admin\"",
        "shared_dir = \"/var/lib/lockd/shared\"",
    ] {
        assert!(example.contains(line), "the example config lacks {line}");
    }
    let unit = installed.read("/usr/lib/systemd/system/lockd@.service");
    assert!(unit.contains("\nReadWritePaths=/var/lib/lockd\n"), "{unit}");

    // systemd-tmpfiles makes the runtime directory and the shared directory's parent (at boot,
    // and in postinst on a system running systemd).
    run(
        "systemd-tmpfiles",
        &[
            &format!("--root={}", installed.root.path().display()),
            "--create",
            "lockd.conf",
        ],
    );
    for dir in ["/run/lockd", "/var/lib/lockd"] {
        let meta = std::fs::metadata(installed.path(dir))
            .unwrap_or_else(|e| panic!("systemd-tmpfiles made no {dir}: {e}"));
        assert!(meta.is_dir(), "{dir}");
        assert_eq!(meta.permissions().mode() & 0o7777, 0o755, "{dir}");
    }

    let field = |name: &str| {
        let out = run("dpkg-deb", &["--field", package().to_str().unwrap(), name]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(field("Package"), "lockd");
    let depends = field("Depends");
    assert!(
        depends.contains("libc6") && depends.contains("systemd (>= 247)"),
        "Depends: {depends}"
    );
}

/// `systemd-analyze verify` finds nothing to say about the installed unit, an instance of it
/// resolved in the scratch root (where `/usr/bin/lockd` is): no error, and no warning either
/// (an unknown setting or system call is only a warning, with exit status 0).
#[test]
#[ignore = "needs root for dpkg --root, and the package tests/run-all.sh builds; tests/run-all.sh runs it as root"]
fn the_installed_unit_passes_systemd_analyze_verify() {
    require_root("to install the package into a scratch root with dpkg --root");
    let installed = Installed::new();
    // What verify follows beyond the package: systemd's own units (sysinit.target and the other
    // default dependencies) and ExecReload's /bin/kill, from this host.
    let units = installed.path("/usr/lib/systemd/system");
    for entry in std::fs::read_dir("/usr/lib/systemd/system").unwrap() {
        let entry = entry.unwrap();
        let to = units.join(entry.file_name());
        if !to.exists() {
            run(
                "cp",
                &["-a", entry.path().to_str().unwrap(), to.to_str().unwrap()],
            );
        }
    }
    std::os::unix::fs::symlink("usr/bin", installed.path("/bin")).unwrap();
    std::fs::copy("/usr/bin/kill", installed.path("/usr/bin/kill")).unwrap();

    let output = run(
        "systemd-analyze",
        &[
            "verify",
            &format!("--root={}", installed.root.path().display()),
            "lockd@node1.service",
        ],
    );
    let said = String::from_utf8_lossy(&output.stderr).to_string()
        + &String::from_utf8_lossy(&output.stdout);
    assert!(
        said.trim().is_empty(),
        "systemd-analyze verify warns:\n{said}"
    );
}

/// Issue 12 item 3: `systemd-analyze security --offline=true` rates the unit's sandbox at most
/// 2.5, and what it still marks exposed is exactly what the unit's comments explain.
#[test]
fn the_units_sandbox_is_rated_at_most_2_5() {
    let unit = repo().join("systemd/lockd@.service");
    let output = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&unit)
        .output()
        .expect("cannot run systemd-analyze (Debian: apt-get install systemd)");
    let report = String::from_utf8_lossy(&output.stdout).to_string();
    // Exits non-zero only with --threshold; a report without the overall line is a failure below.
    let overall = report
        .lines()
        .find_map(|line| line.split_once("Overall exposure level for "))
        .and_then(|(_, rest)| rest.split_once(": "))
        .and_then(|(_, score)| score.split_whitespace().next())
        .and_then(|score| score.parse::<f64>().ok())
        .unwrap_or_else(|| {
            panic!(
                "no overall exposure in systemd-analyze's report:\n{report}\n{}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
    assert!(
        overall <= MAX_EXPOSURE,
        "the unit's exposure is {overall}, above {MAX_EXPOSURE}:\n{report}"
    );
    let mut exposed: Vec<&str> = report
        .lines()
        .filter_map(|line| line.strip_prefix("✗ "))
        .filter_map(|rest| rest.split_whitespace().next())
        .collect();
    let mut explained = EXPLAINED_EXPOSURES.to_vec();
    exposed.sort_unstable();
    explained.sort_unstable();
    assert_eq!(
        exposed, explained,
        "what systemd-analyze marks exposed is not what the unit explains; explain each in \
         systemd/lockd@.service and list it in EXPLAINED_EXPOSURES:\n{report}"
    );
}
