//! From a validated [`Inventory`] to the files each daemon reads and the commands that start and
//! stop each role instance. Pure functions: the same inventory always gives the same bytes, so
//! a deploy can compare hashes and skip unchanged files.
//!
//! Instance names (unique on their host, stable when other instances are added or removed):
//!
//! | role        | instance name          | config file(s) in `config_dir`                          | data folder in `data_dir` |
//! |-------------|------------------------|---------------------------------------------------------|---------------------------|
//! | master      | `master`               | `master.cfg`, `master-exports.cfg`, `master-topology.cfg` (only with `[[topology]]`) | `master` |
//! | metalogger  | `metalogger`           | `metalogger.cfg`                                        | `metalogger`              |
//! | chunkserver | `chunkserver-<port>`   | `chunkserver-<port>.cfg`, `chunkserver-<port>-hdd.cfg`  | `chunkserver-<port>`      |
//! | client      | `client`               | none (everything is on the command line)                | none                      |
//!
//! A chunkserver is named by its data port even when it is alone on its host, so adding a
//! second one never renames the first (its data folder holds its identity).

use std::path::{Path, PathBuf};

use moose_formats::exports::{ExportOption, ExportsFile, ExportsLine};
use moose_formats::hdd::{HddEntry, HddFile, SpaceLimit};
use moose_formats::value::Name;
use moose_formats::{
    ChunkserverCfg, ChunkserverKeys, CommonKeys, MasterCfg, MasterKeys, MetaloggerCfg,
    MetaloggerKeys,
};
use serde::Serialize;

use crate::model::{Chunkserver, Export, Host, Inventory, Role, Transport};
use crate::validate::is_loopback;

/// Permissions of a rendered file that holds no secret.
pub const MODE_PUBLIC: u32 = 0o644;
/// Permissions of a rendered file that holds a password (readable by its owner's group).
pub const MODE_SECRET: u32 = 0o640;

/// One file to put on one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RenderedFile {
    pub host: String,
    /// The role instance the file belongs to.
    pub instance: String,
    /// Absolute path on the host.
    pub path: PathBuf,
    pub contents: String,
    pub mode: u32,
    /// `user:group` (as `chown` takes it) that must own the file, for files with secrets that
    /// the daemon reads after dropping privileges; `None` leaves the deploying user as owner.
    pub owner: Option<String>,
}

/// A program and its arguments (no shell involved).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Command {
    pub program: PathBuf,
    pub args: Vec<String>,
}

impl Command {
    fn new(program: impl Into<PathBuf>, args: Vec<String>) -> Command {
        Command {
            program: program.into(),
            args,
        }
    }

    /// The command as one POSIX shell line (for running over SSH), every word quoted as needed.
    pub fn shell_line(&self) -> String {
        std::iter::once(self.program.to_string_lossy().into_owned())
            .chain(self.args.iter().cloned())
            .map(|w| shell_quote(&w))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// One role instance on one host: where its files are and how it is started and stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoleInstance {
    pub host: String,
    /// The host's address (what other hosts connect to).
    pub address: String,
    pub transport: Transport,
    pub role: Role,
    /// Unique on the host: `master`, `metalogger`, `chunkserver-<port>`, `client`.
    pub name: String,
    /// The daemon's config file (`-c`); none for the client.
    pub config_path: Option<PathBuf>,
    /// DATA_PATH; none for the client.
    pub data_dir: Option<PathBuf>,
    /// Where the daemon logs (`DATA_PATH/<program>.log`); none for the client.
    pub log_file: Option<PathBuf>,
    /// Chunkserver disk folders (to create, owned by the working user).
    pub disks: Vec<PathBuf>,
    /// The client's mount point.
    pub mount_point: Option<PathBuf>,
    /// TCP ports the instance listens on.
    pub listens: Vec<u16>,
    pub start: Command,
    pub stop: Command,
    /// Tried when `stop` fails (the client: `umount` when `fusermount3` is missing).
    pub stop_fallback: Option<Command>,
    /// Exits 0 when the daemon runs; none for the client (look for its mount point instead).
    pub status: Option<Command>,
}

impl RoleInstance {
    /// `host/name`, unique in the cluster.
    pub fn id(&self) -> String {
        format!("{}/{}", self.host, self.name)
    }
}

/// Every role instance, in start order: the master, metaloggers, chunkservers, clients; within
/// a role in file order. Stop in the reverse order.
pub fn commands(inv: &Inventory) -> Vec<RoleInstance> {
    let mut all: Vec<RoleInstance> = slots(inv)
        .into_iter()
        .map(|slot| instance(inv, &slot))
        .collect();
    all.sort_by_key(|i| i.role);
    all
}

/// Every file of every role instance, host by host in file order, each host's instances in
/// role order.
pub fn render(inv: &Inventory) -> Vec<RenderedFile> {
    let mut files = Vec::new();
    for slot in slots(inv) {
        let name = slot.name();
        let file = |path: PathBuf, contents: String| RenderedFile {
            host: slot.host.name.clone(),
            instance: name.clone(),
            path,
            contents,
            mode: MODE_PUBLIC,
            owner: None,
        };
        match slot.kind {
            Kind::Master => {
                files.push(file(config_path(inv, &name), master_cfg(inv, slot.host)));
                let exports = exports_file(inv, slot.host);
                let mut f = file(exports_path(inv), exports);
                if inv.exports.iter().any(has_password) {
                    f.mode = MODE_SECRET;
                    f.owner = Some(inv.cluster.owner());
                }
                files.push(f);
                if !inv.topology.is_empty() {
                    files.push(file(topology_path(inv), topology_file(inv, slot.host)));
                }
            }
            Kind::Metalogger => {
                files.push(file(
                    config_path(inv, &name),
                    metalogger_cfg(inv, slot.host),
                ));
            }
            Kind::Chunkserver(cs) => {
                files.push(file(
                    config_path(inv, &name),
                    chunkserver_cfg(inv, slot.host, cs, &name),
                ));
                files.push(file(hdd_path(inv, &name), hdd_file(inv, slot.host, cs)));
            }
            Kind::Client => {}
        }
    }
    files
}

/// One role instance before its details are worked out.
struct Slot<'a> {
    host: &'a Host,
    kind: Kind<'a>,
}

