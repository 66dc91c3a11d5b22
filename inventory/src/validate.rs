//! Checks the document and builds the validated [`Inventory`]. Every problem becomes a
//! diagnostic at the line and column of the value at fault, with the fix in the message; all of
//! them are collected. Checks that need the whole cluster (no master, goal against the number of
//! chunkservers, exports coverage, ...) only run when every table could be read, so that a
//! broken table does not cause a cascade of false alarms.

use std::net::{IpAddr, Ipv4Addr};
use std::ops::Range;
use std::path::{Component, Path, PathBuf};

use moose_formats::admission::{exported_paths, Refusal};
use moose_formats::exports::{self, ExportOption, OptionError};
use moose_formats::hdd::{LimitError, SpaceLimit};
use toml::Spanned;

use crate::admission;
use crate::error::Diags;
use crate::load::LoadOptions;
use crate::model::{
    Chunkserver, ChunkserverDoc, Client, ClientDoc, Cluster, ClusterDoc, Disk, Export, ExportDoc,
    Host, HostDoc, Inventory, InventoryDoc, Jump, Ports, PortsDoc, Role, Ssh, SshDoc, TopologyDoc,
    TopologyEntry, Transport,
};

/// Default goal of the root folder (as MooseFS).
const DEFAULT_GOAL: u8 = 2;

const ROLE_NAMES: [&str; 4] = ["master", "metalogger", "chunkserver", "client"];
const TRANSPORT_NAMES: [&str; 2] = ["ssh", "local"];

const EXPORT_OPTIONS_HELP: &str = "options are ro, readonly, rw, readwrite, alldirs, ignoregid, \
     admin, dynamicip, maproot=USER[:GROUP], mapall=USER[:GROUP], password=TEXT, mingoal=N, \
     maxgoal=N";

/// Validates `doc`; problems go to `diags`. The inventory returned is only meaningful when no
/// error was reported.
pub(crate) fn validate(
    doc: &InventoryDoc,
    complete: bool,
    options: &LoadOptions,
    diags: &mut Diags,
) -> Inventory {
    let mut v = Validator {
        diags,
        base: options.base.as_deref(),
        this_machine: &options.this_machine,
        ssh_used: doc.hosts.iter().any(|h| {
            h.get_ref()
                .transport
                .as_ref()
                .is_none_or(|t| t.get_ref() == "ssh")
        }),
    };
    let (cluster, cluster_info) = match &doc.cluster {
        Some(c) => v.cluster(c),
        None => (default_cluster(), ClusterInfo::default()),
    };
    let hosts: Vec<HostInfo> = doc
        .hosts
        .iter()
        .map(|h| v.host(h, &cluster, &cluster_info))
        .collect();
    v.unique_hosts(&hosts);
    v.masters(&hosts, &cluster_info, complete);
    if complete {
        v.goal_against_chunkservers(&hosts, &cluster, &cluster_info);
    }
    v.loopback_reachability(&hosts);
    let exports: Vec<ExportInfo> = doc.exports.iter().map(|e| v.export(e)).collect();
    if complete {
        v.exports_coverage(&hosts, &exports, &cluster_info);
    }
    let topology = doc.topology.iter().map(|t| v.topology(t)).collect();
    Inventory {
        source: v.diags.file().to_string(),
        cluster,
        hosts: hosts.into_iter().map(|h| h.host).collect(),
        exports: exports.into_iter().map(|e| e.export).collect(),
        topology,
    }
}

fn default_cluster() -> Cluster {
    Cluster {
        name: String::new(),
        goal: DEFAULT_GOAL,
        user: "mfs".to_string(),
        group: String::new(),
        install_dir: PathBuf::from("/usr/local/bin"),
        data_dir: PathBuf::from("/var/lib/moosefs"),
        config_dir: PathBuf::from("/etc/moosefs"),
        log_dir: None,
        ports: Ports::default(),
    }
}

/// Where things of `[cluster]` were written, for messages about them.
#[derive(Default)]
struct ClusterInfo {
    span: Range<usize>,
    goal: Option<Range<usize>>,
    /// master_metalogger, master_chunkserver, master_client, chunkserver.
    ports: [Option<Range<usize>>; 4],
}

/// A host with the spans later checks need.
struct HostInfo {
    host: Host,
    span: Range<usize>,
    name_span: Range<usize>,
    address_span: Range<usize>,
    roles: Vec<(Role, Range<usize>)>,
    client_span: Option<Range<usize>>,
}

struct ExportInfo {
    export: Export,
    /// The address range admitted, when the address is valid.
    range: Option<(u32, u32)>,
    /// Every option is valid (a bad one is left out of the line, which then judges clients
    /// differently from what was meant).
    options_ok: bool,
}

struct Validator<'o, 'd, 'a> {
    diags: &'d mut Diags<'a>,
    base: Option<&'o Path>,
    this_machine: &'o [String],
    /// Some host is reached over SSH: relative paths (relative to this machine's state
    /// folder) mean nothing there.
    ssh_used: bool,
}

