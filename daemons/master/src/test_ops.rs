//! What the master's unit tests share: times and the create they build states with.

use moose_proto::{FileKind, Inode, Timespec};

use crate::ops::Op;
use crate::state::State;

/// `s` whole seconds.
pub fn t(s: i64) -> Timespec {
    Timespec { sec: s, nsec: 0 }
}

/// Creates `name` (mode 755, owned by root, at second 1) in `parent` as `inode`.
pub fn create(st: &mut State, parent: Inode, name: &str, inode: Inode, kind: FileKind) {
    st.apply(&Op::Create {
        parent,
        name: name.as_bytes().to_vec(),
        inode,
        kind,
        mode: 0o755,
        uid: 0,
        gid: 0,
        rdev: 0,
        time: t(1),
    })
    .unwrap();
}