#[derive(Clone, Copy)]
enum Kind<'a> {
    Master,
    Metalogger,
    Chunkserver(&'a Chunkserver),
    Client,
}

impl Slot<'_> {
    fn role(&self) -> Role {
        match self.kind {
            Kind::Master => Role::Master,
            Kind::Metalogger => Role::Metalogger,
            Kind::Chunkserver(_) => Role::Chunkserver,
            Kind::Client => Role::Client,
        }
    }

    fn name(&self) -> String {
        match self.kind {
            Kind::Chunkserver(cs) => format!("chunkserver-{}", cs.port),
            _ => self.role().as_str().to_string(),
        }
    }
}

fn slots(inv: &Inventory) -> Vec<Slot<'_>> {
    let mut out = Vec::new();
    for host in &inv.hosts {
        for role in &host.roles {
            match role {
                Role::Master => out.push(Slot {
                    host,
                    kind: Kind::Master,
                }),
                Role::Metalogger => out.push(Slot {
                    host,
                    kind: Kind::Metalogger,
                }),
                Role::Chunkserver => out.extend(host.chunkservers.iter().map(|cs| Slot {
                    host,
                    kind: Kind::Chunkserver(cs),
                })),
                Role::Client => {
                    if host.client.is_some() {
                        out.push(Slot {
                            host,
                            kind: Kind::Client,
                        });
                    }
                }
            }
        }
    }
    out
}

fn instance(inv: &Inventory, slot: &Slot) -> RoleInstance {
    let c = &inv.cluster;
    let name = slot.name();
    let role = slot.role();
    let program = c.install_dir.join(role.program());
    let cfg = config_path(inv, &name);
    let data = c.data_dir.join(&name);
    let daemon = |verb: &str| {
        Command::new(
            program.clone(),
            vec![
                "-c".to_string(),
                cfg.to_string_lossy().into_owned(),
                verb.to_string(),
            ],
        )
    };
    let mut out = RoleInstance {
        host: slot.host.name.clone(),
        address: slot.host.address.clone(),
        transport: slot.host.transport,
        role,
        name: name.clone(),
        config_path: Some(cfg.clone()),
        data_dir: Some(data.clone()),
        log_file: Some(data.join(format!("{}.log", role.program()))),
        disks: Vec::new(),
        mount_point: None,
        listens: Vec::new(),
        start: daemon("start"),
        stop: daemon("stop"),
        stop_fallback: None,
        status: Some(daemon("status")),
    };
    match slot.kind {
        Kind::Master => {
            out.listens = vec![
                c.ports.master_metalogger,
                c.ports.master_chunkserver,
                c.ports.master_client,
            ];
        }
        Kind::Metalogger => {}
        Kind::Chunkserver(cs) => {
            out.listens = vec![cs.port];
            out.disks = cs.disks.iter().map(|d| d.path.clone()).collect();
        }
        Kind::Client => {
            let mount = slot
                .host
                .client
                .as_ref()
                .map(|cl| cl.mount.clone())
                .unwrap_or_default();
            let mount_arg = mount.to_string_lossy().into_owned();
            out.config_path = None;
            out.data_dir = None;
            out.log_file = None;
            out.status = None;
            out.start = Command::new(program, client_args(inv, slot.host, &mount_arg));
            out.stop = Command::new("fusermount3", vec!["-u".to_string(), mount_arg.clone()]);
            out.stop_fallback = Some(Command::new("umount", vec![mount_arg]));
            out.mount_point = Some(mount);
        }
    }
    out
}

