//! Quota requests: `setquota`/`delquota` (one op), `getquota`/`repquota` (reports), the
//! allowance a client asks before a write(2) extends a file, and `statfs` under a quota.

use std::sync::Arc;
use std::time::Duration;

use moose_proto::msg::{ClReply, QuotaLimits, StatfsReply};
use moose_proto::{Cred, FsError, FsResult, Inode};

use super::{map_cred, writable, Outcome};
use crate::master::Master;
use crate::ops::Op;
use crate::quota;
use crate::sessions::Session;
use crate::state::State;

/// Starts or stops the grace clocks that changed (each an op in the changelog).
pub fn tick(m: &Master, st: &mut State) {
    for op in quota::clock_changes(st, quota::unix_now()) {
        if let Err(e) = m.commit(st, op) {
            tracing::warn!("cannot record a quota's grace clock: {e}");
        }
    }
}

/// Sets or removes a folder's quota; only root may.
pub fn set(
    m: &Master,
    s: &Session,
    inode: Inode,
    limits: Option<QuotaLimits>,
    cred: Cred,
) -> FsResult<Outcome> {
    writable(s)?;
    if map_cred(s, cred).uid != 0 {
        return Err(FsError::Perm);
    }
    let mut st = m.state();
    let (_, v) = m.commit(
        &mut st,
        Op::SetQuota {
            inode,
            quota: limits,
        },
    )?;
    tick(m, &mut st);
    Ok((ClReply::Done, Some(v)))
}

/// The quota of `inode` (none: `ENOENT`), or with `under` every quota in its tree.
pub fn get(m: &Master, inode: Inode, under: bool) -> FsResult<Outcome> {
    let mut st = m.state();
    tick(m, &mut st);
    if !st.node(inode)?.is_dir() {
        return Err(FsError::NotDir);
    }
    let dirs = if under {
        quota::under(&st, inode)
    } else if st.meta.quotas.contains_key(&inode) {
        vec![inode]
    } else {
        return Err(FsError::NoEnt);
    };
    Ok((
        ClReply::Quotas(quota::reports(&st, &dirs, m.cfg.quota_grace)),
        None,
    ))
}

/// How far a file may grow.
pub fn allowance(m: &Master, inode: Inode) -> FsResult<Outcome> {
    let st = m.state();
    let end = quota::allowance(&st, inode, m.cfg.quota_grace)?;
    Ok((
        ClReply::Allowance {
            end,
            quotas: !st.meta.quotas.is_empty(),
        },
        None,
    ))
}

/// `statfs` at `inode`: the cluster's figures, or under a size quota the quota's.
pub fn statfs_at(m: &Master, inode: Inode) -> FsResult<Outcome> {
    let mut reply = super::status::statfs(m);
    if let Some((total, used)) = quota::statfs_limit(&m.state(), inode) {
        let avail = total.saturating_sub(used).min(reply.avail);
        reply = StatfsReply {
            total,
            avail,
            used,
            inodes: reply.inodes,
        };
    }
    Ok((ClReply::Statfs(reply), None))
}

/// Starts and stops the grace periods of soft limits as usage crosses them.
pub async fn clock_loop(m: Arc<Master>) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    loop {
        every.tick().await;
        let mut st = m.state();
        if !st.meta.quotas.is_empty() {
            tick(&m, &mut st);
        }
    }
}
