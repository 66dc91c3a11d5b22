//! What the panes and `moosectl status` show, worked out from the model and the last
//! snapshot: one place, so that the screen and the headless output agree.

use std::time::Duration;

use moose_inventory::{admission, Export, Role, RoleInstance};
use moose_proto::msg::{ChunkserverInfo, ClusterInfo};
use serde::Serialize;

use crate::engine::exec::{self, StepState};
use crate::engine::model::Model;
use crate::engine::monitor::{InstanceStatus, Snapshot};
use crate::engine::plan::StepKind;
use crate::engine::probe::Process;
use crate::tui::app::{App, Level, Pane};

/// One row of the Servers pane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServerRow {
    pub host: String,
    pub instance: String,
    pub role: Role,
    pub state: String,
    #[serde(skip)]
    pub level: Level,
    pub pid: Option<u32>,
    /// Empty when the role does not report it.
    pub version: String,
    #[serde(serialize_with = "secs")]
    pub uptime: Option<Duration>,
    /// Master: serving; metalogger: connected; chunkserver: registered; client: statfs.
    pub registered: String,
    /// A problem and its fix, when there is one.
    pub note: String,
}

fn secs<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&d.as_secs()),
        None => s.serialize_none(),
    }
}

/// The master's record of the chunkserver instance `i`.
pub fn chunkserver_of<'a>(info: &'a ClusterInfo, i: &RoleInstance) -> Option<&'a ChunkserverInfo> {
    let port = i.listens.first().copied()?;
    info.chunkservers
        .iter()
        .find(|c| c.addr.host == i.address && c.addr.port == port)
}

/// The row of instance `i` given its status and the master's answer; `ips` are the
/// addresses of its host.
pub fn server_row(
    i: &RoleInstance,
    ips: &[String],
    st: Option<&InstanceStatus>,
    master: Option<&Result<ClusterInfo, String>>,
) -> ServerRow {
    let info = master.and_then(|m| m.as_ref().ok());
    let mut row = ServerRow {
        host: i.host.clone(),
        instance: i.name.clone(),
        role: i.role,
        state: "probing".to_string(),
        level: Level::Info,
        pid: None,
        version: String::new(),
        uptime: None,
        registered: String::new(),
        note: String::new(),
    };
    let Some(st) = st else {
        return row;
    };
    row.pid = st.process.pid();
    row.uptime = st.uptime;
    match &st.process {
        Process::Running { .. } => {
            row.state = "running".into();
            row.level = Level::Info;
        }
        Process::Stopped => {
            row.state = "stopped".into();
            row.level = Level::Warn;
        }
        Process::Unknown { reason } => {
            row.state = if reason.starts_with("unreachable") {
                "unreachable".into()
            } else {
                "unknown".into()
            };
            row.level = Level::Error;
            row.note = reason.clone();
        }
    }
    match i.role {
        Role::Master => match master {
            Some(Ok(info)) => {
                row.version = info.version.clone();
                row.registered = "serving".into();
            }
            Some(Err(e)) => {
                row.registered = "not answering".into();
                if row.note.is_empty() && row.pid.is_some() {
                    row.note = e.clone();
                    row.level = Level::Error;
                }
            }
            None => {}
        },
        Role::Metalogger => {
            if let Some(info) = info {
                match exec::metalogger_from(info, ips) {
                    Some(m) => {
                        let behind = info.metadata_version.saturating_sub(m.version);
                        row.registered = if behind == 0 {
                            "connected, in sync".to_string()
                        } else {
                            format!("connected, {behind} behind")
                        };
                    }
                    None => {
                        row.registered = "not connected".into();
                        if row.pid.is_some() {
                            row.level = Level::Warn;
                        }
                    }
                }
            }
        }
        Role::Chunkserver => {
            if let Some(info) = info {
                match chunkserver_of(info, i) {
                    Some(c) if c.connected => {
                        row.registered = format!("yes (id {})", c.id);
                        row.version = c.version.clone();
                    }
                    Some(c) => row.registered = format!("disconnected (id {})", c.id),
                    None => row.registered = "no".into(),
                }
                if row.pid.is_some() && !row.registered.starts_with("yes") {
                    row.level = Level::Warn;
                }
            }
        }
        Role::Client => match &st.mount {
            Some(Ok(p)) => {
                row.state = if p.healthy() {
                    "mounted".into()
                } else if p.mounted {
                    "stale mount".into()
                } else if p.pids.is_empty() {
                    "not mounted".into()
                } else {
                    "mounting".into()
                };
                row.level = if p.healthy() {
                    Level::Info
                } else if p.mounted {
                    Level::Error
                } else {
                    Level::Warn
                };
                row.registered = match &p.statfs {
                    Some(Ok((total, _))) => format!("statfs ok ({})", crate::fmt::bytes(*total)),
                    Some(Err(e)) => format!("statfs fails: {e}"),
                    None => String::new(),
                };
                if let Some(remark) = p.remark(&i.host) {
                    row.note = remark;
                    if p.cannot_mount(&i.host).is_some() {
                        row.level = Level::Error;
                    }
                }
            }
            Some(Err(e)) => {
                row.state = "unknown".into();
                row.level = Level::Error;
                row.note = e.clone();
            }
            None => {}
        },
    }
    row
}