impl Validator<'_, '_, '_> {
    // -- [cluster] ------------------------------------------------------------------------

    fn cluster(&mut self, c: &Spanned<ClusterDoc>) -> (Cluster, ClusterInfo) {
        let doc = c.get_ref();
        let mut out = default_cluster();
        let mut info = ClusterInfo {
            span: c.span(),
            ..Default::default()
        };
        let name = doc.name.get_ref();
        if name.trim().is_empty() {
            self.diags.error(
                &doc.name.span(),
                "the cluster name is empty; set name = \"...\" in [cluster] (moosectl shows it \
                 and writes it into every generated file)",
            );
        } else if self.plain_text(&doc.name, "the cluster name") {
            out.name = name.clone();
        }
        if let Some(goal) = &doc.goal {
            info.goal = Some(goal.span());
            match u8::try_from(*goal.get_ref()) {
                Ok(g) if (1..=9).contains(&g) => out.goal = g,
                _ => self.diags.error(
                    &goal.span(),
                    format!(
                        "goal {} is out of range; a goal is a number of copies from 1 to 9",
                        goal.get_ref()
                    ),
                ),
            }
        }
        if let Some(user) = &doc.user {
            if user.get_ref().is_empty() {
                self.diags.error(
                    &user.span(),
                    "user is empty; set the account the daemons run as, e.g. user = \"mfs\" \
                     (\"root\" is allowed)",
                );
            } else if self.account(user, "user") {
                out.user = user.get_ref().clone();
            }
        }
        if let Some(group) = &doc.group {
            if group.get_ref().is_empty() || self.account(group, "group") {
                out.group = group.get_ref().clone();
            }
        }
        if let Some(p) = &doc.install_dir {
            out.install_dir = self.path(p, "install_dir", "/usr/local/bin");
        }
        if let Some(p) = &doc.data_dir {
            out.data_dir = self.path(p, "data_dir", "/var/lib/moosefs");
        }
        if let Some(p) = &doc.config_dir {
            out.config_dir = self.path(p, "config_dir", "/etc/moosefs");
        }
        if let Some(p) = &doc.log_dir {
            if !p.get_ref().is_empty() {
                out.log_dir = Some(self.path(p, "log_dir", "/var/log/moosefs"));
            }
        }
        if let Some(ports) = &doc.ports {
            self.ports(ports.get_ref(), &mut out.ports, &mut info);
        }
        (out, info)
    }

    fn ports(&mut self, doc: &PortsDoc, out: &mut Ports, info: &mut ClusterInfo) {
        let fields = [
            (
                &doc.master_metalogger,
                "master_metalogger",
                &mut out.master_metalogger,
            ),
            (
                &doc.master_chunkserver,
                "master_chunkserver",
                &mut out.master_chunkserver,
            ),
            (&doc.master_client, "master_client", &mut out.master_client),
            (&doc.chunkserver, "chunkserver", &mut out.chunkserver),
        ];
        for (i, (value, key, slot)) in fields.into_iter().enumerate() {
            if let Some(value) = value {
                if let Some(p) = self.port(value, key) {
                    *slot = p;
                }
                info.ports[i] = Some(value.span());
            }
        }
        let master = [
            ("master_metalogger", out.master_metalogger, &info.ports[0]),
            ("master_chunkserver", out.master_chunkserver, &info.ports[1]),
            ("master_client", out.master_client, &info.ports[2]),
        ];
        for (i, (key, port, span)) in master.iter().enumerate() {
            if let Some((other, _, _)) = master[..i].iter().find(|(_, p, _)| p == port) {
                let at = (*span).clone().unwrap_or_else(|| info.span.clone());
                self.diags.error(
                    &at,
                    format!(
                        "{key} = {port} is the same port as {other}; the master needs three \
                         different ports"
                    ),
                );
            }
        }
    }

    // -- [[hosts]] ------------------------------------------------------------------------

    fn host(&mut self, h: &Spanned<HostDoc>, cluster: &Cluster, ci: &ClusterInfo) -> HostInfo {
        let doc = h.get_ref();
        let (line, _) = self.diags.position(h.span().start);
        let name = doc.name.get_ref().clone();
        if name.is_empty() {
            self.diags.error(
                &doc.name.span(),
                "the host name is empty; set name = \"...\" (e.g. \"cs1\")",
            );
        } else if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        {
            self.diags.error(
                &doc.name.span(),
                format!(
                    "host name \"{}\" is not allowed; use letters, digits, '.', '-' and '_'",
                    name.escape_debug()
                ),
            );
        }
        let address = doc.address.get_ref().clone();
        self.host_address(&doc.address);
        let transport = match &doc.transport {
            None => Transport::Ssh,
            Some(t) => match Transport::parse(t.get_ref()) {
                Some(t) => t,
                None => {
                    let hint = did_you_mean(t.get_ref(), &TRANSPORT_NAMES);
                    self.diags.error(
                        &t.span(),
                        format!(
                            "unknown transport \"{}\"; transports are ssh, local{hint}",
                            t.get_ref().escape_debug()
                        ),
                    );
                    Transport::Ssh
                }
            },
        };
        let ssh = match &doc.ssh {
            None => Ssh::default(),
            Some(s) => {
                if transport == Transport::Local {
                    self.diags.warn(
                        &s.span(),
                        format!(
                            "host \"{name}\" has transport \"local\", so its ssh settings are \
                             not used; remove them"
                        ),
                    );
                }
                self.ssh(s.get_ref())
            }
        };
        if transport == Transport::Local
            && !is_loopback(&address)
            && !self.this_machine.iter().any(|m| same_address(m, &address))
        {
            let at = doc.transport.as_ref().map_or(h.span(), |t| t.span());
            self.diags.warn(
                &at,
                format!(
                    "host \"{name}\" has transport \"local\" but its address {address} is neither \
                     a loopback address nor an address of this machine; set address to this \
                     machine's address, or use transport = \"ssh\""
                ),
            );
        }
        let roles = self.roles(doc, &name, &h.span());
        let has = |r: Role| roles.iter().any(|(x, _)| *x == r);
        let role_span = |r: Role| {
            roles
                .iter()
                .find(|(x, _)| *x == r)
                .map_or(h.span(), |(_, s)| s.clone())
        };

        let mut chunkservers = Vec::new();
        if has(Role::Chunkserver) && doc.chunkservers.is_empty() {
            self.diags.error(
                &role_span(Role::Chunkserver),
                format!(
                    "host \"{name}\" has the chunkserver role but no [[hosts.chunkservers]] \
                     table; add one with disks = [{{ path = \"/srv/moosefs/d1\" }}]"
                ),
            );
        }
        let mut disk_seen: Vec<(PathBuf, usize)> = Vec::new();
        for cs in &doc.chunkservers {
            if !has(Role::Chunkserver) {
                self.diags.error(
                    &cs.span(),
                    format!(
                        "[[hosts.chunkservers]] on host \"{name}\", which does not have the \
                         chunkserver role; add \"chunkserver\" to its roles or remove this table"
                    ),
                );
            }
            chunkservers.push(self.chunkserver(cs, &name, cluster, &mut disk_seen));
        }

        let client = match (&doc.client, has(Role::Client)) {
            (None, true) => {
                self.diags.error(
                    &role_span(Role::Client),
                    format!(
                        "host \"{name}\" has the client role but no [hosts.client] table; add \
                         one with mount = \"/mnt/moosefs\""
                    ),
                );
                None
            }
            (Some(c), has_role) => {
                if !has_role {
                    self.diags.error(
                        &c.span(),
                        format!(
                            "[hosts.client] on host \"{name}\", which does not have the client \
                             role; add \"client\" to its roles or remove this table"
                        ),
                    );
                }
                Some(self.client(c, &name))
            }
            (None, false) => None,
        };

        let master_ports = if has(Role::Master) {
            let p = &cluster.ports;
            vec![
                (p.master_metalogger, "master_metalogger", 0),
                (p.master_chunkserver, "master_chunkserver", 1),
                (p.master_client, "master_client", 2),
            ]
        } else {
            Vec::new()
        };
        self.host_ports(&name, &master_ports, &doc.chunkservers, &chunkservers, ci);

        let role_list: Vec<Role> = {
            let mut r: Vec<Role> = roles.iter().map(|(r, _)| *r).collect();
            r.sort();
            r.dedup();
            r
        };
        HostInfo {
            host: Host {
                name,
                address,
                transport,
                ssh,
                chunkservers: if has(Role::Chunkserver) {
                    chunkservers
                } else {
                    Vec::new()
                },
                client: if has(Role::Client) { client } else { None },
                roles: role_list,
                line,
            },
            span: h.span(),
            name_span: doc.name.span(),
            address_span: doc.address.span(),
            client_span: doc.client.as_ref().map(|c| c.span()),
            roles,
        }
    }

    fn host_address(&mut self, address: &Spanned<String>) {
        let a = address.get_ref();
        if a.is_empty() {
            self.diags.error(
                &address.span(),
                "the address is empty; set what the other hosts use to reach this one, e.g. \
                 address = \"10.0.0.2\"",
            );
        } else if a.parse::<Ipv4Addr>().is_err() && !is_host_name(a) {
            self.diags.error(
                &address.span(),
                format!(
                    "address \"{}\" is neither an IPv4 address nor a host name; set what the \
                     other hosts use to reach this one, e.g. \"10.0.0.2\"",
                    a.escape_debug()
                ),
            );
        }
    }

    fn ssh(&mut self, doc: &SshDoc) -> Ssh {
        let mut out = Ssh::default();
        if let Some(user) = &doc.user {
            if user.get_ref().is_empty() {
                self.diags.error(
                    &user.span(),
                    "the ssh user is empty; remove it to log in as root, or name the account",
                );
            } else if self.account(user, "the ssh user") {
                out.user = user.get_ref().clone();
            }
        }
        if let Some(port) = &doc.port {
            if let Some(p) = self.port(port, "the ssh port") {
                out.port = p;
            }
        }
        if let Some(key) = &doc.key {
            if key.get_ref().is_empty() {
                self.diags.error(
                    &key.span(),
                    "the ssh key is empty; remove it to use the SSH agent's keys, or name the \
                     private key file",
                );
            } else if self.plain_text(key, "the ssh key") {
                out.key = Some(key.get_ref().clone());
            }
        }
        if let Some(jump) = &doc.jump {
            match Jump::parse(jump.get_ref()) {
                Ok(j) => out.jump = Some(j),
                Err(why) => self.diags.error(
                    &jump.span(),
                    format!(
                        "the ssh jump \"{}\" is not [user@]host[:port]: {why}; write e.g. \
                         jump = \"admin@bastion.example.com:2222\"",
                        jump.get_ref().escape_debug()
                    ),
                ),
            }
        }
        if let Some(sudo) = &doc.sudo {
            out.sudo = *sudo.get_ref();
            if out.sudo && out.user == "root" {
                self.diags.warn(
                    &sudo.span(),
                    "sudo = true has no effect for the root login; remove it or set user",
                );
            }
        }
        out
    }

    fn roles(
        &mut self,
        doc: &HostDoc,
        host: &str,
        host_span: &Range<usize>,
    ) -> Vec<(Role, Range<usize>)> {
        let mut out: Vec<(Role, Range<usize>)> = Vec::new();
        for r in &doc.roles {
            match Role::parse(r.get_ref()) {
                Some(role) => {
                    if out.iter().any(|(x, _)| *x == role) {
                        self.diags.warn(
                            &r.span(),
                            format!(
                                "role \"{}\" is listed twice for host \"{host}\"; remove one",
                                role.as_str()
                            ),
                        );
                    } else {
                        out.push((role, r.span()));
                    }
                }
                None => {
                    let hint = did_you_mean(r.get_ref(), &ROLE_NAMES);
                    self.diags.error(
                        &r.span(),
                        format!(
                            "unknown role \"{}\"; roles are master, metalogger, chunkserver, \
                             client{hint}",
                            r.get_ref().escape_debug()
                        ),
                    );
                }
            }
        }
        if doc.roles.is_empty() {
            self.diags.warn(
                host_span,
                format!(
                    "host \"{host}\" has no roles, so nothing will run there; add e.g. roles = \
                     [\"chunkserver\"]"
                ),
            );
        }
        out
    }

    fn chunkserver(
        &mut self,
        cs: &Spanned<ChunkserverDoc>,
        host: &str,
        cluster: &Cluster,
        disk_seen: &mut Vec<(PathBuf, usize)>,
    ) -> Chunkserver {
        let doc = cs.get_ref();
        let port = match &doc.port {
            Some(p) => self
                .port(p, "the chunkserver port")
                .unwrap_or(cluster.ports.chunkserver),
            None => cluster.ports.chunkserver,
        };
        if doc.disks.is_empty() {
            self.diags.error(
                &cs.span(),
                format!(
                    "this chunkserver of host \"{host}\" has no disks; add disks = [{{ path = \
                     \"/srv/moosefs/d1\" }}]"
                ),
            );
        }
        let mut disks = Vec::new();
        for d in &doc.disks {
            let dd = d.get_ref();
            let path = self.path(&dd.path, "the disk path", "/srv/moosefs/d1");
            let raw = dd.path.get_ref();
            if raw.chars().any(char::is_whitespace) {
                self.diags.error(
                    &dd.path.span(),
                    format!(
                        "disk path \"{}\" contains a space, which the hdd file cannot hold; use \
                         a folder without spaces (or a symlink to it)",
                        raw.escape_debug()
                    ),
                );
            }
            let (line, _) = self.diags.position(dd.path.span().start);
            if !raw.is_empty() {
                if let Some((_, first)) = disk_seen.iter().find(|(p, _)| *p == path) {
                    self.diags.error(
                        &dd.path.span(),
                        format!(
                            "disk {} is already used on host \"{host}\" (line {first}); every \
                             disk line needs its own folder",
                            path.display()
                        ),
                    );
                } else {
                    disk_seen.push((path.clone(), line));
                }
            }
            let limit = dd.limit.as_ref().and_then(|l| {
                let text = l.get_ref().trim();
                match SpaceLimit::parse(text) {
                    Ok(_) => Some(text.to_string()),
                    Err(e) => {
                        let why = limit_error(&e);
                        self.diags.error(
                            &l.span(),
                            format!(
                                "disk limit \"{}\" {why}; write e.g. \"100GiB\" (use at most \
                                 this), \"-5GiB\" (keep this free), \"90%\" or \"-10%\"",
                                l.get_ref().escape_debug()
                            ),
                        );
                        None
                    }
                }
            });
            disks.push(Disk {
                path,
                limit,
                remove: dd.remove,
            });
        }
        if !disks.is_empty() && disks.iter().all(|d| d.remove) {
            self.diags.warn(
                &cs.span(),
                format!(
                    "every disk of this chunkserver of host \"{host}\" is marked remove = true, \
                     so it will accept no new chunks"
                ),
            );
        }
        let mut labels: Vec<String> = Vec::new();
        for l in &doc.labels {
            let text = l.get_ref();
            let mut chars = text.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) if c.is_ascii_uppercase() => {
                    if labels.contains(text) {
                        self.diags.warn(
                            &l.span(),
                            format!("label \"{text}\" is listed twice; remove one"),
                        );
                    } else {
                        labels.push(text.clone());
                    }
                }
                (Some(c), None) if c.is_ascii_lowercase() => self.diags.error(
                    &l.span(),
                    format!(
                        "label \"{text}\" must be an upper-case letter; write \"{}\"",
                        c.to_ascii_uppercase()
                    ),
                ),
                _ => self.diags.error(
                    &l.span(),
                    format!(
                        "label \"{}\" is not a letter from A to Z; MooseFS labels are single \
                         letters",
                        text.escape_debug()
                    ),
                ),
            }
        }
        Chunkserver {
            port,
            disks,
            labels,
        }
    }

    /// Ports of one host: the master's three (already distinct) and each chunkserver's.
    fn host_ports(
        &mut self,
        host: &str,
        master: &[(u16, &str, usize)],
        docs: &[Spanned<ChunkserverDoc>],
        chunkservers: &[Chunkserver],
        ci: &ClusterInfo,
    ) {
        let mut used: Vec<(u16, String)> = master
            .iter()
            .map(|(p, key, i)| {
                let place = ci.ports[*i]
                    .as_ref()
                    .map(|s| format!(", line {}", self.diags.position(s.start).0))
                    .unwrap_or_default();
                (*p, format!("the master ({key}{place})"))
            })
            .collect();
        for (doc, cs) in docs.iter().zip(chunkservers) {
            // An invalid port was reported already; the default stands in for it.
            if doc
                .get_ref()
                .port
                .as_ref()
                .is_some_and(|p| u16::try_from(*p.get_ref()).map_or(true, |p| p == 0))
            {
                continue;
            }
            let (line, _) = self.diags.position(doc.span().start);
            if let Some((_, who)) = used.iter().find(|(p, _)| *p == cs.port) {
                let (at, what) = match &doc.get_ref().port {
                    Some(p) => (p.span(), format!("port {}", cs.port)),
                    None => {
                        let place = ci.ports[3]
                            .as_ref()
                            .map(|s| format!(", line {}", self.diags.position(s.start).0))
                            .unwrap_or_default();
                        (
                            doc.span(),
                            format!(
                                "this chunkserver has no port, so it takes the default {} \
                                 (cluster.ports.chunkserver{place}), which",
                                cs.port
                            ),
                        )
                    }
                };
                let message = format!(
                    "{what} is already used on host \"{host}\" by {who}; give this chunkserver \
                     another port (port = ...)"
                );
                self.diags.error(&at, message);
            } else {
                used.push((cs.port, format!("the chunkserver at line {line}")));
            }
        }
    }

    fn client(&mut self, c: &Spanned<ClientDoc>, host: &str) -> Client {
        let doc = c.get_ref();
        let mount = match &doc.mount {
            Some(m) if !m.get_ref().is_empty() => self.path(m, "the mount point", "/mnt/moosefs"),
            _ => {
                let at = doc.mount.as_ref().map_or(c.span(), |m| m.span());
                self.diags.error(
                    &at,
                    format!(
                        "[hosts.client] of host \"{host}\" has no mount point; add mount = \
                         \"/mnt/moosefs\""
                    ),
                );
                PathBuf::new()
            }
        };
        let subfolder = match &doc.subfolder {
            Some(s) if self.plain_text(s, "the subfolder") => exports::normalize_path(s.get_ref()),
            _ => "/".to_string(),
        };
        let mut options = Vec::new();
        for o in &doc.options {
            if o.get_ref().trim().is_empty() {
                self.diags
                    .error(&o.span(), "empty mount option; remove it from options");
            } else if self.plain_text(o, "a mount option") {
                options.push(o.get_ref().trim().to_string());
            }
        }
        let password = match &doc.password {
            Some(p) if !p.get_ref().is_empty() => {
                if options.iter().any(|o| o.starts_with("mfspassword=")) {
                    self.diags.warn(
                        &p.span(),
                        "the password is also given as mfspassword= in options; keep only \
                         password",
                    );
                }
                self.plain_text(p, "the password")
                    .then(|| p.get_ref().clone())
            }
            _ => None,
        };
        Client {
            mount,
            subfolder,
            options,
            password,
        }
    }

    // -- checks across hosts --------------------------------------------------------------

    fn unique_hosts(&mut self, hosts: &[HostInfo]) {
        for (i, h) in hosts.iter().enumerate() {
            let earlier = &hosts[..i];
            if !h.host.name.is_empty() {
                if let Some(first) = earlier.iter().find(|e| e.host.name == h.host.name) {
                    self.diags.error(
                        &h.name_span,
                        format!(
                            "host name \"{}\" is already used by the host at line {}; host names \
                             must be unique",
                            h.host.name, first.host.line
                        ),
                    );
                }
            }
            if !h.host.address.is_empty() {
                if let Some(first) = earlier
                    .iter()
                    .find(|e| same_address(&e.host.address, &h.host.address))
                {
                    self.diags.warn(
                        &h.address_span,
                        format!(
                            "address {} is also the address of host \"{}\" (line {}); if both \
                             are one machine, merge them into one [[hosts]] entry so that their \
                             ports are checked together",
                            h.host.address, first.host.name, first.host.line
                        ),
                    );
                }
            }
        }
    }

    fn masters(&mut self, hosts: &[HostInfo], ci: &ClusterInfo, complete: bool) {
        let masters: Vec<(&HostInfo, &Range<usize>)> = hosts
            .iter()
            .filter_map(|h| {
                h.roles
                    .iter()
                    .find(|(r, _)| *r == Role::Master)
                    .map(|(_, s)| (h, s))
            })
            .collect();
        match masters.split_first() {
            None if complete => {
                if hosts.is_empty() {
                    self.diags.error(
                        &ci.span,
                        "the inventory has no [[hosts]]; add at least one, e.g. a host with \
                         roles = [\"master\", \"metalogger\", \"chunkserver\", \"client\"]",
                    );
                } else {
                    self.diags.error(
                        &hosts[0].span,
                        "no host has the master role; add \"master\" to the roles of one host",
                    );
                }
            }
            None => {}
            Some(((first, first_span), rest)) => {
                for (_, span) in rest {
                    self.diags.error(
                        span,
                        format!(
                            "a second master: host \"{}\" (line {}) already has the master role, \
                             and a cluster has exactly one; remove \"master\" here",
                            first.host.name, first.host.line
                        ),
                    );
                }
                if complete && !hosts.iter().any(|h| h.host.has_role(Role::Metalogger)) {
                    self.diags.warn(
                        first_span,
                        format!(
                            "no host has the metalogger role, so the metadata exists only on \
                             host \"{}\"; add \"metalogger\" to the roles of a host (best \
                             another machine)",
                            first.host.name
                        ),
                    );
                }
            }
        }
    }

    fn goal_against_chunkservers(
        &mut self,
        hosts: &[HostInfo],
        cluster: &Cluster,
        ci: &ClusterInfo,
    ) {
        let count: usize = hosts.iter().map(|h| h.host.chunkservers.len()).sum();
        let at = ci.goal.clone().unwrap_or_else(|| ci.span.clone());
        if count == 0 {
            if !hosts.is_empty() {
                self.diags.warn(
                    &at,
                    "no host has the chunkserver role, so no file data can be stored; add \
                     \"chunkserver\" and a [[hosts.chunkservers]] table to a host",
                );
            }
        } else if count < usize::from(cluster.goal) {
            self.diags.warn(
                &at,
                format!(
                    "goal {} but only {count} chunkserver{}: files will stay undergoal; lower \
                     goal to {count} or add chunkservers",
                    cluster.goal,
                    if count == 1 { "" } else { "s" }
                ),
            );
        }
    }

    /// A loopback address works only if everyone who connects to the host is on that machine.
    fn loopback_reachability(&mut self, hosts: &[HostInfo]) {
        for h in hosts {
            if !is_loopback(&h.host.address) {
                continue;
            }
            let serves_all = h.host.has_role(Role::Master);
            let serves_data = h.host.has_role(Role::Chunkserver);
            if !serves_all && !serves_data {
                continue;
            }
            let remote: Vec<String> = hosts
                .iter()
                .filter(|o| !std::ptr::eq(*o, h) && !is_loopback(&o.host.address))
                .filter(|o| {
                    (serves_all && !o.host.roles.is_empty())
                        || o.host.has_role(Role::Client)
                        || o.host.has_role(Role::Chunkserver)
                })
                .map(|o| format!("host \"{}\"", o.host.name))
                .collect();
            if !remote.is_empty() {
                self.diags.error(
                    &h.address_span,
                    format!(
                        "host \"{}\" has the loopback address {}, but {} {} must connect \
                         to it; set an address {} can reach",
                        h.host.name,
                        h.host.address,
                        remote.join(", "),
                        if remote.len() == 1 {
                            "on another machine"
                        } else {
                            "on other machines"
                        },
                        if remote.len() == 1 { "it" } else { "they" },
                    ),
                );
            }
        }
    }

    // -- [[exports]] and [[topology]] -----------------------------------------------------

    fn export(&mut self, e: &Spanned<ExportDoc>) -> ExportInfo {
        let doc = e.get_ref();
        let range = self.address_range(&doc.address, "exports address");
        let raw = doc.path.get_ref();
        let path = if raw.trim().is_empty() {
            self.diags.error(
                &doc.path.span(),
                "the exports path is empty; write \"/\" for the whole file system or \"/folder\"",
            );
            "/".to_string()
        } else if raw
            .chars()
            .any(|c| c.is_whitespace() || c == '#' || c.is_control())
        {
            self.diags.error(
                &doc.path.span(),
                format!(
                    "exports path \"{}\" contains a space or '#', which the exports file cannot \
                     hold; choose a folder without them",
                    raw.escape_debug()
                ),
            );
            "/".to_string()
        } else if raw == "." {
            // The meta file system: the trash, for `moose-mount -m`.
            ".".to_string()
        } else {
            exports::normalize_path(raw)
        };
        let errors_before = self.diags.error_count();
        let options = self.export_options(&doc.options);
        ExportInfo {
            export: Export {
                address: doc.address.get_ref().trim().to_string(),
                path,
                options,
            },
            range,
            options_ok: self.diags.error_count() == errors_before,
        }
    }

    fn export_options(&mut self, opts: &[Spanned<String>]) -> Vec<String> {
        let mut out = Vec::new();
        let mut access: Option<&str> = None;
        let mut goals: [Option<u8>; 2] = [None, None];
        for o in opts {
            let span = o.span();
            if o.get_ref().trim().is_empty() {
                self.diags
                    .error(&span, "empty exports option; remove it from options");
                continue;
            }
            let mut after_password = false;
            for part in o
                .get_ref()
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
            {
                let key = part.split_once('=').map_or(part, |(k, _)| k).trim();
                let follows_password = std::mem::replace(&mut after_password, key == "password");
                let option = match ExportOption::parse(part) {
                    Ok(o) => o,
                    Err(e) => {
                        self.diags
                            .error(&span, export_option_error(&e, part, follows_password));
                        continue;
                    }
                };
                match option {
                    ExportOption::Flag(flag) => {
                        let mode = match flag {
                            "ro" | "readonly" => Some("ro"),
                            "rw" | "readwrite" => Some("rw"),
                            _ => None,
                        };
                        if let (Some(m), Some(prev)) = (mode, access) {
                            if m != prev {
                                self.diags.warn(
                                    &span,
                                    "this exports line is both read-only and read-write; the \
                                     last one wins, keep only one",
                                );
                            }
                        }
                        access = mode.or(access);
                    }
                    ExportOption::MinGoal(g) | ExportOption::MaxGoal(g) => {
                        goals[usize::from(matches!(option, ExportOption::MaxGoal(_)))] = Some(g);
                        if let [Some(min), Some(max)] = goals {
                            if min > max {
                                self.diags.error(
                                    &span,
                                    format!(
                                        "mingoal {min} is above maxgoal {max}; no goal could be \
                                         set"
                                    ),
                                );
                            }
                        }
                    }
                    _ => {}
                }
                out.push(option.render());
            }
        }
        out
    }

    fn topology(&mut self, t: &Spanned<TopologyDoc>) -> TopologyEntry {
        let doc = t.get_ref();
        self.address_range(&doc.address, "topology address");
        let location = doc.location.get_ref();
        if location.is_empty() {
            self.diags.error(
                &doc.location.span(),
                "the location is empty; name the rack or place, e.g. location = \"rack1\"",
            );
        } else if location
            .chars()
            .any(|c| c.is_whitespace() || c == '#' || c.is_control())
        {
            self.diags.error(
                &doc.location.span(),
                format!(
                    "location \"{}\" contains a space or '#', which the topology file cannot \
                     hold; use e.g. \"dc1|rack2\"",
                    location.escape_debug()
                ),
            );
        }
        TopologyEntry {
            address: doc.address.get_ref().trim().to_string(),
            location: location.clone(),
        }
    }

    /// The most common MooseFS pitfall: a client host that no exports line admits.
    fn exports_coverage(&mut self, hosts: &[HostInfo], exports: &[ExportInfo], ci: &ClusterInfo) {
        if exports.is_empty() {
            self.diags.warn(
                &ci.span,
                "there are no [[exports]], so the master refuses every mount; add e.g. \
                 [[exports]] with address = \"10.0.0.0/24\", path = \"/\", options = [\"rw\", \
                 \"alldirs\"]",
            );
            return;
        }
        let admission = admission::exports_admission(exports.iter().map(|e| &e.export));
        for h in hosts {
            let Some(client) = &h.host.client else {
                continue;
            };
            let at = h.client_span.clone().unwrap_or_else(|| h.span.clone());
            let name = &h.host.name;
            let address = &h.host.address;
            let Some(admitted) = admission::admit_client(&admission, address, client) else {
                if !exports.iter().any(|e| e.range == Some((0, u32::MAX))) {
                    self.diags.warn(
                        &at,
                        format!(
                            "host \"{name}\" has the address \"{address}\", a name, and exports \
                             lines match IPv4 addresses; make sure an [[exports]] line covers \
                             the address the master sees for it"
                        ),
                    );
                }
                continue;
            };
            let why = match admitted {
                Ok(_) => continue,
                Err(Refusal::NoAddress { ip, .. }) => {
                    let octets = match ip {
                        IpAddr::V4(v4) => v4.octets(),
                        IpAddr::V6(_) => [0; 4],
                    };
                    format!(
                        "no [[exports]] line admits host \"{name}\" ({address}), so its mount \
                         will be refused; add an [[exports]] line whose address covers it, e.g. \
                         \"{}.{}.{}.0/24\"",
                        octets[0], octets[1], octets[2]
                    )
                }
                Err(Refusal::NoPath { exported, .. }) => format!(
                    "host \"{name}\" ({address}) mounts {}, but the [[exports]] lines that admit \
                     it export only {}; change its subfolder, or add alldirs or a line for {}",
                    client.subfolder,
                    exported_paths(&exported, "[[exports]] number"),
                    client.subfolder
                ),
                Err(Refusal::Password { .. }) if admission::client_password(client).is_none() => {
                    format!(
                        "every [[exports]] line that admits host \"{name}\" ({address}) needs a \
                         password, and its [hosts.client] has none; add password = \"...\""
                    )
                }
                // A password cut short by a bad option has already been reported.
                Err(Refusal::Password { .. }) if exports.iter().any(|e| !e.options_ok) => continue,
                Err(Refusal::Password { .. }) => format!(
                    "the password of host \"{name}\" ({address}) is not the one of any \
                     [[exports]] line that admits it, so its mount will be refused; give it the \
                     line's password"
                ),
                Err(other) => other.to_string(),
            };
            self.diags.warn(&at, why);
        }
    }

    // -- values ---------------------------------------------------------------------------

    fn port(&mut self, p: &Spanned<i64>, what: &str) -> Option<u16> {
        match u16::try_from(*p.get_ref()) {
            Ok(port) if port > 0 => Some(port),
            _ => {
                self.diags.error(
                    &p.span(),
                    format!(
                        "{what} {} is not a port; use a number from 1 to 65535",
                        p.get_ref()
                    ),
                );
                None
            }
        }
    }

    /// False (and an error) if the text has control characters, which would break the
    /// generated files.
    fn plain_text(&mut self, s: &Spanned<String>, what: &str) -> bool {
        if s.get_ref().chars().any(char::is_control) {
            self.diags.error(
                &s.span(),
                format!("{what} contains a control character (tab, newline, ...); remove it"),
            );
            false
        } else {
            true
        }
    }

    fn account(&mut self, s: &Spanned<String>, what: &str) -> bool {
        let v = s.get_ref();
        let body = v.strip_suffix('$').unwrap_or(v);
        if !body.is_empty()
            && body
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            true
        } else {
            self.diags.error(
                &s.span(),
                format!(
                    "{what} \"{}\" is not a valid account name; use letters, digits, '.', '_' \
                     and '-'",
                    v.escape_debug()
                ),
            );
            false
        }
    }

    /// Resolves a path: absolute as is, relative against the base folder (an error without
    /// one); `.` and `..` are removed.
    fn path(&mut self, s: &Spanned<String>, what: &str, example: &str) -> PathBuf {
        let raw = s.get_ref();
        let span = s.span();
        if raw.is_empty() {
            self.diags.error(
                &span,
                format!("{what} is empty; write a folder such as \"{example}\""),
            );
            return PathBuf::new();
        }
        if !self.plain_text(s, what) {
            return PathBuf::from(raw);
        }
        if raw.contains('#') {
            self.diags.error(
                &span,
                format!(
                    "{what} \"{raw}\" contains '#', which MooseFS config files read as a \
                     comment; choose another folder"
                ),
            );
        }
        if raw.starts_with('~') {
            self.diags.error(
                &span,
                format!(
                    "{what} \"{raw}\" starts with '~', which is not expanded; write the full \
                     path, e.g. \"{example}\""
                ),
            );
            return PathBuf::from(raw);
        }
        let p = Path::new(raw);
        if p.is_absolute() {
            return normalize(p);
        }
        if self.ssh_used {
            self.diags.error(
                &span,
                format!(
                    "{what} \"{raw}\" is relative, which is refused once a host is reached over \
                     SSH (it would be relative to this machine's state folder); write an \
                     absolute path such as \"{example}\""
                ),
            );
            return p.to_path_buf();
        }
        match self.base {
            Some(base) => normalize(&base.join(p)),
            None => {
                self.diags.error(
                    &span,
                    format!(
                        "{what} \"{raw}\" is not absolute, and relative paths need a base \
                         folder, which was not given; write an absolute path such as \
                         \"{example}\""
                    ),
                );
                p.to_path_buf()
            }
        }
    }

    /// Checks an address in the exports/topology syntax; the range it covers when valid.
    fn address_range(&mut self, s: &Spanned<String>, what: &str) -> Option<(u32, u32)> {
        match exports::parse_address(s.get_ref().trim()) {
            Ok(r) => Some(r),
            Err(why) => {
                self.diags.error(
                    &s.span(),
                    format!(
                        "{what} \"{}\": {why}; {}",
                        s.get_ref().escape_debug(),
                        exports::ADDRESS_FORMS
                    ),
                );
                None
            }
        }
    }
}

