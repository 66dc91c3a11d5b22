//! Sessions outlive their connections: a mount whose connection drops keeps its open files
//! and write locks for `SESSION_SUSTAIN_TIME` and takes them over again when it reconnects
//! with the session's key. A session not resumed by then expires and its files are released
//! (a dead client's unlinked-but-open files are purged then). Tool sessions and sessions
//! closed with `CloseSession` end with their connection.

use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use moose_common::exports::ExportLine;
use moose_proto::msg::ClReply;
use moose_proto::Inode;

use crate::master::Master;

struct Entry {
    session: Arc<Session>,
    key: Vec<u8>,
    /// When its connection ended; `None` while connected.
    detached: Option<Instant>,
}

#[derive(Default)]
pub struct SessionTable {
    entries: Mutex<HashMap<u64, Entry>>,
}

impl SessionTable {
    pub fn insert(&self, session: Arc<Session>, key: Vec<u8>) {
        self.entries.lock().insert(
            session.id,
            Entry {
                session,
                key,
                detached: None,
            },
        );
    }

    /// Takes over a detached session with its key; `None` when there is no such session, it
    /// is connected elsewhere, or the key is wrong.
    pub fn resume(&self, id: u64, key: &[u8]) -> Option<Arc<Session>> {
        let mut entries = self.entries.lock();
        let e = entries.get_mut(&id)?;
        if e.detached.is_none() || !moose_proto::auth::same(&e.key, key) {
            return None;
        }
        e.detached = None;
        Some(e.session.clone())
    }

    /// The connection of session `id` ended: keep it for the sustain time.
    pub fn detach(&self, id: u64) {
        if let Some(e) = self.entries.lock().get_mut(&id) {
            e.detached = Some(Instant::now());
        }
    }

    pub fn remove(&self, id: u64) -> Option<Arc<Session>> {
        self.entries.lock().remove(&id).map(|e| e.session)
    }

    /// Removes and returns the sessions detached for longer than `sustain`.
    pub fn expired(&self, sustain: Duration) -> Vec<Arc<Session>> {
        let mut entries = self.entries.lock();
        let ids: Vec<u64> = entries
            .iter()
            .filter(|(_, e)| e.detached.is_some_and(|at| at.elapsed() >= sustain))
            .map(|(id, _)| *id)
            .collect();
        ids.into_iter()
            .filter_map(|id| entries.remove(&id).map(|e| e.session))
            .collect()
    }
}

/// Releases the sessions whose sustain time ran out, once a second.
pub async fn expire_loop(m: Arc<Master>) {
    let sustain = Duration::from_secs(m.cfg.session_sustain);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        for s in m.session_table.expired(sustain) {
            tracing::info!(
                "session {} of {} expired: no reconnection within SESSION_SUSTAIN_TIME ({} s); \
                 its files are released",
                s.id,
                s.ip,
                sustain.as_secs()
            );
            crate::clserv::release_session(&m, &s);
        }
    }
}

/// Handles a session holds on one inode, and the access its opens were granted (R and W
/// bits of [`crate::access`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenRec {
    pub count: u32,
    pub grant: u32,
}

/// A registered mount or tool.
pub struct Session {
    pub id: u64,
    pub ip: IpAddr,
    pub root: Inode,
    pub read_only: bool,
    pub maproot: Option<(u32, u32)>,
    pub mapall: Option<(u32, u32)>,
    pub ignoregid: bool,
    pub mingoal: u8,
    pub maxgoal: u8,
    /// Open handles per inode in this session.
    pub open: Mutex<HashMap<Inode, OpenRec>>,
    /// A subfolder session: the files (not folders) it has been shown, the only ones it may
    /// name (folders are checked by their ancestry instead).
    pub known: Mutex<HashSet<Inode>>,
    pub tool: bool,
    /// A meta session (`moose-mount -m`, `moose-tool undelete`): it sees the trash only.
    pub meta: bool,
    /// Inode numbers set aside for the session's creates answered ahead.
    pub reserved: Mutex<ReservedInodes>,
    /// The mount asked to take over an earlier session that is gone (the master restarted,
    /// or the session expired): it may send again creates it answered ahead then.
    pub recovering: bool,
}

/// Ranges of inode numbers a session reserved, each `(next unused, end)`, oldest first. The
/// session creates with them in increasing order: a number is good once, and one from a
/// later range gives up what is left of the earlier ones.
#[derive(Debug, Default)]
pub struct ReservedInodes {
    ranges: std::collections::VecDeque<(Inode, Inode)>,
}

/// Ranges a session keeps at most; the oldest goes first.
const MAX_RESERVED_RANGES: usize = 4;

impl ReservedInodes {
    pub fn add(&mut self, first: Inode, count: u64) {
        if count == 0 {
            return;
        }
        if self.ranges.len() == MAX_RESERVED_RANGES {
            self.ranges.pop_front();
        }
        self.ranges.push_back((first, first + count));
    }

    /// Uses `inode`: true when it is reserved and above every number used before.
    pub fn take(&mut self, inode: Inode) -> bool {
        let Some(i) = self
            .ranges
            .iter()
            .position(|&(next, end)| (next..end).contains(&inode))
        else {
            return false;
        };
        self.ranges.drain(..i);
        self.ranges[0].0 = inode + 1;
        if self.ranges[0].0 == self.ranges[0].1 {
            self.ranges.pop_front();
        }
        true
    }
}

impl Session {
    pub fn new(id: u64, ip: IpAddr, root: Inode, line: &ExportLine, tool: bool) -> Self {
        Session {
            id,
            ip,
            root,
            read_only: line.opts.read_only,
            maproot: line.opts.maproot,
            mapall: line.opts.mapall,
            ignoregid: line.opts.ignoregid,
            mingoal: line.opts.mingoal,
            maxgoal: line.opts.maxgoal,
            open: Mutex::new(HashMap::new()),
            known: Mutex::new(HashSet::new()),
            tool,
            meta: false,
            reserved: Mutex::new(ReservedInodes::default()),
            recovering: false,
        }
    }

    /// Root's requests are checked as another user (`maproot` other than 0).
    pub fn maps_root(&self) -> bool {
        self.maproot.is_some_and(|ids| ids != (0, 0))
    }

    /// Remembers the inodes a reply shows a subfolder session (it may name them later).
    pub fn note_reply(&self, reply: &ClReply) {
        if self.root == moose_proto::ROOT_INODE {
            return;
        }
        match reply {
            ClReply::Attr(a) => {
                self.known.lock().insert(a.inode);
            }
            ClReply::Dir { entries, .. } => {
                self.known
                    .lock()
                    .extend(entries.iter().map(|e| e.attr.inode));
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reserved_inode_is_good_once_and_in_increasing_order() {
        let mut r = ReservedInodes::default();
        assert!(!r.take(10), "nothing reserved");
        r.add(10, 4);
        r.add(100, 2);
        assert!(r.take(11));
        assert!(!r.take(10), "below one used");
        assert!(!r.take(11), "used");
        assert!(!r.take(14), "past the range");
        assert!(
            r.take(100),
            "a later range gives up the rest of the earlier one"
        );
        assert!(!r.take(12));
        assert!(r.take(101));
        assert!(!r.take(101));
        assert!(!r.take(102));
    }
}