/// Every instance's row.
pub fn server_rows(model: &Model, snap: Option<&Snapshot>) -> Vec<ServerRow> {
    model
        .instances
        .iter()
        .enumerate()
        .map(|(k, i)| {
            server_row(
                i,
                model.ips_of(&i.host),
                snap.and_then(|s| s.instances.get(k)),
                snap.map(|s| &s.master),
            )
        })
        .collect()
}

/// One row of the Disks pane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskRow {
    /// `address:port` of the chunkserver.
    pub server: String,
    /// The inventory instance (`chunkserver-19422@local`), when the inventory has it.
    pub instance: Option<String>,
    /// Model index of that instance.
    pub instance_index: Option<usize>,
    pub path: String,
    pub chunks: u64,
    pub used: u64,
    pub total: u64,
    pub errors: u64,
    pub state: String,
    pub level: Level,
}

/// Every disk the master knows, chunkserver by chunkserver.
pub fn disk_rows(model: &Model, info: &ClusterInfo) -> Vec<DiskRow> {
    let mut out = Vec::new();
    for cs in &info.chunkservers {
        let inst = model.instances.iter().position(|i| {
            i.role == Role::Chunkserver
                && i.address == cs.addr.host
                && i.listens.first() == Some(&cs.addr.port)
        });
        for d in &cs.disks {
            let removal = cs.removal.iter().find(|r| r.disk == d.path);
            let (state, level) = if !cs.connected {
                ("server disconnected".to_string(), Level::Warn)
            } else if d.damaged {
                ("damaged".to_string(), Level::Error)
            } else if d.marked_for_removal {
                match removal {
                    Some(r) if r.remaining == 0 => {
                        ("removable: all copied".to_string(), Level::Info)
                    }
                    Some(r) => (format!("removing: {} to copy", r.remaining), Level::Warn),
                    None => ("marked for removal".to_string(), Level::Warn),
                }
            } else if d.errors > 0 {
                ("ok, with errors".to_string(), Level::Warn)
            } else {
                ("ok".to_string(), Level::Info)
            };
            out.push(DiskRow {
                server: cs.addr.to_string(),
                instance: inst.map(|k| {
                    let i = &model.instances[k];
                    format!("{}@{}", i.name, i.host)
                }),
                instance_index: inst,
                path: d.path.clone(),
                chunks: d.chunks,
                used: d.used,
                total: d.total,
                errors: d.errors,
                state,
                level,
            });
        }
    }
    out
}

/// One exports line and who it lets in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportRow {
    pub line: String,
    pub address: String,
    pub path: String,
    pub options: String,
    /// Client hosts of the inventory whose address this line matches.
    pub admits: Vec<String>,
    /// Client hosts whose address is a name (not checked here).
    pub unchecked: Vec<String>,
}

/// The exports lines of the inventory and the client hosts each admits: the line the master
/// picks for the client (`moose_inventory::admission`, the master's own code).
pub fn export_rows(model: &Model) -> Vec<ExportRow> {
    let exports = &model.inventory.exports;
    let mut rows: Vec<ExportRow> = exports
        .iter()
        .map(|e| ExportRow {
            line: export_line(e),
            address: e.address.clone(),
            path: e.path.clone(),
            options: e.options.join(","),
            admits: Vec::new(),
            unchecked: Vec::new(),
        })
        .collect();
    let admission = admission::exports_admission(exports);
    for h in &model.inventory.hosts {
        let Some(client) = &h.client else {
            continue;
        };
        match admission::admit_client(&admission, &h.address, client) {
            // Line N is the N-th [[exports]].
            Some(Ok(line)) => {
                if let Some(row) = rows.get_mut(line.line.wrapping_sub(1)) {
                    row.admits.push(h.name.clone());
                }
            }
            Some(Err(_)) => {}
            None => rows
                .iter_mut()
                .for_each(|r| r.unchecked.push(h.name.clone())),
        }
    }
    rows
}

/// Client hosts of the inventory that no exports line admits.
pub fn unadmitted_clients(model: &Model, rows: &[ExportRow]) -> Vec<String> {
    model
        .inventory
        .hosts
        .iter()
        .filter(|h| h.has_role(Role::Client))
        .filter(|h| {
            !rows
                .iter()
                .any(|r| r.admits.contains(&h.name) || r.unchecked.contains(&h.name))
        })
        .map(|h| format!("{} ({})", h.name, h.address))
        .collect()
}

/// The line as it is written into the master's exports file.
pub fn export_line(e: &Export) -> String {
    let mut s = format!("{} {}", e.address, e.path);
    if !e.options.is_empty() {
        s.push(' ');
        s.push_str(&e.options.join(","));
    }
    s
}

/// True when any of `fields` contains `filter` (case-insensitive); `!text` inverts.
fn row_matches(filter: &str, fields: &[&str]) -> bool {
    let f = crate::engine::logs::Filter::parse(filter);
    f.is_empty() || f.matches(&fields.join(" "))
}

