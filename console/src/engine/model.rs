//! The cluster as the console sees it: the validated inventory, every role instance with the
//! commands that really run on its host, and the [`Machine`] of every machine.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use moose_inventory::{Inventory, LoadError, LoadOptions, Role, RoleInstance, Transport};

use crate::engine::host::{Local, Machine, SshHost, SshOptions, SshTarget};

/// Where `moose-mount` logs when it runs in the background and may write there
/// (`daemons/client/src/mount.rs`); shared by every mount of a host.
pub const MOUNT_LOG: &str = "/var/log/moose-mount.log";

/// Why the cluster model could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The inventory could not be loaded (the loader's message, which names the file).
    #[error("{0}")]
    Load(String),
    #[error("cannot find the folder of the moosectl executable: {0}")]
    OwnExe(String),
}

/// The cluster model: pure data, shared by the TUI state and the workers.
#[derive(Debug, Clone)]
pub struct Model {
    pub inventory: Inventory,
    /// Inventory warnings, as `file:line:col: warning: ...`.
    pub warnings: Vec<String>,
    /// Every role instance in start order, with programs where its host has them.
    pub instances: Vec<RoleInstance>,
    /// The IP addresses of each host (its address, looked up once when it is a name), to
    /// recognise its connections in the master's lists.
    pub ips: BTreeMap<String, Vec<String>>,
}

/// The model and the machines to act through: the cluster as the console works on it (the
/// inventory's `Cluster` is only its `[cluster]` table).
#[derive(Clone)]
pub struct Fleet {
    pub model: Arc<Model>,
    pub hosts: BTreeMap<String, Arc<dyn Machine>>,
    /// Where the binaries to deploy are (`--binaries`, else next to moosectl).
    pub build_dir: PathBuf,
    /// The build, hashed once on first use.
    build: Arc<tokio::sync::OnceCell<Arc<crate::engine::deploy::Build>>>,
    /// Bounds how many hosts (steps, probes) are worked on at once.
    pub slots: Arc<tokio::sync::Semaphore>,
    /// Unknown host keys the SSH hosts refused (the terminal UI asks about them).
    pub unknown_keys: Arc<parking_lot::Mutex<Vec<crate::engine::host::UnknownKey>>>,
}

impl Fleet {
    /// The build's programs that SSH hosts get (hashed on first call, off the runtime).
    pub async fn build(&self) -> Arc<crate::engine::deploy::Build> {
        self.build
            .get_or_init(|| async {
                let dir = self.build_dir.clone();
                let mut programs: std::collections::BTreeSet<&'static str> =
                    std::collections::BTreeSet::new();
                for h in &self.model.inventory.hosts {
                    if h.transport != Transport::Ssh {
                        continue;
                    }
                    for r in &h.roles {
                        programs.insert(r.program());
                        if *r == Role::Client {
                            programs.insert("moose-tool");
                        }
                    }
                }
                let scan = tokio::task::spawn_blocking(move || {
                    crate::engine::deploy::Build::scan(&dir, &programs)
                });
                Arc::new(scan.await.unwrap_or_default())
            })
            .await
            .clone()
    }

    /// The build's `programs` only: the whole build when it was hashed already, else just
    /// these (a `deploy chunkserver` need not hash the master).
    pub async fn build_of(
        &self,
        programs: &std::collections::BTreeSet<&'static str>,
    ) -> Arc<crate::engine::deploy::Build> {
        if let Some(b) = self.build.get() {
            return b.clone();
        }
        let (dir, programs) = (self.build_dir.clone(), programs.clone());
        let scan = tokio::task::spawn_blocking(move || {
            crate::engine::deploy::Build::scan(&dir, &programs)
        });
        Arc::new(scan.await.unwrap_or_default())
    }
}

impl Fleet {
    /// The host an instance runs on.
    pub fn host(&self, name: &str) -> Arc<dyn Machine> {
        self.hosts
            .get(name)
            .cloned()
            .expect("every inventory host has a Machine")
    }

    /// The master's host, if the inventory has a master.
    pub fn master_host(&self) -> Option<Arc<dyn Machine>> {
        self.model
            .instances
            .iter()
            .find(|i| i.role == Role::Master)
            .map(|i| self.host(&i.host))
    }
}

/// Which inventory and where its relative paths go.
#[derive(Debug, Clone)]
pub struct Source {
    /// `None`: the built-in single-machine cluster.
    pub inventory: Option<PathBuf>,
    /// The state folder: base of relative paths.
    pub state_dir: PathBuf,
}

