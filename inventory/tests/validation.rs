//! Every validation check, with the exact `file:line:column: message` it produces.

use std::path::{Path, PathBuf};

use moose_inventory::{load_file, load_str, LoadError, LoadOptions};

fn diagnostics(text: &str, options: &LoadOptions) -> (Vec<String>, Vec<String>) {
    match load_str(text, "cluster.toml", options) {
        Ok(loaded) => (
            Vec::new(),
            loaded.warnings.iter().map(ToString::to_string).collect(),
        ),
        Err(LoadError::Invalid(report)) => (
            report.errors.iter().map(ToString::to_string).collect(),
            report.warnings.iter().map(ToString::to_string).collect(),
        ),
        Err(other) => panic!("unexpected load error: {other}"),
    }
}

#[track_caller]
fn check(text: &str, errors: &[&str], warnings: &[&str]) {
    check_with(text, &LoadOptions::default(), errors, warnings);
}

#[track_caller]
fn check_with(text: &str, options: &LoadOptions, errors: &[&str], warnings: &[&str]) {
    let (e, w) = diagnostics(text, options);
    assert_eq!(e, errors, "errors");
    assert_eq!(w, warnings, "warnings");
}

const RELATIVE: &str = r#"[cluster]
name = "t"
goal = 1
install_dir = "bin"
data_dir = "./data"
config_dir = "etc/../conf"

[[hosts]]
name = "m1"
address = "127.0.0.1"
transport = "local"
roles = ["master", "metalogger", "chunkserver", "client"]

[[hosts.chunkservers]]
disks = [{ path = "disks/d1" }]

[hosts.client]
mount = "mnt"

[[exports]]
address = "127.0.0.1"
path = "/"
"#;

#[test]
fn relative_paths_are_errors_without_a_base() {
    check(
        RELATIVE,
        &[
            "cluster.toml:4:15: install_dir \"bin\" is not absolute, and relative paths need a base folder, which was not given; write an absolute path such as \"/usr/local/bin\"",
            "cluster.toml:5:12: data_dir \"./data\" is not absolute, and relative paths need a base folder, which was not given; write an absolute path such as \"/var/lib/moosefs\"",
            "cluster.toml:6:14: config_dir \"etc/../conf\" is not absolute, and relative paths need a base folder, which was not given; write an absolute path such as \"/etc/moosefs\"",
            "cluster.toml:15:19: the disk path \"disks/d1\" is not absolute, and relative paths need a base folder, which was not given; write an absolute path such as \"/srv/moosefs/d1\"",
            "cluster.toml:18:9: the mount point \"mnt\" is not absolute, and relative paths need a base folder, which was not given; write an absolute path such as \"/mnt/moosefs\"",
        ],
        &[],
    );
}

#[test]
fn relative_paths_are_resolved_against_the_base() {
    let options = LoadOptions {
        base: Some(PathBuf::from("/state")),
        this_machine: Vec::new(),
    };
    let loaded = load_str(RELATIVE, "cluster.toml", &options).unwrap();
    let inv = &loaded.inventory;
    assert_eq!(inv.cluster.install_dir, Path::new("/state/bin"));
    assert_eq!(inv.cluster.data_dir, Path::new("/state/data"));
    assert_eq!(inv.cluster.config_dir, Path::new("/state/conf"));
    assert_eq!(
        inv.hosts[0].chunkservers[0].disks[0].path,
        Path::new("/state/disks/d1")
    );
    assert_eq!(
        inv.hosts[0].client.as_ref().unwrap().mount,
        Path::new("/state/mnt")
    );
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
}

#[test]
fn the_base_must_be_absolute() {
    let options = LoadOptions {
        base: Some(PathBuf::from("state")),
        this_machine: Vec::new(),
    };
    let err = load_str(RELATIVE, "cluster.toml", &options).unwrap_err();
    assert!(matches!(err, LoadError::RelativeBase(_)), "{err}");
    assert_eq!(
        err.to_string(),
        "the base folder for relative paths must be absolute, got state; pass an absolute folder"
    );
}

#[test]
fn an_unreadable_file_names_the_path() {
    let err = load_file(
        Path::new("/nonexistent/cluster.toml"),
        &LoadOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(err, LoadError::Read { .. }));
    assert!(
        err.to_string()
            .starts_with("cannot read the inventory file /nonexistent/cluster.toml: "),
        "{err}"
    );
}

