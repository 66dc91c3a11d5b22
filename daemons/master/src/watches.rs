//! What mounts keep and must hear about when someone else changes it.
//!
//! Folders whose names a mount keeps, so that it can answer "no such name" itself (the lookup
//! the kernel sends before every create). A mount watches a folder it listed from the start
//! or made; a change of the folder's names by anyone but that mount is pushed to it as a
//! notice, and the watch ends there (the mount forgets the folder and watches it again when
//! it next lists it). Changes a mount makes itself it applies from their answers.
//!
//! Files a mount has open, whose pages the kernel keeps: a change of their data by another
//! session is pushed as a notice (the mount drops the kernel's pages), for as long as the
//! file stays open. Files it closed are judged at the next open (see `page_cache.rs`).
//!
//! The table lives in the state's runtime part, so that a watch starts and a change is
//! noticed under the same lock as the listing, open or change: no change slips between them.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use moose_proto::Inode;

use crate::page_cache::{ClosedFiles, DataChanges};

/// Folders one session may watch; past this the oldest watch ends (with a notice).
const MAX_WATCHES_PER_SESSION: usize = 65_536;

/// What a notice is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice<'a> {
    /// The names of these folders changed.
    Folders(&'a [Inode]),
    /// The data of these open files changed.
    Files(&'a [Inode]),
}

/// Delivers a notice to a session's connection.
pub type NoticeSink = Arc<dyn Fn(Notice<'_>) + Send + Sync>;

struct Watcher {
    sink: NoticeSink,
    /// Folders in the order they were watched (some may have been noticed since).
    order: VecDeque<Inode>,
    /// Files the session has open.
    files: HashSet<Inode>,
    /// Files the session closed, for its next open of them.
    closed: ClosedFiles,
}

#[derive(Default)]
pub struct Watches {
    by_folder: HashMap<Inode, Vec<u64>>,
    by_file: HashMap<Inode, Vec<u64>>,
    sessions: HashMap<u64, Watcher>,
}

impl std::fmt::Debug for Watches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watches")
            .field("folders", &self.by_folder.len())
            .field("files", &self.by_file.len())
            .field("sessions", &self.sessions.len())
            .finish()
    }
}

impl Watches {
    /// Session `id` is connected and takes notices through `sink`; it has `open` files open
    /// (a session resumed after its connection broke).
    pub fn attach(&mut self, id: u64, sink: NoticeSink, open: impl IntoIterator<Item = Inode>) {
        self.detach(id);
        self.sessions.insert(
            id,
            Watcher {
                sink,
                order: VecDeque::new(),
                files: HashSet::new(),
                closed: ClosedFiles::default(),
            },
        );
        for file in open {
            self.opened(file, id);
        }
    }

    /// Session `id`'s connection ended: its watches end (a reconnected mount forgets every
    /// folder it knew and drops the kernel's pages of its open files, since notices could
    /// not reach it).
    pub fn detach(&mut self, id: u64) {
        let Some(w) = self.sessions.remove(&id) else {
            return;
        };
        for folder in w.order {
            self.unwatch(folder, id);
        }
        for file in w.files {
            remove_id(&mut self.by_file, file, id);
        }
    }

    /// Session `id` opened `file` (nothing if it takes no notices).
    pub fn opened(&mut self, file: Inode, id: u64) {
        let Some(w) = self.sessions.get_mut(&id) else {
            return;
        };
        if w.files.insert(file) {
            self.by_file.entry(file).or_default().push(id);
        }
    }

    /// Session `id` closed its last handle on `file` at metadata version `version`.
    pub fn closed(&mut self, file: Inode, id: u64, version: u64) {
        let Some(w) = self.sessions.get_mut(&id) else {
            return;
        };
        w.closed.note(file, version);
        if w.files.remove(&file) {
            remove_id(&mut self.by_file, file, id);
        }
    }

