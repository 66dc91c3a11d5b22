//! The inventory model, in two layers:
//!
//! - the `*Doc` types mirror the TOML file as written (serde types, every value that validation
//!   may complain about wrapped in [`Spanned`] so messages can name its line and column);
//! - [`Inventory`] and the types under it are the validated cluster: roles and transports as
//!   enums, defaults filled in, every path absolute. Rendering and the console use these.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use toml::Spanned;

// ---------------------------------------------------------------------------------------------
// The file as written.

/// The whole file. The loader builds it table by table (so that one broken `[[hosts]]` entry
/// does not hide the problems of the others); `cluster` is `None` when that table is missing or
/// could not be read.
#[derive(Debug, Clone, Default)]
pub struct InventoryDoc {
    pub cluster: Option<Spanned<ClusterDoc>>,
    pub hosts: Vec<Spanned<HostDoc>>,
    pub exports: Vec<Spanned<ExportDoc>>,
    pub topology: Vec<Spanned<TopologyDoc>>,
}

/// `[cluster]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterDoc {
    pub name: Spanned<String>,
    pub goal: Option<Spanned<i64>>,
    pub user: Option<Spanned<String>>,
    pub group: Option<Spanned<String>>,
    pub install_dir: Option<Spanned<String>>,
    pub data_dir: Option<Spanned<String>>,
    pub config_dir: Option<Spanned<String>>,
    pub log_dir: Option<Spanned<String>>,
    pub ports: Option<Spanned<PortsDoc>>,
}

/// `[cluster.ports]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortsDoc {
    pub master_metalogger: Option<Spanned<i64>>,
    pub master_chunkserver: Option<Spanned<i64>>,
    pub master_client: Option<Spanned<i64>>,
    pub chunkserver: Option<Spanned<i64>>,
}

/// One `[[hosts]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostDoc {
    pub name: Spanned<String>,
    pub address: Spanned<String>,
    pub transport: Option<Spanned<String>>,
    pub ssh: Option<Spanned<SshDoc>>,
    #[serde(default)]
    pub roles: Vec<Spanned<String>>,
    #[serde(default)]
    pub chunkservers: Vec<Spanned<ChunkserverDoc>>,
    pub client: Option<Spanned<ClientDoc>>,
}

/// `ssh = { user, port, key, jump, sudo }` of a host.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshDoc {
    pub user: Option<Spanned<String>>,
    pub port: Option<Spanned<i64>>,
    pub key: Option<Spanned<String>>,
    /// `[user@]host[:port]`: reach the host through this SSH host.
    pub jump: Option<Spanned<String>>,
    /// Non-root logins run commands through `sudo -n --`.
    pub sudo: Option<Spanned<bool>>,
}

/// One `[[hosts.chunkservers]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkserverDoc {
    pub port: Option<Spanned<i64>>,
    #[serde(default)]
    pub disks: Vec<Spanned<DiskDoc>>,
    #[serde(default)]
    pub labels: Vec<Spanned<String>>,
}

/// One element of `disks = [...]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskDoc {
    pub path: Spanned<String>,
    pub limit: Option<Spanned<String>>,
    #[serde(default)]
    pub remove: bool,
}

/// `[hosts.client]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientDoc {
    pub mount: Option<Spanned<String>>,
    pub subfolder: Option<Spanned<String>>,
    #[serde(default)]
    pub options: Vec<Spanned<String>>,
    pub password: Option<Spanned<String>>,
}

/// One `[[exports]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportDoc {
    pub address: Spanned<String>,
    pub path: Spanned<String>,
    #[serde(default)]
    pub options: Vec<Spanned<String>>,
}

/// One `[[topology]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopologyDoc {
    pub address: Spanned<String>,
    pub location: Spanned<String>,
}

// ---------------------------------------------------------------------------------------------
// The validated cluster.

/// A validated inventory: what the cluster looks like, with every default filled in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Inventory {
    /// The inventory file as named to the loader (shown in messages and file headers).
    pub source: String,
    pub cluster: Cluster,
    pub hosts: Vec<Host>,
    pub exports: Vec<Export>,
    pub topology: Vec<TopologyEntry>,
}

