//! `SshBed`: N network namespaces on a private bridge and /24, each with its own OpenSSH
//! `sshd -f` (generated ed25519 host key; one generated user key for root), so that
//! `moosectl` can manage "hosts" over real SSH on one machine.
//!
//! The namespaces share this machine's files and PIDs (each host needs its own paths and
//! ports), but not its network: an nft table drops anything forwarded between the bridge and
//! other interfaces, and the namespaces have no route out. Processes enter a namespace with
//! `nsenter --net` (not `ip netns exec`, whose private mount namespace would hide FUSE
//! mounts made there). Everything is removed when the bed is dropped, also on panic, and
//! leftovers of dead test processes are removed first.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Names of everything a bed creates start with these (then the test process id).
const NETNS_PREFIX: &str = "moosetest-";
const LINK_PREFIX: &str = "mtb";
const VETH_PREFIX: &str = "mtv";
const NFT_PREFIX: &str = "moosetest_";
/// The /16 the beds' /24s come from.
const NET16: &str = "10.213";

/// One namespace "host".
pub struct NsHost {
    pub name: String,
    pub netns: String,
    pub address: String,
    /// The sshd's public host key line (`ssh-ed25519 AAAA...`).
    pub host_key: String,
    pub host_key_file: PathBuf,
    pub sshd_config: PathBuf,
    pub sshd_log: PathBuf,
    sshd: Option<Child>,
}

/// The namespaces, their sshds and the files to reach them.
pub struct SshBed {
    pub dir: tempfile::TempDir,
    pub hosts: Vec<NsHost>,
    /// The private key that every sshd accepts (for root and [`SshBed::add_user`] users).
    pub user_key: PathBuf,
    /// known_hosts with every host's key.
    pub known_hosts: PathBuf,
    /// The bridge's address (this side).
    pub gateway: String,
    bridge: String,
    nft_table: String,
    users: Vec<String>,
    sudoers: Vec<PathBuf>,
}