impl Source {
    /// The state folder: `$XDG_DATA_HOME/moosectl`, else `~/.local/share/moosectl`.
    pub fn default_state_dir() -> Option<PathBuf> {
        if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
            let p = PathBuf::from(x);
            if p.is_absolute() {
                return Some(p.join("moosectl"));
            }
        }
        let home = std::env::var_os("HOME").filter(|h| !h.is_empty())?;
        Some(PathBuf::from(home).join(".local/share/moosectl"))
    }

    /// What the user sees as the inventory's name.
    pub fn describe(&self) -> String {
        match &self.inventory {
            Some(p) => p.display().to_string(),
            None => format!(
                "built-in single-machine cluster in {}",
                self.state_dir.display()
            ),
        }
    }
}

/// Loads the inventory (relative paths under the state folder).
pub fn load(source: &Source) -> Result<Model, ModelError> {
    let loaded = match &source.inventory {
        None => moose_inventory::load_local_default(&source.state_dir).map_err(load_error)?,
        Some(path) => {
            let options = LoadOptions {
                base: Some(source.state_dir.clone()),
                this_machine: this_machine(),
            };
            moose_inventory::load_file(path, &options).map_err(load_error)?
        }
    };
    Ok(Model::new(
        loaded.inventory,
        loaded.warnings.iter().map(|w| w.to_string()).collect(),
    ))
}

/// An address as IP addresses: itself when it is one, else what the name resolves to here.
fn resolve(address: &str) -> Vec<String> {
    if let Ok(ip) = address.parse::<std::net::IpAddr>() {
        return vec![ip.to_string()];
    }
    let mut out: Vec<String> = std::net::ToSocketAddrs::to_socket_addrs(&(address, 0))
        .map(|it| it.map(|sa| sa.ip().to_string()).collect())
        .unwrap_or_default();
    out.sort();
    out.dedup();
    out
}

fn load_error(e: LoadError) -> ModelError {
    ModelError::Load(e.to_string())
}

/// This machine's host name (loopback addresses are always known to the loader).
fn this_machine() -> Vec<String> {
    nix::unistd::gethostname()
        .ok()
        .map(|h| h.to_string_lossy().into_owned())
        .into_iter()
        .collect()
}

impl Model {
    /// The model with instance commands as written in the inventory (install_dir); see
    /// [`Fleet::new`] for the commands as each host runs them.
    /// Host names are looked up here (blocking): call it before any async work starts.
    pub fn new(inventory: Inventory, warnings: Vec<String>) -> Model {
        let instances = moose_inventory::commands(&inventory);
        let ips = inventory
            .hosts
            .iter()
            .map(|h| (h.name.clone(), resolve(&h.address)))
            .collect();
        Model {
            inventory,
            warnings,
            instances,
            ips,
        }
    }

    /// The IP addresses of a host (none when its name could not be looked up).
    pub fn ips_of(&self, host: &str) -> &[String] {
        self.ips.get(host).map_or(&[], Vec::as_slice)
    }