impl Inventory {
    /// The host that has the master role (a validated inventory has exactly one).
    pub fn master(&self) -> Option<&Host> {
        self.hosts.iter().find(|h| h.has_role(Role::Master))
    }

    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name == name)
    }

    /// Number of chunkserver instances in the whole cluster.
    pub fn chunkserver_count(&self) -> usize {
        self.hosts
            .iter()
            .filter(|h| h.has_role(Role::Chunkserver))
            .map(|h| h.chunkservers.len())
            .sum()
    }

    /// Every password in the inventory (exports `password=` options and client passwords), so
    /// that plans, logs and JSON output can hide them.
    pub fn secrets(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for e in &self.exports {
            for o in &e.options {
                if let Some(p) = o.strip_prefix("password=") {
                    out.push(p.to_string());
                }
            }
        }
        for h in &self.hosts {
            if let Some(p) = h.client.as_ref().and_then(|c| c.password.as_ref()) {
                out.push(p.clone());
            }
        }
        out.retain(|s| !s.is_empty());
        out.sort();
        out.dedup();
        out
    }
}

/// `[cluster]` after validation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cluster {
    pub name: String,
    /// DEFAULT_GOAL of the master: copies of each chunk, 1..=9.
    pub goal: u8,
    /// WORKING_USER of every daemon.
    pub user: String,
    /// WORKING_GROUP of every daemon; empty means the user's primary group.
    pub group: String,
    /// Where the binaries are on every host.
    pub install_dir: PathBuf,
    /// Each role instance keeps its data in `data_dir/<instance-name>`.
    pub data_dir: PathBuf,
    /// Each role instance reads `config_dir/<instance-name>.cfg`.
    pub config_dir: PathBuf,
    /// For the console's own logs; the daemons log to `DATA_PATH/<program>.log`.
    pub log_dir: Option<PathBuf>,
    pub ports: Ports,
}

impl Cluster {
    /// `user` or `user:group`, as `chown` takes it.
    pub fn owner(&self) -> String {
        if self.group.is_empty() {
            format!("{}:", self.user)
        } else {
            format!("{}:{}", self.user, self.group)
        }
    }
}

/// The cluster's ports (`[cluster.ports]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Ports {
    /// The master's port for metaloggers (MATOML_LISTEN_PORT).
    pub master_metalogger: u16,
    /// The master's port for chunkservers (MATOCS_LISTEN_PORT).
    pub master_chunkserver: u16,
    /// The master's port for clients (MATOCL_LISTEN_PORT).
    pub master_client: u16,
    /// Default data port of a chunkserver (CSSERV_LISTEN_PORT).
    pub chunkserver: u16,
}

/// MooseFS's default ports 9419-9422.
impl Default for Ports {
    fn default() -> Self {
        Ports {
            master_metalogger: 9419,
            master_chunkserver: 9420,
            master_client: 9421,
            chunkserver: 9422,
        }
    }
}

/// How the console reaches a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Ssh,
    /// This machine: commands run directly, no SSH.
    Local,
}

impl Transport {
    pub const ALL: [Transport; 2] = [Transport::Ssh, Transport::Local];

    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Ssh => "ssh",
            Transport::Local => "local",
        }
    }

    pub fn parse(s: &str) -> Option<Transport> {
        Transport::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// A role a host can have, in start order (master, metalogger, chunkserver, client); stopping
/// goes the other way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Master,
    Metalogger,
    Chunkserver,
    Client,
}

impl Role {
    pub const ALL: [Role; 4] = [
        Role::Master,
        Role::Metalogger,
        Role::Chunkserver,
        Role::Client,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Metalogger => "metalogger",
            Role::Chunkserver => "chunkserver",
            Role::Client => "client",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// The program that runs this role.
    pub fn program(self) -> &'static str {
        match self {
            Role::Master => "moose-master",
            Role::Metalogger => "moose-metalogger",
            Role::Chunkserver => "moose-chunkserver",
            Role::Client => "moose-mount",
        }
    }
}