fn sh(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(args: &[&str]) -> Result<String> {
    sh(Command::new("ip").args(args))
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The test pid encoded in a name made by a bed (`<prefix><pid>x<n>...`).
fn owner_pid(name: &str, prefix: &str) -> Option<u32> {
    let rest = name.strip_prefix(prefix)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Kills every process in a namespace.
fn kill_netns_pids(netns: &str) {
    if let Ok(out) = ip(&["netns", "pids", netns]) {
        for pid in out.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Removes namespaces, bridges and nft tables left by test processes that are gone.
pub fn clear_leftovers() {
    if let Ok(list) = ip(&["netns", "list"]) {
        for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
            if let Some(pid) = owner_pid(name, NETNS_PREFIX) {
                if !pid_alive(pid) {
                    kill_netns_pids(name);
                    let _ = ip(&["netns", "delete", name]);
                }
            }
        }
    }
    if let Ok(links) = ip(&["-o", "link", "show"]) {
        for l in links.lines() {
            let Some(name) = l
                .split(':')
                .nth(1)
                .map(|n| n.trim().split('@').next().unwrap_or(""))
            else {
                continue;
            };
            for prefix in [LINK_PREFIX, VETH_PREFIX] {
                if let Some(pid) = owner_pid(name, prefix) {
                    if !pid_alive(pid) {
                        let _ = ip(&["link", "delete", name]);
                    }
                }
            }
        }
    }
    if let Ok(tables) = sh(Command::new("nft").args(["list", "tables"])) {
        for t in tables.lines() {
            let name = t.split_whitespace().last().unwrap_or("");
            if let Some(pid) = owner_pid(name, NFT_PREFIX) {
                if !pid_alive(pid) {
                    let _ = sh(Command::new("nft").args(["delete", "table", "inet", name]));
                }
            }
        }
    }
}

/// Whether the tools the bed needs are here (sshd, ip, nft, nsenter, ssh-keygen; root).
pub fn available() -> Result<(), String> {
    if !nix::unistd::Uid::current().is_root() {
        return Err("the SSH tests create network namespaces: run them as root".into());
    }
    for (tool, pkg) in [
        ("/usr/sbin/sshd", "openssh-server"),
        ("/usr/bin/ssh-keygen", "openssh-client"),
        ("/usr/sbin/nft", "nftables"),
        ("/usr/bin/nsenter", "util-linux"),
    ] {
        if !Path::new(tool).exists() {
            return Err(format!(
                "{tool} is missing: install {pkg} (scripts/test.sh does as root)"
            ));
        }
    }
    Ok(())
}

fn keygen(path: &Path) -> Result<String> {
    sh(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "", "-f"])
        .arg(path))?;
    let public = std::fs::read_to_string(path.with_extension("pub"))?;
    Ok(public
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" "))
}

impl SshBed {
    /// `names.len()` hosts, addresses `.1`, `.2`, ... of a free /24.
    pub fn new(names: &[&str]) -> Result<SshBed> {
        static BEDS: AtomicU32 = AtomicU32::new(0);
        available().map_err(anyhow::Error::msg)?;
        clear_leftovers();
        std::fs::create_dir_all("/run/sshd").context("mkdir /run/sshd")?;
        let pid = std::process::id();
        let n = BEDS.fetch_add(1, Ordering::SeqCst);
        let tag = format!("{pid}x{n}");
        let dir = tempfile::Builder::new()
            .prefix("moosetest-ssh-")
            .tempdir()?;
        // A /24 no interface here uses yet.
        let used = ip(&["-o", "-4", "addr", "show"])?;
        let mut octet = (pid.wrapping_mul(31).wrapping_add(n * 7) % 250) + 1;
        while used.contains(&format!("{NET16}.{octet}.")) {
            octet = octet % 250 + 1;
        }
        let net = format!("{NET16}.{octet}");
        let mut bed = SshBed {
            user_key: dir.path().join("user_ed25519"),
            known_hosts: dir.path().join("known_hosts"),
            gateway: format!("{net}.254"),
            bridge: format!("{LINK_PREFIX}{tag}"),
            nft_table: format!("{NFT_PREFIX}{pid}_{n}"),
            hosts: Vec::new(),
            users: Vec::new(),
            sudoers: Vec::new(),
            dir,
        };
        // From here on, Drop cleans up whatever was made.
        ip(&["link", "add", &bed.bridge, "type", "bridge"])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/24", bed.gateway),
            "dev",
            &bed.bridge,
        ])?;
        ip(&["link", "set", &bed.bridge, "up"])?;
        let rules = format!(
            "table inet {t} {{\n  chain forward_guard {{\n    type filter hook forward priority 0;\n    \
             iifname \"{b}\" oifname != \"{b}\" drop\n    oifname \"{b}\" iifname != \"{b}\" drop\n  }}\n}}\n",
            t = bed.nft_table,
            b = bed.bridge
        );
        let rules_file = bed.dir.path().join("bed.nft");
        std::fs::write(&rules_file, rules)?;
        sh(Command::new("nft").arg("-f").arg(&rules_file))?;
        let user_pub = keygen(&bed.user_key)?;
        std::fs::write(
            bed.dir.path().join("authorized_keys"),
            format!("{user_pub}\n"),
        )?;
        let mut known = String::new();
        for (i, name) in names.iter().enumerate() {
            let netns = format!("{NETNS_PREFIX}{tag}-{i}");
            let veth = format!("{VETH_PREFIX}{tag}h{i}");
            let address = format!("{net}.{}", i + 1);
            let hdir = bed.dir.path().join(format!("sshd-{name}"));
            std::fs::create_dir_all(&hdir)?;
            let host_key_file = hdir.join("host_ed25519");
            let host_key = keygen(&host_key_file)?;
            let sshd_config = hdir.join("sshd_config");
            let sshd_log = hdir.join("sshd.log");
            bed.hosts.push(NsHost {
                name: name.to_string(),
                netns: netns.clone(),
                address: address.clone(),
                host_key: host_key.clone(),
                host_key_file: host_key_file.clone(),
                sshd_config: sshd_config.clone(),
                sshd_log,
                sshd: None,
            });
            ip(&["netns", "add", &netns])?;
            ip(&[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &netns,
            ])?;
            ip(&["link", "set", &veth, "master", &bed.bridge, "up"])?;
            ip(&[
                "-n",
                &netns,
                "addr",
                "add",
                &format!("{address}/24"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &netns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &netns, "link", "set", "lo", "up"])?;
            std::fs::write(
                &sshd_config,
                format!(
                    "ListenAddress {address}:22\n\
                     HostKey {}\n\
                     AuthorizedKeysFile {}\n\
                     PermitRootLogin prohibit-password\n\
                     PubkeyAuthentication yes\n\
                     PasswordAuthentication no\n\
                     KbdInteractiveAuthentication no\n\
                     UsePAM no\n\
                     StrictModes no\n\
                     AllowTcpForwarding yes\n\
                     PidFile {}\n\
                     LogLevel VERBOSE\n",
                    host_key_file.display(),
                    bed.dir.path().join("authorized_keys").display(),
                    hdir.join("sshd.pid").display(),
                ),
            )?;
            known.push_str(&format!("{address} {host_key}\n"));
        }
        std::fs::write(&bed.known_hosts, known)?;
        for i in 0..bed.hosts.len() {
            bed.start_sshd(i)?;
        }
        Ok(bed)
    }

    /// Starts (again) the sshd of host `i` and waits until it accepts connections.
    pub fn start_sshd(&mut self, i: usize) -> Result<()> {
        let h = &mut self.hosts[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&h.sshd_log)?;
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", h.netns))
            .args(["/usr/sbin/sshd", "-D", "-e", "-f"])
            .arg(&h.sshd_config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start sshd")?;
        h.sshd = Some(child);
        let addr: std::net::SocketAddr = format!("{}:22", h.address).parse()?;
        let start = Instant::now();
        loop {
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if let Some(c) = h.sshd.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    bail!(
                        "sshd of {} exited ({st}): {}",
                        h.name,
                        std::fs::read_to_string(&h.sshd_log).unwrap_or_default()
                    );
                }
            }
            if start.elapsed() > Duration::from_secs(10) {
                bail!("sshd of {} does not listen on {addr} after 10 s", h.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the sshd of host `i` (its sessions' processes keep running).
    pub fn stop_sshd(&mut self, i: usize) {
        if let Some(mut c) = self.hosts[i].sshd.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Runs `args` inside host `i`'s namespace.
    pub fn in_host(&self, i: usize, args: &[&str]) -> Result<String> {
        sh(Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.hosts[i].netns))
            .args(args))
    }

    /// Adds nft rules in host `i`'s namespace (e.g. dropping port 22).
    pub fn nft_in_host(&self, i: usize, rules: &str) -> Result<()> {
        let file = self.dir.path().join(format!("host{i}.nft"));
        std::fs::write(&file, rules)?;
        self.in_host(i, &["nft", "-f", &file.to_string_lossy()])
            .map(|_| ())
    }

    /// Drops what this machine (the console) sends to `address:port`; the namespaces still
    /// reach it. Undone with the bed.
    pub fn block_from_console(&self, address: &str, port: u16) -> Result<()> {
        let rules = format!(
            "table inet {t} {{\n  chain console_out {{\n    type filter hook output priority 0;\n    \
             ip daddr {address} tcp dport {port} drop\n  }}\n}}\n",
            t = self.nft_table
        );
        let file = self.dir.path().join("block.nft");
        std::fs::write(&file, rules)?;
        sh(Command::new("nft").arg("-f").arg(&file)).map(|_| ())
    }

    /// Creates a login account (no password, shell /bin/sh) that the bed's key logs in
    /// as; removed with the bed.
    pub fn add_user(&mut self, name: &str) -> Result<()> {
        let _ = sh(Command::new("userdel").arg(name));
        sh(Command::new("useradd").args(["-M", "-s", "/bin/sh", name]))?;
        self.users.push(name.to_string());
        // sshd without PAM refuses locked accounts ('!'); '*' is "no password".
        sh(Command::new("usermod").args(["-p", "*", name]))?;
        Ok(())
    }

    /// Lets `user` run anything as root through `sudo -n` (a file in /etc/sudoers.d,
    /// removed with the bed).
    pub fn allow_sudo(&mut self, user: &str) -> Result<()> {
        let file = PathBuf::from(format!(
            "/etc/sudoers.d/moosetest-{}-{user}",
            std::process::id()
        ));
        std::fs::write(&file, format!("{user} ALL=(root) NOPASSWD: ALL\n"))?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o440))?;
        }
        self.sudoers.push(file);
        Ok(())
    }

    /// The PIDs of the processes in host `i`'s namespace, with their program names.
    pub fn processes(&self, i: usize) -> Vec<(u32, String)> {
        let mut out = Vec::new();
        if let Ok(list) = ip(&["netns", "pids", &self.hosts[i].netns]) {
            for pid in list
                .split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok())
            {
                // The program's file name (comm is cut at 15 characters).
                let comm = std::fs::read(format!("/proc/{pid}/cmdline"))
                    .ok()
                    .and_then(|c| {
                        let argv0 = c.split(|&b| b == 0).next()?.to_vec();
                        let argv0 = String::from_utf8_lossy(&argv0).into_owned();
                        let word = argv0.split_whitespace().next()?.to_string();
                        Some(word.rsplit('/').next().unwrap_or(&word).to_string())
                    })
                    .unwrap_or_default();
                out.push((pid, comm));
            }
        }
        out
    }

    /// The namespace a process is in, as `ip netns identify` says.
    pub fn netns_of(pid: u32) -> String {
        ip(&["netns", "identify", &pid.to_string()])
            .unwrap_or_default()
            .trim()
            .to_string()
    }
}

impl Drop for SshBed {
    fn drop(&mut self) {
        // Mounts made inside the bed's folders (by clients in the namespaces).
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") {
            let dir = self.dir.path().to_string_lossy().into_owned();
            for m in mounts.lines().filter_map(|l| l.split_whitespace().nth(1)) {
                if m.starts_with(&dir) {
                    let _ = Command::new("umount").args(["-l", m]).status();
                }
            }
        }
        for i in 0..self.hosts.len() {
            self.stop_sshd(i);
        }
        for h in &self.hosts {
            kill_netns_pids(&h.netns);
        }
        // Give killed processes a moment to leave before their namespace goes.
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5)
            && self
                .hosts
                .iter()
                .any(|h| ip(&["netns", "pids", &h.netns]).is_ok_and(|p| !p.trim().is_empty()))
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        for h in &self.hosts {
            let _ = ip(&["netns", "delete", &h.netns]);
        }
        let _ = ip(&["link", "delete", &self.bridge]);
        let _ = sh(Command::new("nft").args(["delete", "table", "inet", &self.nft_table]));
        for f in &self.sudoers {
            let _ = std::fs::remove_file(f);
        }
        for u in &self.users {
            let _ = sh(Command::new("userdel").arg(u));
        }
    }
}
