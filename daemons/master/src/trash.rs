//! The trash: a file whose last name is removed (unlink, or a rename over it) while its trash
//! time is above zero is kept, with its chunks, until that time is up; it can be put back at
//! its path (undelete) or freed earlier. Every change here is an [`Op`] applied through
//! [`State::apply`], so replay and metaloggers see the same trash.

use std::sync::Arc;
use std::time::Duration;

use moose_proto::msg::TRASH_BUCKETS;
use moose_proto::{FileKind, FsError, FsResult, Inode, Timespec, ROOT_INODE};

use crate::master::Master;
use crate::namespace::{NodeData, Trashed};
use crate::ops::Op;
use crate::state::{check_name, Applied, State};

/// Trash time of a new file system's root, inherited by everything created in it (stock's
/// default: one day).
pub const DEFAULT_TRASH_TIME: u32 = 86400;
/// The meta mount's bucket of a file in the trash (`trash/XXX/`, as stock MooseFS).
fn bucket_of(inode: Inode) -> u32 {
    (inode % u64::from(TRASH_BUCKETS)) as u32
}

/// How often expired files are looked for.
const PURGE_INTERVAL: Duration = Duration::from_secs(1);
/// Files freed per round, so that a huge expiry does not hold the state lock for long.
const PURGE_BATCH: usize = 1000;

impl State {
    /// A file losing its last name goes to the trash when it has a trash time and data (an
    /// empty file is kept only when still open, as in stock MooseFS).
    pub(crate) fn goes_to_trash(&self, inode: Inode, open: bool) -> bool {
        self.meta.nodes.get(&inode).is_some_and(|n| match &n.data {
            NodeData::File { length, .. } => n.trash_time > 0 && (*length > 0 || open),
            _ => false,
        })
    }

    /// Records `inode`, just unlinked as `name` in `parent`, in the trash.
    pub(crate) fn move_to_trash(
        &mut self,
        parent: Inode,
        name: &[u8],
        inode: Inode,
        time: Timespec,
    ) {
        let mut path = self.path_of(parent);
        if !path.is_empty() {
            path.push(b'/');
        }
        path.extend_from_slice(name);
        self.meta.trash.insert(
            inode,
            Trashed {
                path,
                deleted: time.sec,
            },
        );
        if let Some(at) = self.trash_expiry(inode) {
            self.rt.trash_by_expiry.insert((at, inode));
        }
        self.rt.trash_by_bucket.insert((bucket_of(inode), inode));
    }

    /// Takes `inode` out of the trash (freed or put back).
    pub(crate) fn untrash(&mut self, inode: Inode) {
        if let Some(at) = self.trash_expiry(inode) {
            self.rt.trash_by_expiry.remove(&(at, inode));
        }
        self.rt.trash_by_bucket.remove(&(bucket_of(inode), inode));
        self.meta.trash.remove(&inode);
    }

    /// Builds the expiry index of a loaded trash (a file's trash time does not change while
    /// it is there: no folder reaches it).
    pub(crate) fn index_trash(&mut self) {
        let index = self
            .meta
            .trash
            .keys()
            .filter_map(|&i| self.trash_expiry(i).map(|at| (at, i)))
            .collect();
        self.rt.trash_by_expiry = index;
        self.rt.trash_by_bucket = self.meta.trash.keys().map(|&i| (bucket_of(i), i)).collect();
    }

    /// The path of folder `dir` relative to the root ("" for the root).
    fn path_of(&self, mut dir: Inode) -> Vec<u8> {
        let mut parts: Vec<&[u8]> = Vec::new();
        while dir != ROOT_INODE {
            let Some(parent) = self
                .meta
                .nodes
                .get(&dir)
                .and_then(|n| n.dir())
                .map(|d| d.parent)
            else {
                break;
            };
            let Some(d) = self.meta.nodes.get(&parent).and_then(|n| n.dir()) else {
                break;
            };
            // Folders do not know their own name: find it in the parent.
            match d.iter().find(|(_, i)| *i == dir) {
                Some((name, _)) => parts.push(name),
                None => break,
            }
            if parent == dir {
                break;
            }
            dir = parent;
        }
        parts.reverse();
        parts.join(&b'/')
    }

    /// Up to `max` files in the trash with an inode above `after`, in inode order, only those
    /// of `bucket` when given; and whether that is the last of them.
    pub fn trash_page(&self, bucket: Option<u32>, after: Inode, max: usize) -> (Vec<Inode>, bool) {
        let from = after.saturating_add(1);
        let mut inodes: Vec<Inode> = match bucket {
            Some(b) => self
                .rt
                .trash_by_bucket
                .range((b, from)..=(b, Inode::MAX))
                .map(|&(_, i)| i)
                .take(max + 1)
                .collect(),
            None => self
                .meta
                .trash
                .range(from..)
                .map(|(&i, _)| i)
                .take(max + 1)
                .collect(),
        };
        let eof = inodes.len() <= max;
        inodes.truncate(max);
        (inodes, eof)
    }