const LOCAL_ON_LAN: &str = r#"[cluster]
name = "t"
goal = 1

[[hosts]]
name = "here"
address = "192.168.1.20"
transport = "local"
roles = ["master", "metalogger", "chunkserver"]

[[hosts.chunkservers]]
disks = [{ path = "/srv/d1" }]

[[exports]]
address = "*"
path = "/"
"#;

#[test]
fn a_local_host_may_use_an_address_of_this_machine() {
    check(
        LOCAL_ON_LAN,
        &[],
        &["cluster.toml:8:13: warning: host \"here\" has transport \"local\" but its address 192.168.1.20 is neither a loopback address nor an address of this machine; set address to this machine's address, or use transport = \"ssh\""],
    );
    let options = LoadOptions {
        base: None,
        this_machine: vec!["10.1.1.1".to_string(), "192.168.1.20".to_string()],
    };
    check_with(LOCAL_ON_LAN, &options, &[], &[]);
}

#[test]
fn the_report_lists_errors_then_warnings() {
    let text = "[cluster]\nname = \"\"\n\n[[hosts]]\nname = \"m1\"\naddress = \"10.0.0.1\"\nroles = [\"master\"]\n";
    let err = load_str(text, "c.toml", &LoadOptions::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "c.toml:2:8: the cluster name is empty; set name = \"...\" in [cluster] (moosectl shows it and writes it into every generated file)\n\
         c.toml:1:1: warning: no host has the chunkserver role, so no file data can be stored; add \"chunkserver\" and a [[hosts.chunkservers]] table to a host\n\
         c.toml:1:1: warning: there are no [[exports]], so the master refuses every mount; add e.g. [[exports]] with address = \"10.0.0.0/24\", path = \"/\", options = [\"rw\", \"alldirs\"]\n\
         c.toml:7:10: warning: no host has the metalogger role, so the metadata exists only on host \"m1\"; add \"metalogger\" to the roles of a host (best another machine)"
    );
}

