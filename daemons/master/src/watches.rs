//! Folders whose names a mount keeps, so that it can answer "no such name" itself (the lookup
//! the kernel sends before every create). A mount watches a folder it listed from the start
//! or made; a change of the folder's names by anyone but that mount is pushed to it as a
//! notice, and the watch ends there (the mount forgets the folder and watches it again when
//! it next lists it). Changes a mount makes itself it applies from their answers.
//!
//! The table lives in the state's runtime part, so that a watch starts and a change is
//! noticed under the same lock as the listing or the change: no change slips between a
//! listing and its watch.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use moose_proto::Inode;

/// Folders one session may watch; past this the oldest watch ends (with a notice).
const MAX_WATCHES_PER_SESSION: usize = 65_536;

/// Delivers a notice to a session's connection.
pub type NoticeSink = Arc<dyn Fn(&[Inode]) + Send + Sync>;

struct Watcher {
    sink: NoticeSink,
    /// Folders in the order they were watched (some may have been noticed since).
    order: VecDeque<Inode>,
}

#[derive(Default)]
pub struct Watches {
    by_folder: HashMap<Inode, Vec<u64>>,
    sessions: HashMap<u64, Watcher>,
}

impl std::fmt::Debug for Watches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watches")
            .field("folders", &self.by_folder.len())
            .field("sessions", &self.sessions.len())
            .finish()
    }
}

impl Watches {
    /// Session `id` is connected and takes notices through `sink`.
    pub fn attach(&mut self, id: u64, sink: NoticeSink) {
        self.detach(id);
        self.sessions.insert(
            id,
            Watcher {
                sink,
                order: VecDeque::new(),
            },
        );
    }

    /// Session `id`'s connection ended: its watches end (a reconnected mount forgets every
    /// folder it knew, since notices could not reach it).
    pub fn detach(&mut self, id: u64) {
        let Some(w) = self.sessions.remove(&id) else {
            return;
        };
        for folder in w.order {
            self.unwatch(folder, id);
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
            sink(&[oldest]);
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
                (w.sink)(&folders);
            }
        }
    }

    /// True when no folder is watched (a change needs no look at its folders).
    pub fn is_empty(&self) -> bool {
        self.by_folder.is_empty()
    }

    /// Ends the watch of `folder` by `id`; true when there was one.
    fn unwatch(&mut self, folder: Inode, id: u64) -> bool {
        let Some(ids) = self.by_folder.get_mut(&folder) else {
            return false;
        };
        let before = ids.len();
        ids.retain(|&i| i != id);
        let removed = ids.len() != before;
        if ids.is_empty() {
            self.by_folder.remove(&folder);
        }
        removed
    }

    /// Folders watched by anyone.
    #[cfg(test)]
    fn watched(&self) -> usize {
        self.by_folder.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;

    fn sink() -> (NoticeSink, Arc<Mutex<Vec<Vec<Inode>>>>) {
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        (Arc::new(move |f: &[Inode]| g.lock().push(f.to_vec())), got)
    }

    #[test]
    fn a_change_is_told_to_every_watcher_but_its_maker_once() {
        let mut w = Watches::default();
        let (s1, got1) = sink();
        let (s2, got2) = sink();
        w.attach(1, s1);
        w.attach(2, s2);
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
        w.attach(7, s);
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
        w.attach(1, s);
        for f in 0..=MAX_WATCHES_PER_SESSION as u64 {
            w.watch(100 + f, 1);
        }
        assert_eq!(*got.lock(), vec![vec![100]]);
        assert_eq!(w.watched(), MAX_WATCHES_PER_SESSION);
    }
}