// -- helpers --------------------------------------------------------------------------------

fn valued_example(key: &str) -> &'static str {
    match key {
        "maproot" => "maproot=0",
        "mapall" => "mapall=1000:1000",
        "password" => "password=secret",
        "mingoal" => "mingoal=1",
        _ => "maxgoal=9",
    }
}

/// The inventory's wording of an exports option error (the TOML form, with how to fix it).
fn export_option_error(e: &OptionError, part: &str, follows_password: bool) -> String {
    match e {
        OptionError::TakesNoValue { key } => {
            format!("exports option \"{key}\" takes no value; write just {key}")
        }
        OptionError::NeedsValue { key } => format!(
            "exports option \"{key}\" needs a value, e.g. {}",
            valued_example(key)
        ),
        OptionError::BadGoal { key, value } => format!("{key}={value}: {e}"),
        OptionError::Unsupported { key } => {
            format!("exports option \"{key}\" is not supported by moose-master; remove it")
        }
        OptionError::Unknown { .. } if follows_password => format!(
            "unknown exports option \"{}\" after a password=; an exports password cannot \
             contain commas, choose another",
            part.escape_debug()
        ),
        OptionError::Unknown { key } => {
            let known: Vec<&str> = exports::FLAGS
                .iter()
                .chain(&exports::VALUED)
                .copied()
                .collect();
            format!(
                "unknown exports option \"{}\"; {EXPORT_OPTIONS_HELP}{}",
                part.escape_debug(),
                did_you_mean(key, &known)
            )
        }
        OptionError::BadIds { .. } | OptionError::BadPassword | OptionError::GoalsCross { .. } => {
            e.to_string()
        }
    }
}

