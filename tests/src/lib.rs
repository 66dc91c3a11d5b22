//! Test harness: clusters of real daemons on 127.0.0.1 with free ports and temporary folders,
//! mounted with the real FUSE client. Everything a cluster starts is stopped and removed when
//! it is dropped, also when a test fails.

pub mod cluster;
pub mod console;
pub mod data;
pub mod netns;
pub mod tmux;

pub use cluster::{ClusterSpec, LocalCluster};

use std::path::PathBuf;

/// Folder holding the workspace's binaries (the test executable lives in `<that>/deps`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("test executable sits in target/<profile>/deps")
        .to_path_buf();
    for b in [
        "moose-master",
        "moose-chunkserver",
        "moose-mount",
        "moose-tool",
    ] {
        assert!(
            dir.join(b).exists(),
            "{} is missing: build the daemons first with `cargo build --workspace --bins`",
            dir.join(b).display()
        );
    }
    dir
}

/// A TCP port on 127.0.0.1 that was free a moment ago. Ports come from below the kernel's
/// ephemeral range (so outgoing connections never take them meanwhile), each at most once
/// per test process, starting at a random place so parallel test processes rarely meet.
/// Whether process `pid` is still running: an ended process nobody has reaped yet (a zombie)
/// is not.
pub fn process_running(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    state != Some('Z')
}

pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let _ = NEXT.compare_exchange(
        0,
        rand::random_range(0..SPAN) + 1,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    loop {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let port = (FIRST + n % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// True when FUSE can be used here (root and /dev/fuse present).
pub fn fuse_available() -> Result<(), String> {
    if !std::path::Path::new("/dev/fuse").exists() {
        return Err("/dev/fuse is missing (load the fuse module)".into());
    }
    if !nix::unistd::Uid::current().is_root() {
        return Err("the FUSE tests need root".into());
    }
    Ok(())
}
