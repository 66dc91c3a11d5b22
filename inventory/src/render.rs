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

fn exports_path(inv: &Inventory) -> PathBuf {
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

/// `KEY = VALUE` lines.
struct Cfg(String);

impl Cfg {
    fn new(inv: &Inventory, host: &Host) -> Cfg {
        Cfg(header(inv, host))
    }

    fn set(&mut self, key: &str, value: impl std::fmt::Display) -> &mut Cfg {
        self.0.push_str(&format!("{key} = {value}\n"));
        self
    }

    fn path(&mut self, key: &str, value: &Path) -> &mut Cfg {
        self.set(key, value.display())
    }

    /// DATA_PATH, WORKING_USER and WORKING_GROUP (left out when empty: the user's group).
    fn common(&mut self, inv: &Inventory, data: &Path) -> &mut Cfg {
        self.path("DATA_PATH", data);
        self.set("WORKING_USER", &inv.cluster.user);
        if !inv.cluster.group.is_empty() {
            self.set("WORKING_GROUP", &inv.cluster.group);
        }
        self
    }
}

fn master_cfg(inv: &Inventory, host: &Host) -> String {
    let c = &inv.cluster;
    let listen = if host.transport == Transport::Local && is_loopback(&host.address) {
        host.address.as_str()
    } else {
        "*"
    };
    let mut cfg = Cfg::new(inv, host);
    cfg.common(inv, &c.data_dir.join("master"))
        .path("EXPORTS_FILENAME", &exports_path(inv));
    if !inv.topology.is_empty() {
        cfg.path("TOPOLOGY_FILENAME", &topology_path(inv));
    }
    cfg.set("MATOML_LISTEN_HOST", listen)
        .set("MATOML_LISTEN_PORT", c.ports.master_metalogger)
        .set("MATOCS_LISTEN_HOST", listen)
        .set("MATOCS_LISTEN_PORT", c.ports.master_chunkserver)
        .set("MATOCL_LISTEN_HOST", listen)
        .set("MATOCL_LISTEN_PORT", c.ports.master_client)
        .set("DEFAULT_GOAL", c.goal);
    cfg.0
}

fn exports_file(inv: &Inventory, host: &Host) -> String {
    let mut out = header(inv, host);
    for e in &inv.exports {
        out.push_str(&e.address);
        out.push(' ');
        out.push_str(&e.path);
        if !e.options.is_empty() {
            out.push(' ');
            out.push_str(&e.options.join(","));
        }
        out.push('\n');
    }
    out
}

fn topology_file(inv: &Inventory, host: &Host) -> String {
    let mut out = header(inv, host);
    for t in &inv.topology {
        out.push_str(&format!("{} {}\n", t.address, t.location));
    }
    out
}

fn metalogger_cfg(inv: &Inventory, host: &Host) -> String {
    let mut cfg = Cfg::new(inv, host);
    cfg.common(inv, &inv.cluster.data_dir.join("metalogger"))
        .set("MASTER_HOST", master_address(inv))
        .set("MASTER_PORT", inv.cluster.ports.master_metalogger);
    cfg.0
}

fn chunkserver_cfg(inv: &Inventory, host: &Host, cs: &Chunkserver, name: &str) -> String {
    let mut cfg = Cfg::new(inv, host);
    cfg.common(inv, &inv.cluster.data_dir.join(name))
        .set("MASTER_HOST", master_address(inv))
        .set("MASTER_PORT", inv.cluster.ports.master_chunkserver)
        .set("CSSERV_LISTEN_HOST", &host.address)
        .set("CSSERV_LISTEN_PORT", cs.port)
        .path("HDD_CONF_FILENAME", &hdd_path(inv, name));
    if !cs.labels.is_empty() {
        cfg.set("LABELS", cs.labels.join(","));
    }
    cfg.0
}

fn hdd_file(inv: &Inventory, host: &Host, cs: &Chunkserver) -> String {
    let mut out = header(inv, host);
    for d in &cs.disks {
        if d.remove {
            out.push('*');
        }
        out.push_str(&d.path.to_string_lossy());
        if let Some(limit) = &d.limit {
            out.push(' ');
            out.push_str(limit);
        }
        out.push('\n');
    }
    out
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