fn client_args(inv: &Inventory, host: &Host, mount: &str) -> Vec<String> {
    let mut args = vec![
        mount.to_string(),
        "-H".to_string(),
        master_address(inv).to_string(),
        "-P".to_string(),
        inv.cluster.ports.master_client.to_string(),
    ];
    let Some(client) = &host.client else {
        return args;
    };
    args.push("-S".to_string());
    args.push(client.subfolder.clone());
    let mut opts = client.options.clone();
    if let Some(p) = &client.password {
        opts.push(format!(
            "mfspassword={}",
            p.replace('\\', "\\\\").replace(',', "\\,")
        ));
    }
    if !opts.is_empty() {
        args.push("-o".to_string());
        args.push(opts.join(","));
    }
    args
}

// -- paths ----------------------------------------------------------------------------------

fn config_path(inv: &Inventory, instance: &str) -> PathBuf {
    inv.cluster.config_dir.join(format!("{instance}.cfg"))
}

/// Where the master reads its exports file.
pub fn exports_path(inv: &Inventory) -> PathBuf {
    inv.cluster.config_dir.join("master-exports.cfg")
}

fn topology_path(inv: &Inventory) -> PathBuf {
    inv.cluster.config_dir.join("master-topology.cfg")
}

fn hdd_path(inv: &Inventory, instance: &str) -> PathBuf {
    inv.cluster.config_dir.join(format!("{instance}-hdd.cfg"))
}

// -- contents -------------------------------------------------------------------------------

fn master_address(inv: &Inventory) -> &str {
    // MooseFS's default master name, for an inventory built by hand without a master.
    inv.master().map_or("mfsmaster", |m| m.address.as_str())
}

fn has_password(e: &Export) -> bool {
    e.options.iter().any(|o| o.starts_with("password="))
}

/// The first line of every rendered file.
fn header(inv: &Inventory, host: &Host) -> String {
    let file = Path::new(&inv.source)
        .file_name()
        .map_or_else(|| inv.source.clone(), |f| f.to_string_lossy().into_owned());
    format!(
        "# Generated by moosectl from the inventory file {file} (cluster \"{}\", host \"{}\"); \
         edit the inventory, not this file.\n",
        inv.cluster.name, host.name
    )
}

/// DATA_PATH, WORKING_USER and WORKING_GROUP (left out when empty: the user's group).
fn common_keys(inv: &Inventory, data: &Path) -> CommonKeys {
    let c = &inv.cluster;
    CommonKeys {
        data_path: Some(data.to_path_buf()),
        working_user: Some(c.user.clone()),
        working_group: (!c.group.is_empty()).then(|| c.group.clone()),
        ..CommonKeys::default()
    }
}

fn master_cfg(inv: &Inventory, host: &Host) -> String {
    let c = &inv.cluster;
    let listen = if host.transport == Transport::Local && is_loopback(&host.address) {
        host.address.as_str()
    } else {
        "*"
    };
    let mut cfg = MasterCfg {
        common: common_keys(inv, &c.data_dir.join("master")),
        keys: MasterKeys {
            exports_filename: Some(exports_path(inv)),
            matoml_listen_host: Some(listen.to_string()),
            matoml_listen_port: Some(c.ports.master_metalogger),
            matocs_listen_host: Some(listen.to_string()),
            matocs_listen_port: Some(c.ports.master_chunkserver),
            matocl_listen_host: Some(listen.to_string()),
            matocl_listen_port: Some(c.ports.master_client),
            default_goal: Some(u64::from(c.goal)),
            ..MasterKeys::default()
        },
        stock: Vec::new(),
    };
    if !inv.topology.is_empty() {
        // A stock key moose-master does not read yet; the file is there for when it does.
        cfg.stock.push((
            "TOPOLOGY_FILENAME".to_string(),
            topology_path(inv).display().to_string(),
        ));
    }
    cfg.render(&header(inv, host))
}

fn exports_file(inv: &Inventory, host: &Host) -> String {
    ExportsFile {
        lines: exports_lines(&inv.exports),
    }
    .render(&header(inv, host))
}