    /// The instances `target` names, in start order; the error lists what exists.
    pub fn select(&self, target: Option<&Target>) -> Result<Vec<usize>, String> {
        let picked: Vec<usize> = (0..self.instances.len())
            .filter(|&i| target.is_none_or(|t| t.matches(&self.instances[i])))
            .collect();
        match target {
            Some(t) if picked.is_empty() => Err(format!(
                "nothing matches \"{t}\"; the instances are: {}",
                self.instances
                    .iter()
                    .map(|i| format!("{}@{}", i.name, i.host))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            _ => Ok(picked),
        }
    }

    /// Chunkserver instances in the inventory.
    pub fn chunkserver_count(&self) -> usize {
        self.instances
            .iter()
            .filter(|i| i.role == Role::Chunkserver)
            .count()
    }

    /// The master's client port (where status queries go).
    pub fn master_client_port(&self) -> u16 {
        self.inventory.cluster.ports.master_client
    }

    /// The master host's address (`master` when the inventory has none).
    pub fn master_address(&self) -> String {
        self.instances
            .iter()
            .find(|i| i.role == Role::Master)
            .map_or_else(|| "master".to_string(), |i| i.address.clone())
    }

    /// The log a role instance writes (the shared mount log for a client).
    pub fn log_of(&self, i: &RoleInstance) -> PathBuf {
        i.log_file
            .clone()
            .unwrap_or_else(|| PathBuf::from(MOUNT_LOG))
    }

    /// The instances `picked` (indexes into `instances`) grouped by the log file they write:
    /// the mounts of a host share one. Returns the groups and, for each picked instance, its
    /// group.
    pub fn log_groups(
        &self,
        picked: impl IntoIterator<Item = usize>,
    ) -> (Vec<LogGroup>, Vec<usize>) {
        let mut groups: Vec<LogGroup> = Vec::new();
        let mut group_of = Vec::new();
        for k in picked {
            let i = &self.instances[k];
            let path = self.log_of(i);
            let g = match groups
                .iter()
                .position(|g| g.host == i.host && g.path == path)
            {
                Some(g) => g,
                None => {
                    groups.push(LogGroup {
                        first: k,
                        host: i.host.clone(),
                        path,
                        mounts: Vec::new(),
                    });
                    groups.len() - 1
                }
            };
            if let Some(mp) = i.mount_point.as_deref().filter(|_| i.role == Role::Client) {
                groups[g].mounts.push(crate::engine::logs::mount_tag(mp));
            }
            group_of.push(g);
        }
        (groups, group_of)
    }
}

/// Role instances that write one log file (see [`Model::log_groups`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogGroup {
    /// The first instance of the group (index into `instances`).
    pub first: usize,
    pub host: String,
    pub path: PathBuf,
    /// The tags of the group's mounts (see [`crate::engine::logs::of_mounts`]): only their
    /// lines of the shared mount log are shown (other mounts of the host write there too).
    pub mounts: Vec<String>,
}

/// How the console reaches hosts: SSH settings shared by every SSH host, and where the
/// build to deploy is.
#[derive(Debug, Clone)]
pub struct HostOptions {
    pub ssh: SshOptions,
    /// The `moose-*` binaries to deploy (`--binaries`); default: next to moosectl.
    pub binaries: Option<PathBuf>,
    /// How many hosts a stage, deploy or poll touches at once (`--parallel`).
    pub parallel: usize,
}

impl Default for HostOptions {
    fn default() -> Self {
        HostOptions {
            ssh: SshOptions::default(),
            binaries: None,
            parallel: 16,
        }
    }
}

impl Fleet {
    /// Builds the hosts and points every instance's commands at its host's binaries. No
    /// network I/O: SSH connections open on first use.
    pub fn new(model: Model) -> Result<Fleet, ModelError> {
        Fleet::with_options(model, &HostOptions::default())
    }

    /// [`Fleet::new`] with the console's SSH settings.
    pub fn with_options(mut model: Model, options: &HostOptions) -> Result<Fleet, ModelError> {
        let bin_dir = Local::own_bin_dir().map_err(|e| ModelError::OwnExe(e.to_string()))?;
        let ssh_options = Arc::new(options.ssh.clone());
        let install_dir = model.inventory.cluster.install_dir.clone();
        let mut hosts: BTreeMap<String, Arc<dyn Machine>> = BTreeMap::new();
        for h in &model.inventory.hosts {
            match h.transport {
                Transport::Local => {
                    hosts.insert(
                        h.name.clone(),
                        Arc::new(Local::new(&h.name, &h.address, bin_dir.clone())),
                    );
                }
                Transport::Ssh => {
                    hosts.insert(
                        h.name.clone(),
                        Arc::new(SshHost::new(
                            SshTarget::of(h, &install_dir),
                            ssh_options.clone(),
                        )),
                    );
                }
            }
        }
        for inst in &mut model.instances {
            let host = &hosts[&inst.host];
            relocate(inst, host.as_ref(), &model.inventory.cluster.install_dir);
        }
        Ok(Fleet {
            model: Arc::new(model),
            hosts,
            build_dir: options.binaries.clone().unwrap_or(bin_dir),
            build: Arc::default(),
            slots: Arc::new(tokio::sync::Semaphore::new(options.parallel.max(1))),
            unknown_keys: options.ssh.unknown_keys.clone(),
        })
    }
}

/// Points the commands of `inst` that run a `moose-*` program at the host's copy.
fn relocate(inst: &mut RoleInstance, host: &dyn Machine, install_dir: &Path) {
    for cmd in [
        Some(&mut inst.start),
        Some(&mut inst.stop),
        inst.status.as_mut(),
    ]
    .into_iter()
    .flatten()
    {
        if cmd.program.parent() == Some(install_dir) {
            if let Some(name) = cmd.program.file_name().and_then(|n| n.to_str()) {
                cmd.program = host.binary_path(name);
            }
        }
    }
}

/// `ROLE[@HOST]`: a role (`master`, `chunkserver`, ...) or an instance name
/// (`chunkserver-9422`), optionally on one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub what: String,
    pub host: Option<String>,
}

