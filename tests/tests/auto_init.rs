//! The three-step installation (issue 12 item 2): with the example config's `init =
//! "if-mounted"`, nodes prepare a new cluster's shared directory themselves when it is the
//! cluster filesystem's mount, so nobody runs `ctl init`; and they still refuse the directory on
//! the local disk that a mount which did not happen leaves behind, which is what keeps a node
//! without its cluster filesystem from becoming a second active.
//!
//! The mount is a tmpfs the test mounts (root only); the refusal needs no mount.

use ha_tests::*;
use shared_proto::admin::Role;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The shipped example config as an operator copies it, with this node's name, paths and
/// loopback port, and without the admin group (the package makes it; this host has none);
/// without root, also without a broker user.
fn from_example(node: &Node, shared: &Path) -> String {
    let example = include_str!("../../systemd/lockd.example.toml");
    let mut text: String = example
        .lines()
        // Only root may run brokerd as another user (Cluster::new's configs do the same).
        .filter(|line| {
            !line.starts_with("admin_group = ")
                && (is_root() || !line.starts_with("broker_user = "))
        })
        .map(|line| {
            let set =
                |key: &str, value: String| line.starts_with(&format!("{key} = ")).then_some(value);
            let replaced = set("node", format!("node = \"{}\"", node.name))
                .or_else(|| {
                    set(
                        "shared_dir",
                        format!("shared_dir = \"{}\"", shared.display()),
                    )
                })
                .or_else(|| set("socket", format!("socket = \"{}\"", node.socket.display())))
                .or_else(|| set("listen", format!("listen = [\"127.0.0.1:{}\"]", node.port)))
                .or_else(|| set("broker_user", "broker_user = \"nobody\"".into()));
            replaced.unwrap_or_else(|| line.to_owned()) + "\n"
        })
        .collect();
    assert!(
        text.contains("init = \"if-mounted\""),
        "the example sets init"
    );
    text.push_str(&format!(
        "broker_binary = \"{}\"\n",
        bins().brokerd.display()
    ));
    text
}

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: PathBuf) -> Tmpfs {
        fs::create_dir_all(&at).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "mode=0755,size=64m", "tmpfs"])
            .arg(&at)
            .status()
            .expect("run mount");
        assert!(status.success(), "mount -t tmpfs {} failed", at.display());
        Tmpfs(at)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn if_mounted_refuses_the_local_directory_an_absent_mount_leaves() {
    let mut cluster = Cluster::new(1, "");
    let beneath = cluster.root.join("mnt");
    fs::create_dir(&beneath).unwrap();
    let text = from_example(&cluster.nodes[0], &beneath);
    fs::write(&cluster.nodes[0].config, text).unwrap();

    let (code, err) = cluster.nodes[0].refused_start();
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(&format!("shared_dir {} is on", beneath.display()))
            && err.contains("is the cluster filesystem mounted?")
            && err.contains(&format!("ctl init {}", beneath.display())),
        "the refusal says what is wrong and what to do: {err}"
    );
    assert_eq!(
        fs::read_dir(&beneath).unwrap().count(),
        0,
        "nothing was prepared on the local disk"
    );

    // Not even a directory to look at: the mount point itself is missing.
    cluster.nodes[0].set_shared_dir(&cluster.root.join("absent"));
    let (code, err) = cluster.nodes[0].refused_start();
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("mount the cluster filesystem there"), "{err}");
    assert!(!cluster.root.join("absent").exists());
    cluster.nodes.clear();
}

#[test]
#[ignore = "needs root to mount a tmpfs; tests/run-all.sh runs it as root"]
fn three_nodes_from_the_example_config_prepare_a_new_mount_once_and_one_becomes_active() {
    require_root("to mount a tmpfs as the cluster filesystem");
    let mut cluster = Cluster::new(3, "");
    let mount = Tmpfs::mount(cluster.root.join("mnt"));
    for i in 0..3 {
        let text = from_example(&cluster.nodes[i], &mount.0);
        fs::write(&cluster.nodes[i].config, text).unwrap();
    }

    // Someone else's files on the mount: not a new cluster's directory.
    fs::write(mount.0.join("orders.db"), "kept").unwrap();
    let (code, err) = cluster.nodes[0].refused_start();
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("holds files lockd did not make (orders.db)"),
        "{err}"
    );
    assert!(!mount.0.join("cluster.json").exists());
    assert_eq!(
        fs::read_to_string(mount.0.join("orders.db")).unwrap(),
        "kept"
    );
    fs::remove_file(mount.0.join("orders.db")).unwrap();

    cluster.start_all();
    let active = cluster.wait_for_one_active();
    let marker = fs::read_to_string(mount.0.join("cluster.json")).expect("the marker");
    assert!(marker.contains("cluster_id"), "{marker}");
    let logs = cluster.logs();
    assert_eq!(
        logs.matches("prepared the shared directory").count(),
        1,
        "exactly one node prepared it, and said why: {logs}"
    );
    assert!(logs.contains("a mount of its own: tmpfs"), "{logs}");
    stomp_connect(cluster.nodes[active].addr(), WAIT).expect("the active node serves STOMP");

    // Its broker (nobody) owns the stores it writes.
    for store in ["data", "scheduler"] {
        let owner =
            std::os::unix::fs::MetadataExt::uid(&fs::metadata(mount.0.join(store)).unwrap());
        assert_eq!(owner, NOBODY, "{store}/ belongs to the broker user");
    }
    let passive = (active + 1) % 3;
    assert_eq!(
        cluster.nodes[passive].wait_for_role(Role::Passive).role,
        Role::Passive
    );

    for node in &mut cluster.nodes {
        node.kill(libc::SIGTERM);
        node.wait_exit();
    }
    cluster.nodes.clear();
    drop(mount);
}
