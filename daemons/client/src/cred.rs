//! Credentials of the calling process: uid and gid from the kernel, supplementary groups from
//! `/proc/PID/status`, cached briefly.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use moose_proto::Cred;

/// How long the groups of a process are reused.
const GROUPS_TTL: Duration = Duration::from_secs(2);
/// Cache size that triggers a clean-up.
const MAX_ENTRIES: usize = 4096;

struct Entry {
    at: Instant,
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
}

#[derive(Default)]
pub struct CredCache {
    map: Mutex<HashMap<u32, Entry>>,
}

impl CredCache {
    /// The credentials of process `pid` acting as `uid`/`gid`.
    pub fn cred(&self, uid: u32, gid: u32, pid: u32) -> Cred {
        if pid == 0 {
            return Cred {
                uid,
                gid,
                groups: Vec::new(),
            };
        }
        let now = Instant::now();
        {
            let map = self.map.lock();
            if let Some(e) = map.get(&pid) {
                if e.uid == uid && e.gid == gid && now.duration_since(e.at) < GROUPS_TTL {
                    return Cred {
                        uid,
                        gid,
                        groups: e.groups.clone(),
                    };
                }
            }
        }
        let groups = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .map(|s| parse_groups(&s))
            .unwrap_or_default();
        let mut map = self.map.lock();
        if map.len() >= MAX_ENTRIES {
            map.retain(|_, e| now.duration_since(e.at) < GROUPS_TTL);
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
        }
        map.insert(
            pid,
            Entry {
                at: now,
                uid,
                gid,
                groups: groups.clone(),
            },
        );
        Cred { uid, gid, groups }
    }
}

/// The `Groups:` line of a `/proc/PID/status` text.
pub fn parse_groups(status: &str) -> Vec<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|rest| {
            rest.split_whitespace()
                .filter_map(|g| g.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_line() {
        let s = "Name:\tbash\nUid:\t1000\t1000\t1000\t1000\nGroups:\t4 24 27 1000 \nNgid:\t0\n";
        assert_eq!(parse_groups(s), vec![4, 24, 27, 1000]);
        assert_eq!(parse_groups("Groups:\t\n"), Vec::<u32>::new());
        assert_eq!(parse_groups("Name: x\n"), Vec::<u32>::new());
    }

    #[test]
    fn own_process_is_read() {
        let c = CredCache::default();
        let me = std::process::id();
        let cred = c.cred(5, 6, me);
        assert_eq!((cred.uid, cred.gid), (5, 6));
        let expected = parse_groups(&std::fs::read_to_string("/proc/self/status").unwrap());
        assert_eq!(cred.groups, expected);
        assert!(c.cred(1, 2, 0).groups.is_empty());
    }
}