    /// When a file in the trash is to be freed (Unix seconds).
    pub fn trash_expiry(&self, inode: Inode) -> Option<i64> {
        let t = self.meta.trash.get(&inode)?;
        let n = self.meta.nodes.get(&inode)?;
        Some(t.deleted.saturating_add(i64::from(n.trash_time)))
    }

    /// Files in the trash whose time is up at `now`, not open (they wait for their last
    /// close), at most `max`.
    pub fn expired_trash(&self, now: i64, max: usize) -> Vec<Inode> {
        self.rt
            .trash_by_expiry
            .iter()
            .take_while(|(at, _)| *at <= now)
            .map(|(_, i)| *i)
            .filter(|&i| !self.is_open(i))
            .take(max)
            .collect()
    }

    /// Number and total length of the files in the trash.
    pub fn trash_totals(&self) -> (u64, u64) {
        let bytes = self
            .meta
            .trash
            .keys()
            .filter_map(|i| self.meta.nodes.get(i))
            .map(|n| n.length())
            .sum();
        (self.meta.trash.len() as u64, bytes)
    }

    pub(crate) fn set_trash_time(
        &mut self,
        inode: Inode,
        trash_time: u32,
        recursive: bool,
        uid: u32,
        time: Timespec,
    ) -> FsResult<Applied> {
        self.node(inode)?;
        if self.meta.trash.contains_key(&inode) {
            // Its time is fixed once there (the expiry index relies on it).
            return Err(FsError::NoEnt);
        }
        let (mut changed, mut unchanged, mut not_permitted) = (0, 0, 0);
        let mut stack = vec![inode];
        while let Some(ino) = stack.pop() {
            let Some(n) = self.meta.nodes.get_mut(&ino) else {
                continue;
            };
            if uid != 0 && n.uid != uid {
                not_permitted += 1;
            } else if n.trash_time == trash_time {
                unchanged += 1;
            } else {
                n.trash_time = trash_time;
                n.ctime = time.into();
                changed += 1;
            }
            if recursive {
                if let Some(d) = n.dir() {
                    stack.extend(d.iter().map(|(_, i)| i));
                }
            }
        }
        Ok(Applied::GoalCounts {
            changed,
            unchanged,
            not_permitted,
        })
    }

    pub(crate) fn purge_trashed(&mut self, inode: Inode) -> FsResult<Applied> {
        if !self.meta.trash.contains_key(&inode) {
            return Err(FsError::NoEnt);
        }
        self.purge(inode);
        Ok(Applied::Done)
    }

    /// The folders on the way to where `inode` was, and whether each still exists: the
    /// existing prefix, then the names to create, then the file's name.
    fn undelete_plan(&self, inode: Inode) -> FsResult<UndeletePlan> {
        let t = self.meta.trash.get(&inode).ok_or(FsError::NoEnt)?;
        let mut parts: Vec<&[u8]> = t
            .path
            .split(|&b| b == b'/')
            .filter(|p| !p.is_empty())
            .collect();
        let name = parts.pop().ok_or(FsError::Inval)?.to_vec();
        check_name(&name)?;
        let mut parent = ROOT_INODE;
        let mut missing = Vec::new();
        for (k, part) in parts.iter().enumerate() {
            check_name(part)?;
            match self.dir(parent)?.get(part) {
                Some(child) => {
                    if !self.node(child)?.is_dir() {
                        return Err(FsError::NotDir);
                    }
                    parent = child;
                }
                None => {
                    missing = parts[k..].iter().map(|p| p.to_vec()).collect();
                    break;
                }
            }
        }
        if missing.is_empty() && self.dir(parent)?.get(&name).is_some() {
            return Err(FsError::Exist);
        }
        Ok(UndeletePlan {
            parent,
            missing,
            name,
        })
    }

    /// The (folder, name) edge an undelete of `inode` adds: its first missing folder, or the
    /// file's own name.
    pub(crate) fn undelete_edge(&self, inode: Inode) -> Option<(Inode, Vec<u8>)> {
        let plan = self.undelete_plan(inode).ok()?;
        let name = plan.missing.into_iter().next().unwrap_or(plan.name);
        Some((plan.parent, name))
    }

    /// How many folders an undelete of `inode` has to create (or why it cannot be done).
    pub fn undelete_needs(&self, inode: Inode) -> FsResult<usize> {
        Ok(self.undelete_plan(inode)?.missing.len())
    }

