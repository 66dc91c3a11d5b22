//! The chunkservers this file system has had, kept in `DATA_PATH/chunkservers.known` across
//! restarts. After a restart the master holds back replication and deletion until every one
//! of them is back (or REPLICATIONS_DELAY_INIT has passed): until then, a copy that looks
//! missing or stale may just be on a server that has not registered yet.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

pub const FILE: &str = "chunkservers.known";

pub struct KnownServers {
    path: PathBuf,
    ids: Mutex<BTreeSet<u32>>,
}

impl KnownServers {
    /// Reads the list in `dir`; a missing or unreadable file is an empty list (a new file
    /// system, or one from before this file existed: the start-up delay then applies alone).
    pub fn load(dir: &Path) -> KnownServers {
        let path = dir.join(FILE);
        let ids = std::fs::read_to_string(&path)
            .map(|text| parse(&text))
            .unwrap_or_default();
        KnownServers {
            path,
            ids: Mutex::new(ids),
        }
    }

    /// Adds a chunkserver that registered; a new one is written down at once.
    pub fn note(&self, id: u32) {
        let mut ids = self.ids.lock();
        if !ids.insert(id) {
            return;
        }
        // Written under the lock: servers registering at once would otherwise share the
        // temporary file, and an older list could replace a newer one.
        if let Err(e) = write_atomically(&self.path, render(&ids).as_bytes()) {
            tracing::warn!("cannot write {}: {e}", self.path.display());
        }
    }

    /// Known chunkservers that are not among `connected`.
    pub fn missing(&self, connected: &[u32]) -> Vec<u32> {
        self.ids
            .lock()
            .iter()
            .copied()
            .filter(|id| !connected.contains(id))
            .collect()
    }
}

fn parse(text: &str) -> BTreeSet<u32> {
    text.lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect()
}

fn render(ids: &BTreeSet<u32>) -> String {
    let mut out = String::from("# chunkserver ids this file system has had (moose-master)\n");
    for id in ids {
        out.push_str(&format!("{id}\n"));
    }
    out
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_survive_a_restart_and_missing_ones_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let known = KnownServers::load(dir.path());
        assert!(known.missing(&[]).is_empty());
        known.note(3);
        known.note(1);
        known.note(3);
        let again = KnownServers::load(dir.path());
        assert_eq!(again.missing(&[1]), vec![3]);
        assert!(again.missing(&[3, 1, 7]).is_empty());
    }

    #[test]
    fn servers_registering_at_once_are_all_written_down() {
        let dir = tempfile::tempdir().unwrap();
        let known = std::sync::Arc::new(KnownServers::load(dir.path()));
        let threads: Vec<_> = (1..=16)
            .map(|id| {
                let k = known.clone();
                std::thread::spawn(move || k.note(id))
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let again = KnownServers::load(dir.path());
        assert_eq!(again.missing(&[]), (1..=16).collect::<Vec<_>>());
    }

    #[test]
    fn damaged_lines_are_skipped() {
        assert_eq!(parse("# x\n4\nbad\n\n9 extra\n"), BTreeSet::from([4, 9]));
    }
}