    /// Whether session `id`, opening `file`, may keep the kernel's pages of it: it has the
    /// file open already (and hears of every change), or no change came since it closed it.
    pub fn may_keep_pages(&self, file: Inode, id: u64, changes: &DataChanges) -> bool {
        let Some(w) = self.sessions.get(&id) else {
            return false;
        };
        w.files.contains(&file)
            || w.closed
                .get(file)
                .is_some_and(|closed| changes.newest(file) <= closed)
    }

    /// The data of `file` changed, by session `actor` (its kernel wrote it) or by no session:
    /// every other session that has it open gets a notice.
    pub fn file_changed(&self, file: Inode, actor: Option<u64>) {
        let Some(ids) = self.by_file.get(&file) else {
            return;
        };
        for id in ids.iter().filter(|&&id| Some(id) != actor) {
            if let Some(w) = self.sessions.get(id) {
                (w.sink)(Notice::Files(&[file]));
            }
        }
    }

    /// Session `id` keeps the names of `folder` from now on (nothing if it takes no notices).
    pub fn watch(&mut self, folder: Inode, id: u64) {
        let Some(w) = self.sessions.get_mut(&id) else {
            return;
        };
        let ids = self.by_folder.entry(folder).or_default();
        if ids.contains(&id) {
            return;
        }
        ids.push(id);
        w.order.push_back(folder);
        if w.order.len() <= MAX_WATCHES_PER_SESSION {
            return;
        }
        let Some(oldest) = w.order.pop_front() else {
            return;
        };
        let sink = w.sink.clone();
        if self.unwatch(oldest, id) {
            sink(Notice::Folders(&[oldest]));
        }
    }

    /// The names of `folders` changed, by session `actor` (which applies the change itself)
    /// or by no session: every other watcher gets a notice and stops watching them.
    pub fn changed(&mut self, folders: &[Inode], actor: Option<u64>) {
        let mut told: Vec<(u64, Vec<Inode>)> = Vec::new();
        for &folder in folders {
            let Some(ids) = self.by_folder.get_mut(&folder) else {
                continue;
            };
            ids.retain(|&id| {
                if Some(id) == actor {
                    return true;
                }
                // `folders` has no repeats, and a session watches a folder once.
                match told.iter_mut().find(|(t, _)| *t == id) {
                    Some((_, f)) => f.push(folder),
                    None => told.push((id, vec![folder])),
                }
                false
            });
            if ids.is_empty() {
                self.by_folder.remove(&folder);
            }
        }
        for (id, folders) in told {
            if let Some(w) = self.sessions.get(&id) {
                (w.sink)(Notice::Folders(&folders));
            }
        }
    }

    /// True when no folder is watched (a change needs no look at its folders).
    pub fn is_empty(&self) -> bool {
        self.by_folder.is_empty()
    }

    /// Ends the watch of `folder` by `id`; true when there was one.
    fn unwatch(&mut self, folder: Inode, id: u64) -> bool {
        remove_id(&mut self.by_folder, folder, id)
    }

    /// Folders watched by anyone.
    #[cfg(test)]
    fn watched(&self) -> usize {
        self.by_folder.len()
    }
}

