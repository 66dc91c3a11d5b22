//! **space**: the chunkservers' free space as the running master adds it up. A full cluster
//! fails every write with `No space left on device`, and on a cluster with a trash a `rm`
//! frees nothing until the trash time has passed: the verdict says how much the trash keeps
//! and where to free it.

use std::sync::Arc;

use moose_formats::units::human_bytes;
use moose_proto::msg::ClusterInfo;

use crate::doctor::finding::{Finding, Status};
use crate::doctor::runner::Ctx;
use crate::engine::host::BoxFuture;

pub const CHECK: &str = "space";

/// Below this share of free space (in percent) the cluster is nearly full.
const LOW_PERCENT: u64 = 10;

/// What the verdict is made of, from the master's `ClusterInfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Space {
    pub total: u64,
    pub avail: u64,
    pub connected_chunkservers: usize,
    pub trash_files: u64,
    pub trash_bytes: u64,
}

impl Space {
    pub fn of(info: &ClusterInfo) -> Space {
        Space {
            total: info.total_space,
            avail: info.avail_space,
            connected_chunkservers: info.chunkservers.iter().filter(|c| c.connected).count(),
            trash_files: info.trash_files,
            trash_bytes: info.trash_bytes,
        }
    }
}

/// How full chunkservers holding `avail` of `total` bytes free are: ok, nearly full
/// (warning) or full (error, also with no space at all). The Overview's space gauge shows
/// the same.
pub fn fullness(total: u64, avail: u64) -> Status {
    if total == 0 || avail == 0 {
        Status::Error
    } else if avail.saturating_mul(100) / total < LOW_PERCENT {
        Status::Warning
    } else {
        Status::Ok
    }
}

/// Judges the cluster's space; `meta_mount`: the command that mounts its trash.
pub fn judge(host: &str, s: &Space, meta_mount: &str) -> Finding {
    let used = s.total.saturating_sub(s.avail);
    let evidence = format!(
        "master: {} used of {} ({} free) on {} connected chunkserver{}; trash {} file{}, {}",
        human_bytes(used),
        human_bytes(s.total),
        human_bytes(s.avail),
        s.connected_chunkservers,
        if s.connected_chunkservers == 1 {
            ""
        } else {
            "s"
        },
        s.trash_files,
        if s.trash_files == 1 { "" } else { "s" },
        human_bytes(s.trash_bytes)
    );
    if s.connected_chunkservers == 0 || s.total == 0 {
        return Finding::new(
            CHECK,
            host,
            Status::Error,
            "no chunkserver gives the master any space: every write fails",
        )
        .evidence(evidence)
        .fix("moosectl start");
    }
    let status = fullness(s.total, s.avail);
    let summary = match status {
        Status::Error => format!(
            "the chunkservers are full ({} used of {}): writes fail with 'No space left on device'",
            human_bytes(used),
            human_bytes(s.total)
        ),
        Status::Warning => format!(
            "the chunkservers are nearly full: {} free of {} ({}%)",
            human_bytes(s.avail),
            human_bytes(s.total),
            s.avail.saturating_mul(100) / s.total
        ),
        _ => {
            let summary = format!("{} free of {}", human_bytes(s.avail), human_bytes(s.total));
            return Finding::new(CHECK, host, Status::Ok, summary).evidence(evidence);
        }
    };
    if s.trash_files == 0 {
        return Finding::new(
            CHECK,
            host,
            status,
            format!("{summary}; add disks or chunkservers, or remove files"),
        )
        .evidence(evidence);
    }
    Finding::new(
        CHECK,
        host,
        status,
        format!(
            "{summary}; the trash keeps {} deleted file{} ({} and their copies) until their trash time passes: \
             remove them from the trash of a meta mount, or lower the trash time (moose-tool settrashtime)",
            s.trash_files,
            if s.trash_files == 1 { "" } else { "s" },
            human_bytes(s.trash_bytes)
        ),
    )
    .evidence(evidence)
    .fix(meta_mount)
}

pub fn check(ctx: Arc<Ctx>) -> BoxFuture<'static, Vec<Finding>> {
    Box::pin(async move {
        let Some(master) = ctx.master().filter(|m| ctx.scope.covers(&m.host)) else {
            return Vec::new();
        };
        let host = master.host.as_str();
        if let Some(why) = ctx.silent(host) {
            return vec![Finding::skipped(CHECK, host, &why)];
        }
        let meta_mount = format!(
            "moose-mount -m /mnt/moosefs-meta -H {} -P {}",
            master.address,
            ctx.fleet.model.master_client_port()
        );
        let finding = match ctx.running_master(&master).await {
            Ok(info) => judge(host, &Space::of(info), &meta_mount),
            Err(why) => Finding::new(
                CHECK,
                host,
                Status::Info,
                "the master does not answer; its space was not looked at",
            )
            .evidence(why.clone()),
        };
        vec![finding]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;
    const META: &str = "moose-mount -m /mnt/moosefs-meta -H 10.0.0.1 -P 9421";

    fn space(total: u64, avail: u64, trash_files: u64, trash_bytes: u64) -> Space {
        Space {
            total,
            avail,
            connected_chunkservers: 3,
            trash_files,
            trash_bytes,
        }
    }

    #[test]
    fn room_to_spare_is_ok() {
        let f = judge("m", &space(12 * GIB, 11 * GIB, 5, GIB), META);
        assert_eq!(f.status, Status::Ok);
        assert_eq!(f.summary, "11.0 GiB free of 12.0 GiB");
        assert!(
            f.evidence[0].contains("trash 5 files, 1.0 GiB"),
            "{:?}",
            f.evidence
        );
        assert_eq!(f.fix, None);
    }

    #[test]
    fn a_full_cluster_is_an_error_that_points_at_the_trash_holding_its_space() {
        let f = judge("m", &space(12 * GIB, 0, 1932, 6 * GIB), META);
        assert_eq!(f.status, Status::Error);
        assert!(
            f.summary.contains("No space left on device"),
            "{}",
            f.summary
        );
        assert!(
            f.summary
                .contains("the trash keeps 1932 deleted files (6.0 GiB"),
            "{}",
            f.summary
        );
        assert_eq!(f.fix.as_deref(), Some(META));
    }

    #[test]
    fn nearly_full_is_a_warning_and_without_a_trash_names_no_meta_mount() {
        let f = judge("m", &space(100 * GIB, 5 * GIB, 0, 0), META);
        assert_eq!(f.status, Status::Warning);
        assert!(
            f.summary.contains("5.0 GiB free of 100.0 GiB (5%)"),
            "{}",
            f.summary
        );
        assert!(
            f.summary.contains("add disks or chunkservers"),
            "{}",
            f.summary
        );
        assert_eq!(f.fix, None);
    }

    #[test]
    fn under_a_tenth_free_is_nearly_full_and_nothing_free_is_full() {
        assert_eq!(fullness(100, 10), Status::Ok);
        assert_eq!(fullness(100, 9), Status::Warning);
        assert_eq!(fullness(100, 0), Status::Error);
        assert_eq!(fullness(0, 0), Status::Error);
    }

    #[test]
    fn no_chunkserver_is_an_error() {
        let mut s = space(0, 0, 0, 0);
        s.connected_chunkservers = 0;
        let f = judge("m", &s, META);
        assert_eq!(f.status, Status::Error);
        assert_eq!(f.fix.as_deref(), Some("moosectl start"));
    }
}
