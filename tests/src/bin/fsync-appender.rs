//! Appends pieces to files on a mount with an fsync after each, for the crash tests.
//!
//!     fsync-appender DIR STOP_FILE
//!
//! It runs as a process of its own so that the test killing and restarting the master holds
//! no file of the mount open: a process the test spawns would inherit such a file, and its
//! `exec` would close it, a FUSE flush that waits for the very master the spawn was to start.
//!
//! Three files are appended to in turn, with pieces of `random_bytes(round, len)` whose sizes
//! end inside blocks and chunks (so later appends patch partial blocks and raise chunk
//! versions). After a failed write or fsync a file is left alone (its tail is unknown) and a
//! new one takes its place. One line per piece on stdout: `NAME ROUND LEN ok|failed`. It stops
//! once STOP_FILE exists.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use moose_tests::data::random_bytes;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, stop] = args.as_slice() else {
        eprintln!("usage: fsync-appender DIR STOP_FILE");
        return ExitCode::from(2);
    };
    let (dir, stop) = (Path::new(dir), Path::new(stop));
    let mut next_file = 0u64;
    let mut new_name = || {
        next_file += 1;
        format!("f{}", next_file - 1)
    };
    let mut current: Vec<String> = (0..3).map(|_| new_name()).collect();
    let mut out = std::io::stdout().lock();
    let mut round = 0u64;
    while !stop.exists() {
        round += 1;
        let slot = (round % 3) as usize;
        let len = 300_000 + (round as usize * 77_777) % 3_000_000;
        let piece = random_bytes(round, len);
        let result = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(&current[slot]))
            .and_then(|mut f| f.write_all(&piece).and_then(|()| f.sync_all()));
        let verdict = if result.is_ok() { "ok" } else { "failed" };
        if writeln!(out, "{} {round} {len} {verdict}", current[slot])
            .and_then(|()| out.flush())
            .is_err()
        {
            // Nobody reads what was acknowledged any more.
            return ExitCode::FAILURE;
        }
        if result.is_err() {
            current[slot] = new_name();
        }
    }
    ExitCode::SUCCESS
}