/// The inventory's wording of a disk limit error.
fn limit_error(e: &LimitError) -> &'static str {
    match e {
        LimitError::NotSize(_) | LimitError::SharedDisk => "is not a size",
        LimitError::NotPercentage(_) | LimitError::PercentOutOfRange => {
            "is not a percentage from 0 to 100"
        }
        LimitError::Zero => "is zero",
    }
}

/// Removes `.` and `..` without touching the file system.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            // Only absolute paths come here: `..` at the root stays at the root.
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

pub(crate) fn is_loopback(address: &str) -> bool {
    address
        .parse::<Ipv4Addr>()
        .map(|ip| ip.is_loopback())
        .unwrap_or(false)
        || address.eq_ignore_ascii_case("localhost")
}

fn same_address(a: &str, b: &str) -> bool {
    match (a.parse::<IpAddr>(), b.parse::<IpAddr>()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a.eq_ignore_ascii_case(b),
    }
}

/// A DNS-style host name (not something that only looks like a broken IPv4 address).
fn is_host_name(s: &str) -> bool {
    s.len() <= 253
        && !s.chars().all(|c| c.is_ascii_digit() || c == '.')
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

/// ` (did you mean "x"?)` when a candidate is close, else nothing.
fn did_you_mean(word: &str, candidates: &[&str]) -> String {
    suggest(word, candidates)
        .map(|s| format!(" (did you mean \"{s}\"?)"))
        .unwrap_or_default()
}

pub(crate) use moose_formats::suggest::suggest;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(suggest("chunk-server", &ROLE_NAMES), Some("chunkserver"));
        assert_eq!(suggest("Master", &ROLE_NAMES), Some("master"));
        assert_eq!(suggest("storage", &ROLE_NAMES), None);
        assert_eq!(suggest("x", &["ro", "rw"]), None);
    }

    #[test]
    fn address_forms() {
        let parse_address_range = exports::parse_address;
        assert_eq!(parse_address_range("*"), Ok((0, u32::MAX)));
        assert_eq!(
            parse_address_range("10.0.0.0/24"),
            Ok((0x0a00_0000, 0x0a00_00ff))
        );
        assert_eq!(parse_address_range("10.0.0.0/0"), Ok((0, u32::MAX)));
        assert_eq!(
            parse_address_range("192.168.1.0/255.255.255.0"),
            Ok((0xc0a8_0100, 0xc0a8_01ff))
        );
        assert_eq!(
            parse_address_range("10.0.0.5-10.0.0.9"),
            Ok((0x0a00_0005, 0x0a00_0009))
        );
        assert!(parse_address_range("10.0.0.9-10.0.0.5").is_err());
        assert!(parse_address_range("10.0.0.0/33").is_err());
        assert!(parse_address_range("10.0.0.0/255.0.255.0").is_err());
        assert!(parse_address_range("10.0.0").is_err());
        assert!(parse_address_range("").is_err());
    }

    #[test]
    fn sizes_and_limits() {
        let parse_size = |t| moose_formats::units::parse_size(t).ok();
        let check_limit = SpaceLimit::parse;
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("256MiB"), Some(256 << 20));
        assert_eq!(parse_size("1.5TiB"), Some(3 << 39));
        assert_eq!(parse_size("2G"), Some(2_000_000_000));
        assert_eq!(parse_size("12X"), None);
        assert_eq!(parse_size("."), None);
        assert!(check_limit("100GiB").is_ok());
        assert!(check_limit("-5GiB").is_ok());
        assert!(check_limit("90%").is_ok());
        assert!(check_limit("-10%").is_ok());
        assert!(check_limit("0").is_err());
        assert!(check_limit("150%").is_err());
        assert!(check_limit("lots").is_err());
    }

    #[test]
    fn paths_and_names() {
        assert_eq!(normalize(Path::new("/a/./b/../c")), PathBuf::from("/a/c"));
        assert_eq!(normalize(Path::new("/../x")), PathBuf::from("/x"));
        assert_eq!(exports::normalize_path("a//b/"), "/a/b");
        assert_eq!(exports::normalize_path("/"), "/");
        assert!(is_host_name("cs1.example.com"));
        assert!(!is_host_name("10.0.0.256"));
        assert!(!is_host_name("-bad"));
        assert!(is_loopback("127.0.0.2"));
        assert!(is_loopback("LOCALHOST"));
        assert!(!is_loopback("10.0.0.1"));
        assert!(same_address("10.0.0.1", "10.0.0.1"));
        assert!(same_address("Cs1", "cs1"));
    }
}