    /// Where a file in the trash was (relative to the root).
    pub fn trash_path(&self, inode: Inode) -> Option<&[u8]> {
        self.meta.trash.get(&inode).map(|t| t.path.as_slice())
    }

    pub(crate) fn undelete(
        &mut self,
        inode: Inode,
        new_dirs: &[Inode],
        time: Timespec,
    ) -> FsResult<Applied> {
        let plan = self.undelete_plan(inode)?;
        if plan.missing.len() != new_dirs.len() {
            return Err(FsError::Inval);
        }
        if new_dirs.iter().any(|d| self.meta.nodes.contains_key(d)) {
            return Err(FsError::Exist);
        }
        let mut parent = plan.parent;
        // `apply_op`, not `apply`: the folder counters are kept by the Undelete op as a whole.
        for (name, &dir) in plan.missing.into_iter().zip(new_dirs) {
            self.apply_op(&Op::Create {
                parent,
                name,
                inode: dir,
                kind: FileKind::Dir,
                mode: 0o755,
                uid: 0,
                gid: 0,
                rdev: 0,
                time,
            })?;
            parent = dir;
        }
        self.untrash(inode);
        let n = self.node_mut(inode)?;
        n.nlink = 1;
        n.ctime = time.into();
        let p = self.node_mut(parent)?;
        p.mtime = time.into();
        p.ctime = time.into();
        if let Some(d) = p.dir_mut() {
            d.insert(plan.name, inode);
        }
        Ok(Applied::Node(inode))
    }
}

struct UndeletePlan {
    /// The deepest folder of the path that exists.
    parent: Inode,
    /// Names of the folders to create below it.
    missing: Vec<Vec<u8>>,
    name: Vec<u8>,
}

