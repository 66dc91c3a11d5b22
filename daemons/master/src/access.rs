//! Permission checks from mode bits, done by the master for every client request (the mount
//! also asks the kernel to check, but the master is the authority).

use moose_proto::Cred;

use crate::namespace::Node;

pub const R: u32 = 4;
pub const W: u32 = 2;
pub const X: u32 = 1;

/// True when `cred` may access `node` for every bit of `mask` (R, W, X).
pub fn may(node: &Node, cred: &Cred, mask: u32, ignoregid: bool) -> bool {
    if cred.uid == 0 {
        // Root may read and write anything, and execute anything executable by someone.
        return mask & X == 0 || node.is_dir() || node.mode & 0o111 != 0;
    }
    let mode = node.mode as u32;
    let bits = if cred.uid == node.uid {
        (mode >> 6) & 7
    } else if ignoregid || cred.in_group(node.gid) {
        (mode >> 3) & 7
    } else {
        mode & 7
    };
    bits & mask == mask
}

/// The sticky-bit rule: in a sticky folder only the owner of the entry or of the folder (or
/// root) may remove or rename it.
pub fn sticky_allows(dir: &Node, entry: &Node, cred: &Cred) -> bool {
    dir.mode & 0o1000 == 0 || cred.uid == 0 || cred.uid == dir.uid || cred.uid == entry.uid
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::namespace::NodeData;
    use moose_proto::{FileKind, Timespec};

    fn file(mode: u16, uid: u32, gid: u32) -> Node {
        Node {
            kind: FileKind::File,
            mode,
            uid,
            gid,
            atime: Timespec::default(),
            mtime: Timespec::default(),
            ctime: Timespec::default(),
            nlink: 1,
            goal: 1,
            xattrs: Default::default(),
            data: NodeData::File {
                length: 0,
                chunks: vec![],
            },
        }
    }

    fn cred(uid: u32, gid: u32, groups: Vec<u32>) -> Cred {
        Cred { uid, gid, groups }
    }

    #[test]
    fn owner_group_other() {
        let f = file(0o640, 10, 20);
        assert!(may(&f, &cred(10, 99, vec![]), R | W, false));
        assert!(may(&f, &cred(11, 20, vec![]), R, false));
        assert!(!may(&f, &cred(11, 20, vec![]), W, false));
        assert!(may(&f, &cred(11, 5, vec![20]), R, false));
        assert!(!may(&f, &cred(11, 5, vec![]), R, false));
        assert!(may(&f, &cred(11, 5, vec![]), R, true));
        // The owner class applies even when it grants less than others.
        let g = file(0o047, 10, 20);
        assert!(!may(&g, &cred(10, 20, vec![]), R, false));
    }

    #[test]
    fn root_needs_some_x_to_execute() {
        assert!(may(&file(0o000, 1, 1), &cred(0, 0, vec![]), R | W, false));
        assert!(!may(&file(0o644, 1, 1), &cred(0, 0, vec![]), X, false));
        assert!(may(&file(0o100, 1, 1), &cred(0, 0, vec![]), X, false));
    }
}