/// The `[[exports]]` as lines of the master's exports file, numbered from 1 in their order.
pub(crate) fn exports_lines<'a>(exports: impl IntoIterator<Item = &'a Export>) -> Vec<ExportsLine> {
    exports
        .into_iter()
        .enumerate()
        .map(|(i, e)| ExportsLine {
            line: i + 1,
            address: e.address.clone(),
            path: e.path.clone(),
            // Validation has checked every option; a hand-built inventory's bad one is left out.
            options: e
                .options
                .iter()
                .flat_map(|o| o.split(','))
                .filter_map(|o| ExportOption::parse(o).ok())
                .collect(),
        })
        .collect()
}

fn topology_file(inv: &Inventory, host: &Host) -> String {
    let mut out = header(inv, host);
    for t in &inv.topology {
        out.push_str(&format!("{} {}\n", t.address, t.location));
    }
    out
}

fn metalogger_cfg(inv: &Inventory, host: &Host) -> String {
    MetaloggerCfg {
        common: common_keys(inv, &inv.cluster.data_dir.join("metalogger")),
        keys: MetaloggerKeys {
            master_host: Some(master_address(inv).to_string()),
            master_port: Some(inv.cluster.ports.master_metalogger),
            ..MetaloggerKeys::default()
        },
        stock: Vec::new(),
    }
    .render(&header(inv, host))
}

fn chunkserver_cfg(inv: &Inventory, host: &Host, cs: &Chunkserver, name: &str) -> String {
    ChunkserverCfg {
        common: common_keys(inv, &inv.cluster.data_dir.join(name)),
        keys: ChunkserverKeys {
            master_host: Some(Name(master_address(inv).to_string())),
            master_port: Some(inv.cluster.ports.master_chunkserver),
            csserv_listen_host: Some(host.address.clone()),
            csserv_listen_port: Some(cs.port),
            hdd_conf_filename: Some(hdd_path(inv, name)),
            labels: (!cs.labels.is_empty()).then(|| cs.labels.join(",")),
            ..ChunkserverKeys::default()
        },
        stock: Vec::new(),
    }
    .render(&header(inv, host))
}

fn hdd_file(inv: &Inventory, host: &Host, cs: &Chunkserver) -> String {
    let entries = cs
        .disks
        .iter()
        .map(|d| HddEntry {
            path: d.path.clone(),
            line: 0,
            marked_for_removal: d.remove,
            // Validation has checked the limit; a hand-built inventory's bad one is left out.
            limit: d
                .limit
                .as_deref()
                .and_then(|l| SpaceLimit::parse(l).ok())
                .unwrap_or_default(),
        })
        .collect();
    HddFile {
        entries,
        warnings: Vec::new(),
    }
    .render(&header(inv, host))
}

/// A word for a POSIX shell: as is when it only has safe characters, else single-quoted.
fn shell_quote(word: &str) -> String {
    let safe = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c));
    if safe {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every rendered file reads back with the parser of the daemon that reads it.
    #[test]
    fn rendered_files_parse_as_the_daemons_read_them() {
        let base = Path::new("/state");
        for text in [crate::LOCAL_DEFAULT, crate::THREE_HOSTS_EXAMPLE] {
            let options = crate::LoadOptions {
                base: Some(base.to_path_buf()),
                ..Default::default()
            };
            let inv = crate::load_str(text, "i.toml", &options).unwrap().inventory;
            for f in render(&inv) {
                let (path, text) = (f.path.as_path(), f.contents.as_str());
                let name = path.file_name().unwrap().to_string_lossy();
                let parsed = if name.ends_with("-hdd.cfg") {
                    moose_formats::hdd::parse(path, text)
                        .map(drop)
                        .map_err(|e| e.to_string())
                } else if name.ends_with("-exports.cfg") {
                    ExportsFile::parse(path, text)
                        .map(drop)
                        .map_err(|e| e.to_string())
                } else if name.ends_with("-topology.cfg") {
                    Ok(())
                } else if name.starts_with("master") {
                    MasterCfg::parse(path, text)
                        .map(drop)
                        .map_err(|e| e.to_string())
                } else if name.starts_with("metalogger") {
                    MetaloggerCfg::parse(path, text)
                        .map(drop)
                        .map_err(|e| e.to_string())
                } else {
                    ChunkserverCfg::parse(path, text)
                        .map(drop)
                        .map_err(|e| e.to_string())
                };
                assert_eq!(parsed, Ok(()), "{}", path.display());
            }
        }
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(shell_quote("/usr/bin/x"), "/usr/bin/x");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        let c = Command::new(
            "/bin/moose-mount",
            vec!["/mnt/x y".into(), "-o".into(), "a,b".into()],
        );
        assert_eq!(c.shell_line(), "/bin/moose-mount '/mnt/x y' -o a,b");
    }
}