/// The Servers rows the filter lets through, with their model index; a role the running
/// plan is acting on shows what is happening to it.
pub fn visible_servers(app: &App) -> Vec<(usize, ServerRow)> {
    let filter = app.filter(Pane::Servers);
    server_rows(&app.model, app.snapshot.as_ref())
        .into_iter()
        .enumerate()
        .map(|(k, mut row)| {
            if let Some((kind, state)) = app.operation.as_ref().and_then(|o| o.busy_with(k)) {
                row.state = match (kind, state) {
                    (StepKind::Start, StepState::Running) => "starting",
                    (StepKind::Start, _) => "registering",
                    (StepKind::Mount, _) => "mounting",
                    (StepKind::Stop, _) => "stopping",
                    (StepKind::Unmount, _) => "unmounting",
                    (StepKind::Deploy, _) => "deploying",
                }
                .to_string();
                row.level = Level::Info;
            }
            (k, row)
        })
        .filter(|(_, r)| {
            row_matches(
                filter,
                &[
                    &r.host,
                    &r.instance,
                    r.role.as_str(),
                    &r.state,
                    &r.registered,
                    &r.note,
                ],
            )
        })
        .collect()
}

/// The Disks rows the filter lets through (none without a master answer).
pub fn visible_disks(app: &App) -> Vec<DiskRow> {
    let Some(info) = app.info() else {
        return Vec::new();
    };
    let filter = app.filter(Pane::Disks);
    disk_rows(&app.model, info)
        .into_iter()
        .filter(|d| {
            row_matches(
                filter,
                &[
                    &d.server,
                    d.instance.as_deref().unwrap_or(""),
                    &d.path,
                    &d.state,
                ],
            )
        })
        .collect()
}

/// The Exports rows the filter lets through.
pub fn visible_exports(app: &App) -> Vec<ExportRow> {
    let filter = app.filter(Pane::Exports);
    export_rows(&app.model)
        .into_iter()
        .filter(|e| row_matches(filter, &[&e.line, &e.admits.join(" ")]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::exec::tests::info;
    use crate::engine::model::tests::local_model;
    use crate::engine::probe::MountProbe;

    #[test]
    fn each_client_is_listed_under_the_line_the_master_picks() {
        let mut m = local_model();
        let star = |path: &str, options: &[&str]| Export {
            address: "*".into(),
            path: path.into(),
            options: options.iter().map(|o| o.to_string()).collect(),
        };
        // The master prefers a read-write line over a read-only one that also matches.
        m.inventory.exports.insert(0, star("/", &["ro"]));
        let rows = export_rows(&m);
        assert!(rows[0].admits.is_empty());
        assert_eq!(rows[1].admits, ["local"]);
        // Lines for other folders only: nobody admits the client.
        m.inventory.exports = vec![star("/elsewhere", &["rw"])];
        let rows = export_rows(&m);
        assert!(rows[0].admits.is_empty());
        assert_eq!(unadmitted_clients(&m, &rows).len(), 1);
    }

    #[test]
    fn local_exports_admit_the_local_client() {
        let m = local_model();
        let rows = export_rows(&m);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].line, "127.0.0.0/8 / rw,alldirs,maproot=0");
        assert_eq!(rows[0].admits, ["local"]);
        // The trash line admits meta mounts only.
        assert_eq!(rows[1].line, "127.0.0.0/8 . rw");
        assert!(rows[1].admits.is_empty());
        assert!(unadmitted_clients(&m, &rows).is_empty());
    }

    #[test]
    fn rows_from_status() {
        let m = local_model();
        let i = info(2);
        let running = |pid| InstanceStatus {
            process: Process::Running { pid },
            uptime: Some(Duration::from_secs(65)),
            mount: None,
        };
        let master = Ok(i.clone());
        let ips = ["127.0.0.1".to_string()];
        let r = server_row(&m.instances[0], &ips, Some(&running(10)), Some(&master));
        assert_eq!(
            (r.state.as_str(), r.version.as_str(), r.registered.as_str()),
            ("running", "0.1.0", "serving")
        );
        let r = server_row(&m.instances[1], &ips, Some(&running(11)), Some(&master));
        assert_eq!(r.registered, "connected, 2 behind");
        let r = server_row(&m.instances[3], &ips, Some(&running(13)), Some(&master));
        assert_eq!(r.registered, "yes (id 2)");
        let r = server_row(&m.instances[4], &ips, Some(&running(14)), Some(&master));
        assert_eq!((r.registered.as_str(), r.level), ("no", Level::Warn));
        let client = InstanceStatus {
            process: Process::Stopped,
            uptime: None,
            mount: Some(Ok(MountProbe {
                fuse_device: false,
                root: true,
                ..Default::default()
            })),
        };
        let r = server_row(&m.instances[5], &ips, Some(&client), Some(&master));
        assert_eq!(r.state, "not mounted");
        assert!(r.note.contains("modprobe fuse"), "{}", r.note);
        let disks = disk_rows(&m, &i);
        assert_eq!(disks.len(), 2);
        assert_eq!(
            disks[1].instance.as_deref(),
            Some("chunkserver-19432@local")
        );
    }
}
