//! The cluster inventory of `moosectl`: one TOML file describing hosts, roles, disks, mounts and
//! exports, validated with `file:line:column` messages that say how to fix each problem, and
//! rendered into every daemon's own config files and start/stop commands.
//!
//! No I/O here besides reading the inventory file ([`load_file`]); deploying is the console's
//! job.
//!
//! # Format
//!
//! ```toml
//! [cluster]
//! name = "demo"                     # required, not empty
//! goal = 2                          # DEFAULT_GOAL of the master, 1..9 (default 2)
//! user = "mfs"                      # WORKING_USER of every daemon (default "mfs"; "root" allowed)
//! group = ""                        # WORKING_GROUP ("" = the user's primary group)
//! install_dir = "/usr/local/bin"    # where the moose-* binaries are on each host
//! data_dir = "/var/lib/moosefs"     # each instance gets data_dir/<instance-name>
//! config_dir = "/etc/moosefs"       # each instance gets config_dir/<instance-name>.cfg
//! log_dir = ""                      # optional, for the console's own logs
//!
//! [cluster.ports]                   # all optional: MooseFS defaults 9419-9422
//! master_metalogger = 9419
//! master_chunkserver = 9420
//! master_client = 9421
//! chunkserver = 9422                # default port of [[hosts.chunkservers]]
//!
//! [[hosts]]
//! name = "m1"                       # letters, digits, '.', '-', '_'; unique
//! address = "10.0.0.1"              # IPv4 address or host name the other hosts use
//! transport = "ssh"                 # "ssh" (default) or "local" (this machine)
//! ssh = { user = "root", port = 22, key = "~/.ssh/id_ed25519" }   # optional
//! # ssh also takes jump = "[user@]host[:port]" and sudo = true (non-root: sudo -n -- ...)
//! roles = ["master", "metalogger"]  # master, metalogger, chunkserver, client
//!
//! [[hosts]]
//! name = "cs1"
//! address = "10.0.0.2"
//! roles = ["chunkserver", "client"]
//!
//! [[hosts.chunkservers]]            # one per chunkserver instance of this host
//! port = 9422                       # optional: cluster.ports.chunkserver
//! disks = [ { path = "/srv/d1" }, { path = "/srv/d2", limit = "100GiB" }, { path = "/srv/old", remove = true } ]
//! labels = []                       # optional, letters A-Z
//!
//! [hosts.client]
//! mount = "/mnt/moosefs"
//! subfolder = "/"                   # optional
//! options = ["mfsattrcacheto=1.0"]  # optional, passed as -o
//! password = ""                     # optional
//!
//! [[exports]]
//! address = "10.0.0.0/24"           # *, IP, IP/bits, IP/netmask, A-B
//! path = "/"
//! options = ["rw", "alldirs", "maproot=0"]
//!
//! [[topology]]                      # optional
//! address = "10.0.0.0/24"
//! location = "rack1"
//! ```
//!
//! Relative paths (install_dir, data_dir, config_dir, log_dir, disk paths, mount points) are
//! resolved against [`LoadOptions::base`]; without a base they are errors. Instance names and
//! the files of each instance are described in [`render`](mod@render).
//!
//! # Use
//!
//! ```
//! let loaded = moose_inventory::load_local_default(std::path::Path::new("/var/lib/moosectl"))
//!     .expect("the built-in inventory is valid");
//! for file in moose_inventory::render(&loaded.inventory) {
//!     assert!(file.path.is_absolute());
//! }
//! let instances = moose_inventory::commands(&loaded.inventory);
//! assert_eq!(instances[0].name, "master");
//! ```

pub mod admission;
pub mod error;
pub mod load;
pub mod model;
pub mod render;
mod validate;

pub use error::{Diagnostic, LoadError, Report, Severity};
pub use load::{load_file, load_local_default, load_str, LoadOptions, Loaded};
pub use model::{
    Chunkserver, Client, Cluster, Disk, Export, Host, Inventory, Jump, Ports, Role, Ssh,
    TopologyEntry, Transport,
};
pub use render::{commands, exports_path, render, Command, RenderedFile, RoleInstance};

/// The inventory `moosectl` uses when started without one: every role on this machine, three
/// chunkservers, ports 19419-19442 so that a stock MooseFS on the same machine is not disturbed,
/// relative paths under the console's state folder (pass it as the base).
pub const LOCAL_DEFAULT: &str = include_str!("../examples/local.toml");

/// A realistic multi-host inventory (SSH, one master + metalogger host, three chunkserver hosts,
/// one client host), as a starting point for a real cluster.
pub const THREE_HOSTS_EXAMPLE: &str = include_str!("../examples/three-hosts.toml");