/// Removes session `id` from the sessions of `key`; true when it was there.
fn remove_id(map: &mut HashMap<Inode, Vec<u64>>, key: Inode, id: u64) -> bool {
    let Some(ids) = map.get_mut(&key) else {
        return false;
    };
    let before = ids.len();
    ids.retain(|&i| i != id);
    let removed = ids.len() != before;
    if ids.is_empty() {
        map.remove(&key);
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;

    type Got = Arc<Mutex<Vec<Vec<Inode>>>>;

    /// A sink and the folder and file notices it got.
    fn sinks() -> (NoticeSink, Got, Got) {
        let (folders, files): (Got, Got) = Default::default();
        let (fo, fi) = (folders.clone(), files.clone());
        let sink: NoticeSink = Arc::new(move |n: Notice<'_>| match n {
            Notice::Folders(f) => fo.lock().push(f.to_vec()),
            Notice::Files(f) => fi.lock().push(f.to_vec()),
        });
        (sink, folders, files)
    }

    fn sink() -> (NoticeSink, Got) {
        let (s, folders, _) = sinks();
        (s, folders)
    }

    const NONE: [Inode; 0] = [];

    #[test]
    fn a_change_is_told_to_every_watcher_but_its_maker_once() {
        let mut w = Watches::default();
        let (s1, got1) = sink();
        let (s2, got2) = sink();
        w.attach(1, s1, NONE);
        w.attach(2, s2, NONE);
        w.watch(10, 1);
        w.watch(10, 2);
        w.watch(11, 2);
        w.changed(&[10, 11], Some(1));
        assert!(
            got1.lock().is_empty(),
            "the maker applies its change itself"
        );
        assert_eq!(*got2.lock(), vec![vec![10, 11]]);
        // Session 2 forgot both folders: no second notice until it watches again.
        w.changed(&[10, 11], None);
        assert_eq!(got2.lock().len(), 1);
        assert_eq!(*got1.lock(), vec![vec![10]]);
        assert_eq!(w.watched(), 0);
    }

    #[test]
    fn sessions_without_a_sink_watch_nothing_and_detaching_ends_watches() {
        let mut w = Watches::default();
        w.watch(10, 7);
        assert_eq!(w.watched(), 0);
        let (s, got) = sink();
        w.attach(7, s, NONE);
        w.watch(10, 7);
        w.watch(10, 7);
        w.detach(7);
        assert_eq!(w.watched(), 0);
        w.changed(&[10], None);
        assert!(got.lock().is_empty());
    }

    #[test]
    fn the_oldest_watch_ends_with_a_notice_past_the_limit() {
        let mut w = Watches::default();
        let (s, got) = sink();
        w.attach(1, s, NONE);
        for f in 0..=MAX_WATCHES_PER_SESSION as u64 {
            w.watch(100 + f, 1);
        }
        assert_eq!(*got.lock(), vec![vec![100]]);
        assert_eq!(w.watched(), MAX_WATCHES_PER_SESSION);
    }

    #[test]
    fn a_change_of_an_open_files_data_is_told_to_every_other_session_that_has_it_open() {
        let mut w = Watches::default();
        let (s1, _, files1) = sinks();
        let (s2, _, files2) = sinks();
        w.attach(1, s1, NONE);
        w.attach(2, s2, [30]);
        w.opened(30, 1);
        w.file_changed(30, Some(1));
        assert!(files1.lock().is_empty(), "the writer's kernel has the data");
        assert_eq!(*files2.lock(), vec![vec![30]]);
        // The watch lasts while the file is open.
        w.file_changed(30, None);
        assert_eq!(files1.lock().len(), 1);
        assert_eq!(files2.lock().len(), 2);
        w.closed(30, 2, 40);
        w.detach(1);
        w.file_changed(30, None);
        assert_eq!((files1.lock().len(), files2.lock().len()), (1, 2));
        assert!(w.by_file.is_empty());
    }

    #[test]
    fn pages_are_kept_while_open_or_when_nothing_changed_since_the_close() {
        let mut w = Watches::default();
        let mut changes = DataChanges::default();
        let (s, _, _) = sinks();
        assert!(!w.may_keep_pages(30, 1, &changes), "no session");
        w.attach(1, s, NONE);
        assert!(!w.may_keep_pages(30, 1, &changes), "never opened");
        w.opened(30, 1);
        assert!(
            w.may_keep_pages(30, 1, &changes),
            "open: notices keep it fresh"
        );
        w.closed(30, 1, 50);
        assert!(w.may_keep_pages(30, 1, &changes));
        changes.changed(30, 50);
        assert!(w.may_keep_pages(30, 1, &changes), "its own last write");
        changes.changed(30, 51);
        assert!(
            !w.may_keep_pages(30, 1, &changes),
            "changed after the close"
        );
        w.opened(30, 1);
        w.closed(30, 1, 60);
        assert!(w.may_keep_pages(30, 1, &changes));
        // A new connection knows nothing of what the old one closed.
        let (s, _, _) = sinks();
        w.attach(1, s, NONE);
        assert!(!w.may_keep_pages(30, 1, &changes));
    }
}