#[test]
fn toml_syntax_errors_keep_the_toml_location() {
    let text = r#"[cluster]
name = "t"
goal = 
[[hosts]
name = "m1"
"#;
    check(
        text,
        &[
            "cluster.toml:3:8: TOML syntax: string values must be quoted, expected literal string; fix the syntax first",
            "cluster.toml:4:9: TOML syntax: unclosed array table, expected `]`; fix the syntax first",
        ],
        &[],
    );
}

#[test]
fn unknown_keys_are_reported_everywhere_with_suggestions() {
    let text = r#"[cluster]
name = "t"
gaol = 1
colour = "blue"

[cluster.ports]
master_clients = 9421

[[hosts]]
name = "m1"
adress = "10.0.0.1"
address = "10.0.0.1"
roles = ["master", "metalogger", "chunkserver", "client"]
ssh = { usr = "root" }

[[hosts.chunkservers]]
disks = [{ path = "/srv/d1", size = "1G" }]

[hosts.client]
mountpoint = "/mnt/m"
mount = "/mnt/m"

[[exports]]
address = "*"
path = "/"
opts = ["rw"]

[[topology]]
address = "*"
location = "r1"
rack = 1

[extra]
x = 1
"#;
    check(
        text,
        &[
            "cluster.toml:3:1: unknown key \"gaol\" in [cluster]; keys there are name, goal, user, group, install_dir, data_dir, config_dir, log_dir, ports (did you mean \"goal\"?)",
            "cluster.toml:4:1: unknown key \"colour\" in [cluster]; keys there are name, goal, user, group, install_dir, data_dir, config_dir, log_dir, ports",
            "cluster.toml:7:1: unknown key \"master_clients\" in [cluster.ports]; keys there are master_metalogger, master_chunkserver, master_client, chunkserver (did you mean \"master_client\"?)",
            "cluster.toml:11:1: unknown key \"adress\" in [[hosts]]; keys there are name, address, transport, ssh, roles, chunkservers, client (did you mean \"address\"?)",
            "cluster.toml:14:9: unknown key \"usr\" in the ssh table; keys there are user, port, key, jump, sudo (did you mean \"user\"?)",
            "cluster.toml:17:30: unknown key \"size\" in a disk; keys there are path, limit, remove",
            "cluster.toml:20:1: unknown key \"mountpoint\" in [hosts.client]; keys there are mount, subfolder, options, password",
            "cluster.toml:26:1: unknown key \"opts\" in [[exports]]; keys there are address, path, options",
            "cluster.toml:31:1: unknown key \"rack\" in [[topology]]; keys there are address, location",
            "cluster.toml:33:2: unknown key \"extra\" at the top level; keys there are cluster, hosts, exports, topology",
        ],
        &[
            "cluster.toml:1:1: warning: goal 2 but only 1 chunkserver: files will stay undergoal; lower goal to 1 or add chunkservers",
        ],
    );
}

#[test]
fn unknown_and_repeated_roles() {
    let text = r#"[cluster]
name = "t"
goal = 1

[[hosts]]
name = "m1"
address = "10.0.0.1"
roles = ["master", "chunk-server", "Client", "storage", "master"]

[[exports]]
address = "10.0.0.0/24"
path = "/"
"#;
    check(
        text,
        &[
            "cluster.toml:8:20: unknown role \"chunk-server\"; roles are master, metalogger, chunkserver, client (did you mean \"chunkserver\"?)",
            "cluster.toml:8:36: unknown role \"Client\"; roles are master, metalogger, chunkserver, client (did you mean \"client\"?)",
            "cluster.toml:8:46: unknown role \"storage\"; roles are master, metalogger, chunkserver, client",
        ],
        &[
            "cluster.toml:3:8: warning: no host has the chunkserver role, so no file data can be stored; add \"chunkserver\" and a [[hosts.chunkservers]] table to a host",
            "cluster.toml:8:10: warning: no host has the metalogger role, so the metadata exists only on host \"m1\"; add \"metalogger\" to the roles of a host (best another machine)",
            "cluster.toml:8:57: warning: role \"master\" is listed twice for host \"m1\"; remove one",
        ],
    );
}

#[test]
fn no_master() {
    let text = r#"[cluster]
name = "t"
goal = 1

[[hosts]]
name = "cs1"
address = "10.0.0.2"
roles = ["chunkserver"]

[[hosts.chunkservers]]
disks = [{ path = "/srv/d1" }]

[[exports]]
address = "*"
path = "/"
"#;
    check(
        text,
        &[
            "cluster.toml:5:1: no host has the master role; add \"master\" to the roles of one host",
        ],
        &[],
    );
}

#[test]
fn two_masters() {
    let text = r#"[cluster]
name = "t"
goal = 1

[[hosts]]
name = "m1"
address = "10.0.0.1"
roles = ["master", "metalogger"]

[[hosts]]
name = "m2"
address = "10.0.0.2"
roles = ["metalogger", "master", "chunkserver"]

[[hosts.chunkservers]]
disks = [{ path = "/srv/d1" }]

[[exports]]
address = "*"
path = "/"
"#;
    check(
        text,
        &[
            "cluster.toml:13:24: a second master: host \"m1\" (line 5) already has the master role, and a cluster has exactly one; remove \"master\" here",
        ],
        &[],
    );
}

#[test]
fn duplicate_host_names_are_errors_and_duplicate_addresses_warnings() {
    let text = r#"[cluster]
name = "t"
goal = 1

[[hosts]]
name = "m1"
address = "10.0.0.1"
roles = ["master", "metalogger"]

[[hosts]]
name = "cs1"
address = "10.0.0.2"
roles = ["chunkserver"]

[[hosts.chunkservers]]
disks = [{ path = "/srv/d1" }]

[[hosts]]
name = "cs1"
address = "10.0.0.2"
roles = ["chunkserver"]

[[hosts.chunkservers]]
disks = [{ path = "/srv/d1" }]

[[exports]]
address = "*"
path = "/"
"#;
    check(
        text,
        &[
            "cluster.toml:19:8: host name \"cs1\" is already used by the host at line 10; host names must be unique",
        ],
        &[
            "cluster.toml:20:11: warning: address 10.0.0.2 is also the address of host \"cs1\" (line 10); if both are one machine, merge them into one [[hosts]] entry so that their ports are checked together",
        ],
    );
}

#[test]
fn port_conflicts_on_one_host() {
    let text = r#"[cluster]
name = "t"
goal = 1

[cluster.ports]
master_chunkserver = 9500
master_client = 9500
chunkserver = 9419

[[hosts]]
name = "m1"
address = "10.0.0.1"
roles = ["master", "metalogger", "chunkserver"]

[[hosts.chunkservers]]
disks = [{ path = "/srv/d1" }]

[[hosts.chunkservers]]
port = 9600
disks = [{ path = "/srv/d2" }]

[[hosts.chunkservers]]
port = 9600
disks = [{ path = "/srv/d3" }]

[[hosts.chunkservers]]
port = 70000
disks = [{ path = "/srv/d4" }]

[[exports]]
address = "*"
path = "/"
"#;
    check(
        text,
        &[
            "cluster.toml:7:17: master_client = 9500 is the same port as master_chunkserver; the master needs three different ports",
            "cluster.toml:15:1: this chunkserver has no port, so it takes the default 9419 (cluster.ports.chunkserver, line 8), which is already used on host \"m1\" by the master (master_metalogger); give this chunkserver another port (port = ...)",
            "cluster.toml:23:8: port 9600 is already used on host \"m1\" by the chunkserver at line 18; give this chunkserver another port (port = ...)",
            "cluster.toml:27:8: the chunkserver port 70000 is not a port; use a number from 1 to 65535",
        ],
        &[],
    );
}

#[test]
fn chunkserver_tables_disks_and_labels() {
    let text = r#"[cluster]
name = "t"
goal = 1

[[hosts]]
name = "m1"
address = "10.0.0.1"
roles = ["master", "metalogger"]

[[hosts.chunkservers]]
disks = [{ path = "/srv/d1" }]

[[hosts]]
name = "cs1"
address = "10.0.0.2"
roles = ["chunkserver"]

[[hosts]]
name = "cs2"
address = "10.0.0.3"
roles = ["chunkserver"]

[[hosts.chunkservers]]
labels = ["A", "ssd", "b"]

[[hosts]]
name = "cs3"
address = "10.0.0.4"
roles = ["chunkserver"]

[[hosts.chunkservers]]
disks = [{ path = "disks/d1", limit = "lots" }, { path = "/srv/d 2" }, { path = "/srv/d3/", remove = true }, { path = "/srv/d3" }]

[[exports]]
address = "*"
path = "/"
"#;
    check(
        text,
        &[
            "cluster.toml:10:1: [[hosts.chunkservers]] on host \"m1\", which does not have the chunkserver role; add \"chunkserver\" to its roles or remove this table",
            "cluster.toml:16:10: host \"cs1\" has the chunkserver role but no [[hosts.chunkservers]] table; add one with disks = [{ path = \"/srv/moosefs/d1\" }]",
            "cluster.toml:23:1: this chunkserver of host \"cs2\" has no disks; add disks = [{ path = \"/srv/moosefs/d1\" }]",
            "cluster.toml:24:16: label \"ssd\" is not a letter from A to Z; MooseFS labels are single letters",
            "cluster.toml:24:23: label \"b\" must be an upper-case letter; write \"B\"",
            "cluster.toml:32:19: the disk path \"disks/d1\" is relative, which is refused once a host is reached over SSH (it would be relative to this machine's state folder); write an absolute path such as \"/srv/moosefs/d1\"",
            "cluster.toml:32:39: disk limit \"lots\" is not a size; write e.g. \"100GiB\" (use at most this), \"-5GiB\" (keep this free), \"90%\" or \"-10%\"",
            "cluster.toml:32:58: disk path \"/srv/d 2\" contains a space, which the hdd file cannot hold; use a folder without spaces (or a symlink to it)",
            "cluster.toml:32:119: disk /srv/d3 is already used on host \"cs3\" (line 32); every disk line needs its own folder",
        ],
        &[],
    );
}

#[test]
fn client_tables_and_mount_points() {
    let text = r#"[cluster]
name = "t"
goal = 1

[[hosts]]
name = "m1"
address = "10.0.0.1"
roles = ["master", "metalogger", "chunkserver"]

[[hosts.chunkservers]]
disks = [{ path = "/srv/d1" }]

[hosts.client]
mount = "/mnt/m"

[[hosts]]
name = "c1"
address = "10.0.1.5"
roles = ["client"]

[[hosts]]
name = "c2"
address = "10.0.1.6"
roles = ["client"]

[hosts.client]
subfolder = "/data"

[[exports]]
address = "10.0.0.0/24"
path = "/"
"#;
    check(
        text,
        &[
            "cluster.toml:13:1: [hosts.client] on host \"m1\", which does not have the client role; add \"client\" to its roles or remove this table",
            "cluster.toml:19:10: host \"c1\" has the client role but no [hosts.client] table; add one with mount = \"/mnt/moosefs\"",
            "cluster.toml:26:1: [hosts.client] of host \"c2\" has no mount point; add mount = \"/mnt/moosefs\"",
        ],
        &[
            "cluster.toml:26:1: warning: no [[exports]] line admits host \"c2\" (10.0.1.6), so its mount will be refused; add an [[exports]] line whose address covers it, e.g. \"10.0.1.0/24\"",
        ],
    );
}

#[test]
fn empty_cluster_name_and_goal_out_of_range() {
    let text = r#"[cluster]
name = ""
goal = 10

[[hosts]]
name = "m1"
address = "10.0.0.1"
roles = ["master", "metalogger"]

[[exports]]
address = "*"
path = "/"
"#;
    check(
        text,
        &[
            "cluster.toml:2:8: the cluster name is empty; set name = \"...\" in [cluster] (moosectl shows it and writes it into every generated file)",
            "cluster.toml:3:8: goal 10 is out of range; a goal is a number of copies from 1 to 9",
        ],
        &[
            "cluster.toml:3:8: warning: no host has the chunkserver role, so no file data can be stored; add \"chunkserver\" and a [[hosts.chunkservers]] table to a host",
        ],
    );
}

#[test]
fn goal_above_the_number_of_chunkservers_warns() {
    let text = r#"[cluster]
name = "t"
goal = 3

[[hosts]]
name = "m1"
address = "10.0.0.1"
roles = ["master", "metalogger", "chunkserver"]

[[hosts.chunkservers]]
disks = [{ path = "/srv/d1" }]

[[hosts.chunkservers]]
port = 9522
disks = [{ path = "/srv/d2" }]

[[exports]]
address = "*"
path = "/"
"#;
    check(
        text,
        &[],
        &[
            "cluster.toml:3:8: warning: goal 3 but only 2 chunkservers: files will stay undergoal; lower goal to 2 or add chunkservers",
        ],
    );
}

#[test]
fn exports_and_topology_lines() {
    let text = r#"[cluster]
name = "t"
goal = 1

[[hosts]]
name = "m1"
address = "10.0.0.1"
roles = ["master", "metalogger", "chunkserver"]

[[hosts.chunkservers]]
disks = [{ path = "/srv/d1" }]

[[hosts]]
name = "app"
address = "192.168.5.7"
roles = ["client"]

[hosts.client]
mount = "/mnt/m"
subfolder = "/data/x"

[[exports]]
address = "10.0.0.0/33"
path = "/"
options = ["rw", "alldir", "umask=022", "maproot", "mingoal=3,maxgoal=2"]

[[exports]]
address = "10.0.0.1-10.0.0.0"
path = "/a b"
options = ["ro", "rw", "password=a b"]

[[exports]]
address = "192.168.5.0/255.255.255.0"
path = "/data"
options = ["rw"]

[[topology]]
address = "10.0.0.300"
location = ""
"#;
    check(
        text,
        &[
            "cluster.toml:23:11: exports address \"10.0.0.0/33\": /33 is too long, a prefix has at most 32 bits; addresses are *, A.B.C.D, A.B.C.D/BITS, A.B.C.D/NETMASK or A.B.C.D-E.F.G.H",
            "cluster.toml:25:18: unknown exports option \"alldir\"; options are ro, readonly, rw, readwrite, alldirs, ignoregid, admin, dynamicip, maproot=USER[:GROUP], mapall=USER[:GROUP], password=TEXT, mingoal=N, maxgoal=N (did you mean \"alldirs\"?)",
            "cluster.toml:25:28: exports option \"umask\" is not supported by moose-master; remove it",
            "cluster.toml:25:41: exports option \"maproot\" needs a value, e.g. maproot=0",
            "cluster.toml:25:52: mingoal 3 is above maxgoal 2; no goal could be set",
            "cluster.toml:28:11: exports address \"10.0.0.1-10.0.0.0\": the range runs backwards (10.0.0.1 is after 10.0.0.0); addresses are *, A.B.C.D, A.B.C.D/BITS, A.B.C.D/NETMASK or A.B.C.D-E.F.G.H",
            "cluster.toml:29:8: exports path \"/a b\" contains a space or '#', which the exports file cannot hold; choose a folder without them",
            "cluster.toml:30:24: an exports password cannot contain spaces, commas or '#'; choose another",
            "cluster.toml:38:11: topology address \"10.0.0.300\": '10.0.0.300' is not an IPv4 address; addresses are *, A.B.C.D, A.B.C.D/BITS, A.B.C.D/NETMASK or A.B.C.D-E.F.G.H",
            "cluster.toml:39:12: the location is empty; name the rack or place, e.g. location = \"rack1\"",
        ],
        &[
            "cluster.toml:18:1: warning: host \"app\" (192.168.5.7) mounts /data/x, but the [[exports]] lines that admit it export only /data ([[exports]] number 3); change its subfolder, or add alldirs or a line for /data/x",
            "cluster.toml:30:18: warning: this exports line is both read-only and read-write; the last one wins, keep only one",
        ],
    );
}

#[test]
fn local_transport_away_from_this_machine_and_unknown_transport() {
    let text = r#"[cluster]
name = "t"
goal = 1

[[hosts]]
name = "here"
address = "10.9.9.9"
transport = "local"
ssh = { port = 2222 }
roles = ["master", "metalogger", "chunkserver"]

[[hosts.chunkservers]]
disks = [{ path = "/srv/d1" }]

[[hosts]]
name = "there"
address = "10.9.9.10"
transport = "sssh"
roles = []

[[exports]]
address = "*"
path = "/"
"#;
    check(
        text,
        &[
            "cluster.toml:18:13: unknown transport \"sssh\"; transports are ssh, local (did you mean \"ssh\"?)",
        ],
        &[
            "cluster.toml:8:13: warning: host \"here\" has transport \"local\" but its address 10.9.9.9 is neither a loopback address nor an address of this machine; set address to this machine's address, or use transport = \"ssh\"",
            "cluster.toml:9:7: warning: host \"here\" has transport \"local\", so its ssh settings are not used; remove them",
            "cluster.toml:15:1: warning: host \"there\" has no roles, so nothing will run there; add e.g. roles = [\"chunkserver\"]",
        ],
    );
}

#[test]
fn loopback_master_that_other_machines_must_reach() {
    let text = r#"[cluster]
name = "t"
goal = 1

[[hosts]]
name = "m1"
address = "127.0.0.1"
transport = "local"
roles = ["master", "metalogger", "chunkserver"]

[[hosts.chunkservers]]
disks = [{ path = "/srv/d1" }]

[[hosts]]
name = "c1"
address = "10.0.0.5"
roles = ["client"]

[hosts.client]
mount = "/mnt/m"

[[exports]]
address = "*"
path = "/"
"#;
    check(
        text,
        &[
            "cluster.toml:7:11: host \"m1\" has the loopback address 127.0.0.1, but host \"c1\" on another machine must connect to it; set an address it can reach",
        ],
        &[],
    );
}

#[test]
fn wrong_types_and_missing_keys_name_the_key() {
    let text = r#"[cluster]
name = "t"
goal = "two"

[[hosts]]
name = "m1"
roles = ["master"]

[[hosts]]
name = "cs1"
address = "10.0.0.2"
roles = ["chunkserver"]

[[hosts.chunkservers]]
port = "9422"
disks = [{ path = "/srv/d1" }]

[[hosts]]
name = "c1"
address = "10.0.0.3"
roles = "client"

[[exports]]
path = "/"
"#;
    check(
        text,
        &[
            "cluster.toml:3:8: cluster.goal: invalid type: string \"two\", expected a whole number",
            "cluster.toml:5:1: [[hosts]] has no \"address\"; add address = \"10.0.0.2\"",
            "cluster.toml:15:8: hosts[1].chunkservers[0].port: invalid type: string \"9422\", expected a whole number",
            "cluster.toml:21:9: hosts[2].roles: invalid type: string \"client\", expected an array",
            "cluster.toml:23:1: [[exports]] has no \"address\"; add address = \"10.0.0.0/24\"",
        ],
        &[],
    );
}

#[test]
fn missing_cluster_and_wrong_shapes() {
    let text = r#"hosts = 5
exports = { address = "*" }
"#;
    check(
        text,
        &[
            "cluster.toml:1:1: no [cluster] table; add one with at least name = \"...\" (see the example inventories)",
            "cluster.toml:1:9: hosts must be an array of tables, not integer; write each entry as a [[hosts]] table",
            "cluster.toml:2:11: exports must be an array of tables, not table; write each entry as a [[exports]] table",
        ],
        &[],
    );
}

#[test]
fn names_accounts_paths_ssh_and_no_exports() {
    let text = r#"[cluster]
name = "bad name"
goal = 1
user = "m fs"
install_dir = "~/bin"
data_dir = "data#1"

[[hosts]]
name = "m 1"
address = "10.0.0.1 "
roles = ["master", "metalogger", "chunkserver"]
ssh = { user = "", port = 0, key = "" }

[[hosts.chunkservers]]
disks = [{ path = "/srv/d1" }]
"#;
    check(
        text,
        &[
            "cluster.toml:4:8: user \"m fs\" is not a valid account name; use letters, digits, '.', '_' and '-'",
            "cluster.toml:5:15: install_dir \"~/bin\" starts with '~', which is not expanded; write the full path, e.g. \"/usr/local/bin\"",
            "cluster.toml:6:12: data_dir \"data#1\" contains '#', which MooseFS config files read as a comment; choose another folder",
            "cluster.toml:6:12: data_dir \"data#1\" is relative, which is refused once a host is reached over SSH (it would be relative to this machine's state folder); write an absolute path such as \"/var/lib/moosefs\"",
            "cluster.toml:9:8: host name \"m 1\" is not allowed; use letters, digits, '.', '-' and '_'",
            "cluster.toml:10:11: address \"10.0.0.1 \" is neither an IPv4 address nor a host name; set what the other hosts use to reach this one, e.g. \"10.0.0.2\"",
            "cluster.toml:12:16: the ssh user is empty; remove it to log in as root, or name the account",
            "cluster.toml:12:27: the ssh port 0 is not a port; use a number from 1 to 65535",
            "cluster.toml:12:36: the ssh key is empty; remove it to use the SSH agent's keys, or name the private key file",
        ],
        &[
            "cluster.toml:1:1: warning: there are no [[exports]], so the master refuses every mount; add e.g. [[exports]] with address = \"10.0.0.0/24\", path = \"/\", options = [\"rw\", \"alldirs\"]",
        ],
    );
}

#[test]
fn a_misspelled_required_key_is_reported_once() {
    let text = r#"[cluster]
name = "t"
goal = 1

[[hosts]]
name = "m1"
adress = "10.0.0.1"
roles = ["master", "metalogger", "chunkserver"]

[[hosts.chunkservers]]
disks = [{ pth = "/srv/d1" }]

[[exports]]
address = "*"
path = "/"
"#;
    check(
        text,
        &[
            "cluster.toml:7:1: unknown key \"adress\" in [[hosts]]; keys there are name, address, transport, ssh, roles, chunkservers, client (did you mean \"address\"?)",
            "cluster.toml:11:12: unknown key \"pth\" in a disk; keys there are path, limit, remove (did you mean \"path\"?)",
        ],
        &[],
    );
}

#[test]
fn exports_coverage_for_host_names_and_passwords() {
    let text = r#"[cluster]
name = "t"
goal = 1

[[hosts]]
name = "m1"
address = "10.0.0.1"
roles = ["master", "metalogger", "chunkserver"]

[[hosts.chunkservers]]
disks = [{ path = "/srv/d1" }]

[[hosts]]
name = "app"
address = "app.example.com"
roles = ["client"]

[hosts.client]
mount = "/mnt/m"

[[hosts]]
name = "app2"
address = "10.0.0.7"
roles = ["client"]

[hosts.client]
mount = "/mnt/m"

[[exports]]
address = "10.0.0.0/24"
path = "/"
options = ["rw,password=s3cret"]
"#;
    check(
        text,
        &[],
        &[
            "cluster.toml:18:1: warning: host \"app\" has the address \"app.example.com\", a name, and exports lines match IPv4 addresses; make sure an [[exports]] line covers the address the master sees for it",
            "cluster.toml:26:1: warning: every [[exports]] line that admits host \"app2\" (10.0.0.7) needs a password, and its [hosts.client] has none; add password = \"...\"",
        ],
    );
    // A wrong password is judged as the master judges it, and so is the right one.
    let wrong = text.replace(
        "[hosts.client]\nmount = \"/mnt/m\"\n\n[[exports]]",
        "[hosts.client]\nmount = \"/mnt/m\"\npassword = \"guess\"\n\n[[exports]]",
    );
    check(
        &wrong,
        &[],
        &[
            "cluster.toml:18:1: warning: host \"app\" has the address \"app.example.com\", a name, and exports lines match IPv4 addresses; make sure an [[exports]] line covers the address the master sees for it",
            "cluster.toml:26:1: warning: the password of host \"app2\" (10.0.0.7) is not the one of any [[exports]] line that admits it, so its mount will be refused; give it the line's password",
        ],
    );
    let right = wrong.replace("\"guess\"", "\"s3cret\"");
    check(
        &right,
        &[],
        &["cluster.toml:18:1: warning: host \"app\" has the address \"app.example.com\", a name, and exports lines match IPv4 addresses; make sure an [[exports]] line covers the address the master sees for it"],
    );
}

#[test]
fn two_chunkservers_on_the_default_port() {
    let text = r#"[cluster]
name = "t"
goal = 1

[[hosts]]
name = "m1"
address = "10.0.0.1"
roles = ["master", "metalogger"]

[[hosts]]
name = "cs1"
address = "10.0.0.2"
roles = ["chunkserver"]

[[hosts.chunkservers]]
disks = [{ path = "/srv/d1" }]

[[hosts.chunkservers]]
disks = [{ path = "/srv/d2" }]

[[exports]]
address = "*"
path = "/"
"#;
    check(
        text,
        &["cluster.toml:18:1: this chunkserver has no port, so it takes the default 9422 (cluster.ports.chunkserver), which is already used on host \"cs1\" by the chunkserver at line 15; give this chunkserver another port (port = ...)"],
        &[],
    );
}

#[test]
fn jump_and_sudo_are_checked_and_relative_paths_refused_with_ssh() {
    let text = r#"[cluster]
name = "c"
data_dir = "data"

[[hosts]]
name = "m1"
address = "10.0.0.1"
ssh = { user = "admin", sudo = true, jump = "ops@bastion:2222" }
roles = ["master"]

[[hosts]]
name = "m2"
address = "10.0.0.2"
ssh = { jump = "bastion:99999" }
roles = ["metalogger"]

[[hosts]]
name = "m3"
address = "10.0.0.3"
ssh = { jump = "@bastion" }
roles = ["metalogger"]

[[exports]]
address = "10.0.0.0/24"
path = "/"
"#;
    let options = LoadOptions {
        base: Some(PathBuf::from("/state")),
        ..LoadOptions::default()
    };
    let e = moose_inventory::load_str(text, "cluster.toml", &options)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("cluster.toml:3:12: data_dir \"data\" is relative, which is refused once a host is reached over SSH"),
        "{e}"
    );
    assert!(
        e.contains("cluster.toml:14:16: the ssh jump \"bastion:99999\" is not [user@]host[:port]: \"99999\" is not a port from 1 to 65535"),
        "{e}"
    );
    assert!(
        e.contains("cluster.toml:20:16: the ssh jump \"@bastion\" is not [user@]host[:port]: \"\" is not a valid user name"),
        "{e}"
    );
    let ok = text
        .replace("data_dir = \"data\"", "data_dir = \"/var/lib/moosefs\"")
        .replace("bastion:99999", "bastion")
        .replace("\"@bastion\"", "\"root@[fd00::1]:22\"");
    let loaded = moose_inventory::load_str(&ok, "cluster.toml", &options).unwrap();
    let h = &loaded.inventory.hosts;
    assert!(h[0].ssh.sudo);
    let j = h[0].ssh.jump.as_ref().unwrap();
    assert_eq!(
        (j.user.as_deref(), j.host.as_str(), j.port),
        (Some("ops"), "bastion", 2222)
    );
    assert_eq!(j.to_string(), "ops@bastion:2222");
    assert_eq!(h[1].ssh.jump.as_ref().unwrap().port, 22);
    let v6 = h[2].ssh.jump.as_ref().unwrap();
    assert_eq!(
        (v6.host.as_str(), v6.to_string().as_str()),
        ("fd00::1", "root@[fd00::1]")
    );
}
