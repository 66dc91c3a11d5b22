//! The master's status as text, printed by `moose-tool info` and `moosectl status`.

use std::time::Duration;

use moose_common::units::human_bytes;
use moose_proto::msg::ClusterInfo;

/// How a caller may colour a counter: good when it is 0, else a warning or an alarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    Ok,
    Warn,
    Bad,
}

/// A duration as the two largest units: `42s`, `3m05s`, `2h07m`, `5d03h`.
pub fn duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86400, (s % 86400) / 3600),
    }
}

/// The status of the master reached at `at`; `paint` colours the chunk counters that matter.
pub fn status_text(info: &ClusterInfo, at: &str, paint: impl Fn(&str, Tone) -> String) -> String {
    let mut out = String::new();
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    let used = info.total_space.saturating_sub(info.avail_space);
    let connected = info.chunkservers.iter().filter(|c| c.connected).count();
    line(format!(
        "master {at} v{}, up {}, metadata version {}, cluster {:016X}",
        info.version,
        duration(Duration::from_secs(info.uptime_secs)),
        info.metadata_version,
        info.cluster_id
    ));
    line(format!(
        "space {} used of {} ({} free); files {}, folders {}, chunks {}",
        human_bytes(used),
        human_bytes(info.total_space),
        human_bytes(info.avail_space),
        info.files,
        info.dirs,
        info.chunks
    ));
    line(format!(
        "trash {} files, {}",
        info.trash_files,
        human_bytes(info.trash_bytes)
    ));
    line(format!(
        "chunkservers {connected} connected of {}; metaloggers {}; sessions {}",
        info.chunkservers.len(),
        info.metaloggers.len(),
        info.sessions
    ));
    let h = &info.health;
    let n = |v: u64, bad: Tone| paint(&v.to_string(), if v == 0 { Tone::Ok } else { bad });
    line(format!(
        "chunks: missing {}, endangered {}, undergoal {}, stable {}, overgoal {}, pending deletion {}, replicating {}",
        n(h.missing, Tone::Bad),
        n(h.endangered, Tone::Bad),
        n(h.undergoal, Tone::Warn),
        h.stable,
        h.overgoal,
        h.pending_deletion,
        h.replicating
    ));
    if let Some(secs) = h.swept_secs_ago {
        line(format!(
            "chunk counts from the health loop's last sweep, {secs} s ago (a master of many chunks counts them as it goes)"
        ));
    }
    if h.to_repair > 0 {
        line(format!(
            "chunks needing repair: {} (no copy has the metadata's version; see the master's log)",
            n(h.to_repair, Tone::Bad)
        ));
    }
    if h.moved_total > 0 {
        line(format!("rebalancing moves since start: {}", h.moved_total));
    }
    if !info.quotas.is_empty() {
        let over_soft = info
            .quotas
            .iter()
            .filter(|q| q.grace_left().is_some())
            .count() as u64;
        let acting_hard = info
            .quotas
            .iter()
            .filter(|q| q.grace_left() == Some(0))
            .count() as u64;
        line(format!(
            "quotas {}: over a soft limit {}, past the grace period {}",
            info.quotas.len(),
            n(over_soft, Tone::Warn),
            n(acting_hard, Tone::Bad)
        ));
    }
    for (goal, row) in h.matrix.iter().enumerate() {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .filter(|(_, &c)| c > 0)
            .map(|(copies, c)| {
                // The last column counts that many copies or more.
                let plus = if copies + 1 == row.len() { "+" } else { "" };
                format!("{c} with {copies}{plus} copies")
            })
            .collect();
        if !cells.is_empty() {
            line(format!("  goal {goal}: {}", cells.join(", ")));
        }
    }
    for m in &info.metaloggers {
        line(format!(
            "  metalogger {}: has version {}",
            m.addr, m.version
        ));
    }
    for cs in &info.chunkservers {
        line(format!(
            "  chunkserver {} (id {}, {}): {} chunks, {} of {}",
            cs.addr,
            cs.id,
            if cs.connected {
                "connected"
            } else {
                "disconnected"
            },
            cs.chunks,
            human_bytes(cs.used),
            human_bytes(cs.total)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use moose_proto::msg::{ChunkHealth, ChunkserverInfo, MetaloggerInfo};
    use moose_proto::CsAddr;

    use super::*;

    fn info() -> ClusterInfo {
        let mut matrix = vec![vec![0; 11]; 10];
        matrix[2][2] = 4;
        matrix[3][10] = 1;
        ClusterInfo {
            version: "0.1.0".into(),
            cluster_id: 0xABC,
            metadata_version: 3,
            metadata_synced: 3,
            metadata_syncs_asked: 0,
            total_space: 12 << 30,
            avail_space: (12 << 30) - (10 << 20),
            files: 1,
            dirs: 1,
            chunks: 5,
            chunkservers: vec![ChunkserverInfo {
                id: 2,
                removal: vec![],
                addr: CsAddr {
                    host: "127.0.0.1".into(),
                    port: 19422,
                },
                version: "0.1.0".into(),
                connected: true,
                chunks: 5,
                used: 10 << 20,
                total: 4 << 30,
                disks: vec![],
            }],
            metaloggers: vec![MetaloggerInfo {
                addr: "127.0.0.1".into(),
                version: 3,
            }],
            uptime_secs: 185,
            ops_total: 0,
            sessions: 1,
            trash_files: 2,
            trash_bytes: 10 << 20,
            health: ChunkHealth {
                matrix,
                undergoal: 1,
                stable: 4,
                moved_total: 2,
                ..ChunkHealth::default()
            },
            quotas: vec![],
        }
    }

    #[test]
    fn every_fact_in_order() {
        let text = status_text(&info(), "127.0.0.1:19421", |s, _| s.to_string());
        assert_eq!(
            text,
            "master 127.0.0.1:19421 v0.1.0, up 3m05s, metadata version 3, cluster 0000000000000ABC\n\
             space 10.0 MiB used of 12.0 GiB (12.0 GiB free); files 1, folders 1, chunks 5\n\
             trash 2 files, 10.0 MiB\n\
             chunkservers 1 connected of 1; metaloggers 1; sessions 1\n\
             chunks: missing 0, endangered 0, undergoal 1, stable 4, overgoal 0, pending deletion 0, replicating 0\n\
             rebalancing moves since start: 2\n\
             \x20 goal 2: 4 with 2 copies\n\
             \x20 goal 3: 1 with 10+ copies\n\
             \x20 metalogger 127.0.0.1: has version 3\n\
             \x20 chunkserver 127.0.0.1:19422 (id 2, connected): 5 chunks, 10.0 MiB of 4.0 GiB\n"
        );
    }

    #[test]
    fn counters_are_toned_by_what_they_mean() {
        let mut i = info();
        i.health.missing = 2;
        i.health.to_repair = 1;
        let text = status_text(&i, "m", |s, tone| format!("{s}<{tone:?}>"));
        assert!(text.contains("missing 2<Bad>, endangered 0<Ok>, undergoal 1<Warn>, stable 4,"));
        assert!(text.contains("chunks needing repair: 1<Bad> "));
    }

    #[test]
    fn durations_in_two_units() {
        assert_eq!(duration(Duration::from_secs(42)), "42s");
        assert_eq!(duration(Duration::from_secs(7620)), "2h07m");
        assert_eq!(duration(Duration::from_secs(5 * 86400 + 3 * 3600)), "5d03h");
    }
}