impl Target {
    pub fn parse(s: &str) -> Result<Target, String> {
        let (what, host) = match s.split_once('@') {
            Some((w, h)) => (w, Some(h)),
            None => (s, None),
        };
        if what.is_empty() || host.is_some_and(str::is_empty) {
            return Err(format!(
                "\"{s}\" is not ROLE[@HOST]: write e.g. master, chunkserver@cs1 or chunkserver-9422@cs1"
            ));
        }
        Ok(Target {
            what: what.to_string(),
            host: host.map(str::to_string),
        })
    }

    pub fn matches(&self, i: &RoleInstance) -> bool {
        (i.role.as_str() == self.what || i.name == self.what)
            && self.host.as_ref().is_none_or(|h| *h == i.host)
    }

    /// The target naming exactly this instance.
    pub fn of(i: &RoleInstance) -> Target {
        Target {
            what: i.name.clone(),
            host: Some(i.host.clone()),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.what)?;
        if let Some(h) = &self.host {
            write!(f, "@{h}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The built-in inventory under a fixed state folder.
    pub(crate) fn local_model() -> Model {
        let loaded = moose_inventory::load_local_default(Path::new("/var/lib/moosectl")).unwrap();
        Model::new(loaded.inventory, vec![])
    }

    #[test]
    fn targets_parse_and_match() {
        let m = local_model();
        assert_eq!(
            Target::parse("chunkserver@local").unwrap(),
            Target {
                what: "chunkserver".into(),
                host: Some("local".into())
            }
        );
        assert!(Target::parse("@x").is_err());
        assert!(Target::parse("master@").is_err());
        let cs = m
            .select(Some(&Target::parse("chunkserver").unwrap()))
            .unwrap();
        assert_eq!(cs.len(), 3);
        let one = m
            .select(Some(&Target::parse("chunkserver-19432@local").unwrap()))
            .unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(m.instances[one[0]].name, "chunkserver-19432");
        let e = m
            .select(Some(&Target::parse("master@other").unwrap()))
            .unwrap_err();
        assert!(
            e.starts_with("nothing matches \"master@other\"; the instances are: master@local"),
            "{e}"
        );
        assert_eq!(m.select(None).unwrap().len(), 6);
    }

    #[test]
    fn commands_run_the_binaries_next_to_moosectl() {
        let c = Fleet::new(local_model()).unwrap();
        let dir = Local::own_bin_dir().unwrap();
        let master = &c.model.instances[0];
        assert_eq!(master.start.program, dir.join("moose-master"));
        assert_eq!(
            master.status.as_ref().unwrap().program,
            dir.join("moose-master")
        );
        let client = c.model.instances.last().unwrap();
        assert_eq!(client.start.program, dir.join("moose-mount"));
        assert_eq!(client.stop.program, PathBuf::from("fusermount3"));
    }

    #[test]
    fn ssh_hosts_run_the_installed_binaries() {
        let loaded = moose_inventory::load_str(
            moose_inventory::THREE_HOSTS_EXAMPLE,
            "three-hosts.toml",
            &LoadOptions::default(),
        )
        .unwrap();
        // No network I/O here: the connections open on first use.
        let c = Fleet::new(Model::new(loaded.inventory, vec![])).unwrap();
        assert_eq!(c.hosts.len(), 5);
        let master = &c.model.instances[0];
        assert_eq!(master.host, "meta1");
        assert_eq!(
            master.start.program,
            PathBuf::from("/usr/local/bin/moose-master")
        );
        assert_eq!(c.host("app1").name(), "app1");
        let w = crate::engine::deploy::Work::of(&c.model, "app1", &[c.model.instances.len() - 1]);
        assert_eq!(
            w.describe()[0],
            "push binaries that differ from the build to /usr/local/bin: moose-mount, moose-tool"
        );
        assert_eq!(w.login, Some(("admin".to_string(), true)));
    }
}