/// SSH settings of a host (defaults: user root, port 22, no key: the agent's keys).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ssh {
    pub user: String,
    pub port: u16,
    /// Private key file as written (a leading `~` is the console user's home: not expanded here).
    pub key: Option<String>,
    /// The host to go through, when the host is not reachable directly.
    pub jump: Option<Jump>,
    /// Whether commands run through `sudo -n --` (for a non-root user).
    pub sudo: bool,
}

impl Default for Ssh {
    fn default() -> Self {
        Ssh {
            user: "root".to_string(),
            port: 22,
            key: None,
            jump: None,
            sudo: false,
        }
    }
}

/// A jump host, `[user@]host[:port]` (no user: the host's own ssh user; no port: 22).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Jump {
    pub user: Option<String>,
    pub host: String,
    pub port: u16,
}

impl Jump {
    /// Parses `[user@]host[:port]`; `[v6addr]:port` for IPv6. The error says what is wrong.
    pub fn parse(s: &str) -> Result<Jump, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("it is empty".to_string());
        }
        let (user, rest) = match s.rsplit_once('@') {
            Some((u, r)) => (Some(u), r),
            None => (None, s),
        };
        if let Some(u) = user {
            let body = u.strip_suffix('$').unwrap_or(u);
            if body.is_empty()
                || !body
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            {
                return Err(format!("\"{u}\" is not a valid user name"));
            }
        }
        let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
            let Some((h, after)) = inner.split_once(']') else {
                return Err("a '[' has no closing ']'".to_string());
            };
            match after {
                "" => (h, None),
                p => match p.strip_prefix(':') {
                    Some(p) => (h, Some(p)),
                    None => return Err(format!("\"{after}\" after ']' is not :PORT")),
                },
            }
        } else {
            match rest.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            }
        };
        if host.is_empty()
            || !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
        {
            return Err(format!("\"{host}\" is not a host name or address"));
        }
        let port = match port {
            None => 22,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => n,
                _ => return Err(format!("\"{p}\" is not a port from 1 to 65535")),
            },
        };
        Ok(Jump {
            user: user.map(str::to_string),
            host: host.to_string(),
            port,
        })
    }
}

impl std::fmt::Display for Jump {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(u) = &self.user {
            write!(f, "{u}@")?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]", self.host)?;
        } else {
            f.write_str(&self.host)?;
        }
        if self.port != 22 {
            write!(f, ":{}", self.port)?;
        }
        Ok(())
    }
}

/// One machine of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Host {
    pub name: String,
    /// What other hosts use to reach this one (an IPv4 address or a host name).
    pub address: String,
    pub transport: Transport,
    pub ssh: Ssh,
    /// Distinct roles, in start order.
    pub roles: Vec<Role>,
    /// Chunkserver instances, in file order (empty without the chunkserver role).
    pub chunkservers: Vec<Chunkserver>,
    /// The mount (only with the client role).
    pub client: Option<Client>,
    /// Line of the host's `[[hosts]]` header in the inventory file.
    pub line: usize,
}

impl Host {
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

/// One chunkserver instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Chunkserver {
    /// Data port (CSSERV_LISTEN_PORT); distinct among the instances of a host.
    pub port: u16,
    pub disks: Vec<Disk>,
    /// Letters A-Z.
    pub labels: Vec<String>,
}

/// One line of a chunkserver's hdd file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Disk {
    pub path: PathBuf,
    /// Space option as written: `100GiB`, `-5GiB` (keep free), `90%`, `-10%`.
    pub limit: Option<String>,
    /// Marked for removal (`*` prefix): data is copied elsewhere, nothing new is stored.
    pub remove: bool,
}

/// A mount of the file system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Client {
    pub mount: PathBuf,
    /// Folder of the file system that is mounted, normalized (`/` or `/a/b`).
    pub subfolder: String,
    /// `-o` options, in order.
    pub options: Vec<String>,
    pub password: Option<String>,
}

/// One line of the master's exports file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Export {
    pub address: String,
    /// Normalized (`/`, `/a/b`, or `.` for the meta file system).
    pub path: String,
    /// One option per element (`rw`, `maproot=0`, ...).
    pub options: Vec<String>,
}

/// One line of the master's topology file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopologyEntry {
    pub address: String,
    pub location: String,
}
