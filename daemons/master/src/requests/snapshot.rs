//! `moose-tool dirinfo` and `makesnapshot`: answered from the folder counters, and one
//! [`Op::Snapshot`] under one hold of the state lock (so no write lands half in it).

use moose_proto::msg::ClReply;
use moose_proto::{Cred, FsError, FsResult, Inode, Timespec};

use super::{check_access, map_cred, writable, Outcome};
use crate::access::{R, W, X};
use crate::master::Master;
use crate::namespace::NodeData;
use crate::ops::Op;
use crate::sessions::Session;
use crate::snapshot::walk;

/// Figures of a folder's tree (or of a file), from the counters.
pub fn dir_info(m: &Master, inode: Inode) -> FsResult<Outcome> {
    let st = m.state();
    let stats = st.tree.of(&st.meta, inode).ok_or(FsError::NoEnt)?;
    Ok((ClReply::DirInfo(stats), None))
}

/// Makes a snapshot of `src` as `name` in `parent`.
#[allow(clippy::too_many_arguments)]
pub fn make(
    m: &Master,
    s: &Session,
    src: Inode,
    parent: Inode,
    name: Vec<u8>,
    replace: bool,
    cred: Cred,
    now: Timespec,
) -> FsResult<Outcome> {
    writable(s)?;
    let cred = map_cred(s, cred);
    let mut st = m.state();
    let st = &mut *st;
    check_access(st, s, src, &cred, R)?;
    check_access(st, s, parent, &cred, W | X)?;
    let tree = walk(&st.meta, src);
    // A chunk being written now would land half in the snapshot: the tool retries.
    let writing = tree.iter().any(
        |(ino, _, _)| match st.meta.nodes.get(ino).map(|n| &n.data) {
            Some(NodeData::File { chunks, .. }) => {
                chunks.ids().any(|c| st.rt.write_locks.contains_key(&c))
            }
            _ => false,
        },
    );
    if writing {
        return Err(FsError::Locked);
    }
    let keep = match st.dir(parent)?.get(&name) {
        Some(t) if replace => walk(&st.meta, t)
            .into_iter()
            .map(|(i, _, _)| i)
            .filter(|i| st.is_open(*i))
            .collect(),
        _ => Vec::new(),
    };
    let op = Op::Snapshot {
        src,
        parent,
        name,
        first_inode: st.meta.next_inode,
        replace,
        keep,
        time: now,
    };
    let (_, v) = m.commit(st, op)?;
    Ok((ClReply::Done, Some(v)))
}