/// Frees the files whose trash time is up, as changes like any other.
pub async fn purge_loop(m: Arc<Master>) {
    let mut tick = tokio::time::interval(PURGE_INTERVAL);
    loop {
        tick.tick().await;
        let mut st = m.state();
        let now = Timespec::now().sec;
        for inode in st.expired_trash(now, PURGE_BATCH) {
            if let Err(e) = m.commit(&mut st, Op::TrashPurge { inode }) {
                tracing::warn!("cannot free inode {inode} from the trash: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::namespace::Meta;
    use crate::test_ops::{create, t};

    fn with_data(st: &mut State, inode: Inode) {
        st.apply(&Op::AddChunk {
            inode,
            index: 0,
            chunk_id: inode * 10,
            version: 1,
        })
        .unwrap();
        st.apply(&Op::WriteEnd {
            inode,
            length: 100,
            time: t(1),
        })
        .unwrap();
    }

    fn unlink(st: &mut State, parent: Inode, name: &str, at: i64) {
        st.apply(&Op::Unlink {
            parent,
            name: name.as_bytes().to_vec(),
            keep: false,
            time: t(at),
        })
        .unwrap();
    }

    #[test]
    fn trash_time_is_inherited_and_set_recursively() {
        let mut st = State::new(Meta::fresh(1, t(0), 1));
        create(&mut st, ROOT_INODE, "d", 2, FileKind::Dir);
        assert_eq!(st.node(2).unwrap().trash_time, DEFAULT_TRASH_TIME);
        let r = st
            .apply(&Op::SetTrashTime {
                inode: 2,
                trash_time: 60,
                recursive: false,
                uid: 0,
                time: t(2),
            })
            .unwrap();
        assert!(matches!(r, Applied::GoalCounts { changed: 1, .. }));
        create(&mut st, 2, "f", 3, FileKind::File);
        assert_eq!(st.node(3).unwrap().trash_time, 60);
        let r = st
            .apply(&Op::SetTrashTime {
                inode: ROOT_INODE,
                trash_time: 0,
                recursive: true,
                uid: 5,
                time: t(3),
            })
            .unwrap();
        assert!(matches!(
            r,
            Applied::GoalCounts {
                not_permitted: 3,
                ..
            }
        ));
    }

    #[test]
    fn unlinked_file_goes_to_trash_expires_and_comes_back() {
        let mut st = State::new(Meta::fresh(1, t(0), 1));
        create(&mut st, ROOT_INODE, "a", 2, FileKind::Dir);
        create(&mut st, 2, "b", 3, FileKind::Dir);
        create(&mut st, 3, "f", 4, FileKind::File);
        with_data(&mut st, 4);
        unlink(&mut st, 3, "f", 100);
        assert_eq!(st.trash_path(4), Some(&b"a/b/f"[..]));
        assert!(
            st.meta.chunks.contains_key(&40),
            "chunks stay with the file"
        );
        assert_eq!(st.trash_totals(), (1, 100));
        assert_eq!(st.orphans(), vec![], "a trashed file is no orphan");
        assert_eq!(st.expired_trash(100 + 86399, 10), vec![]);
        assert_eq!(st.expired_trash(100 + 86400, 10), vec![4]);
        // A state loaded from a dump finds it due at the same time.
        let loaded = State::new(st.meta.clone());
        assert_eq!(loaded.expired_trash(100 + 86400, 10), vec![4]);
        // Its folders went meanwhile: they are made again.
        st.apply(&Op::RmDir {
            parent: 2,
            name: b"b".to_vec(),
            time: t(101),
        })
        .unwrap();
        assert_eq!(st.undelete_needs(4), Ok(1));
        assert_eq!(
            st.apply(&Op::Undelete {
                inode: 4,
                new_dirs: vec![],
                time: t(102)
            }),
            Err(FsError::Inval)
        );
        st.apply(&Op::Undelete {
            inode: 4,
            new_dirs: vec![9],
            time: t(102),
        })
        .unwrap();
        assert_eq!(st.lookup(2, b"b"), Ok(9));
        assert_eq!(st.lookup(9, b"f"), Ok(4));
        assert_eq!(st.node(4).unwrap().nlink, 1);
        assert!(st.meta.trash.is_empty());
        assert!(st.rt.trash_by_expiry.is_empty());
        assert!(st.rt.trash_by_bucket.is_empty());
    }

    #[test]
    fn the_trash_is_listed_by_bucket_from_an_index() {
        let mut st = State::new(Meta::fresh(1, t(0), 1));
        // Inodes 5 and 4101 share bucket 5; 6 is in bucket 6.
        for (name, inode) in [("x", 5), ("y", 6), ("z", 4101)] {
            create(&mut st, ROOT_INODE, name, inode, FileKind::File);
            with_data(&mut st, inode);
            unlink(&mut st, ROOT_INODE, name, 100);
        }
        for st in [&st, &State::new(st.meta.clone())] {
            assert_eq!(st.trash_page(Some(5), 0, 10), (vec![5, 4101], true));
            assert_eq!(st.trash_page(Some(5), 0, 1), (vec![5], false));
            assert_eq!(st.trash_page(Some(5), 5, 1), (vec![4101], true));
            assert_eq!(st.trash_page(Some(6), 0, 10), (vec![6], true));
            assert_eq!(st.trash_page(Some(7), 0, 10), (vec![], true));
            assert_eq!(st.trash_page(None, 5, 10), (vec![6, 4101], true));
        }
    }

    #[test]
    fn undelete_refuses_a_taken_name_and_purge_frees_chunks() {
        let mut st = State::new(Meta::fresh(1, t(0), 1));
        create(&mut st, ROOT_INODE, "f", 2, FileKind::File);
        with_data(&mut st, 2);
        unlink(&mut st, ROOT_INODE, "f", 5);
        create(&mut st, ROOT_INODE, "f", 3, FileKind::File);
        assert_eq!(st.undelete_needs(2), Err(FsError::Exist));
        st.apply(&Op::TrashPurge { inode: 2 }).unwrap();
        assert!(st.node(2).is_err());
        assert!(!st.meta.chunks.contains_key(&20));
        assert_eq!(st.apply(&Op::TrashPurge { inode: 2 }), Err(FsError::NoEnt));
    }

    #[test]
    fn rename_over_a_file_trashes_it_and_empty_or_untimed_files_are_freed() {
        let mut st = State::new(Meta::fresh(1, t(0), 1));
        create(&mut st, ROOT_INODE, "old", 2, FileKind::File);
        with_data(&mut st, 2);
        create(&mut st, ROOT_INODE, "new", 3, FileKind::File);
        st.apply(&Op::Rename {
            parent: ROOT_INODE,
            name: b"new".to_vec(),
            new_parent: ROOT_INODE,
            new_name: b"old".to_vec(),
            exchange: false,
            keep_target: false,
            time: t(2),
        })
        .unwrap();
        assert_eq!(st.trash_path(2), Some(&b"old"[..]));
        // Empty: freed at once.
        unlink(&mut st, ROOT_INODE, "old", 3);
        assert!(st.node(3).is_err());
        // Trash time 0: freed at once.
        create(&mut st, ROOT_INODE, "z", 4, FileKind::File);
        with_data(&mut st, 4);
        st.node_mut(4).unwrap().trash_time = 0;
        unlink(&mut st, ROOT_INODE, "z", 4);
        assert!(st.node(4).is_err());
        assert_eq!(st.meta.trash.len(), 1);
    }
}
