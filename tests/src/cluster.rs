//! `LocalCluster`: a master, chunkservers and mounts on 127.0.0.1.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use moose_formats::exports::ExportsFile;
use moose_formats::hdd::{HddEntry, HddFile, SpaceLimit};
use moose_formats::value::Name;
use moose_formats::{
    ChunkserverCfg, ChunkserverKeys, CommonKeys, DaemonCfg, DaemonKeys, MasterCfg, MasterKeys,
    MetaloggerCfg, MetaloggerKeys,
};

use crate::{bin_dir, free_port};

/// What to start.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    pub chunkservers: usize,
    /// Size limit of each chunkserver's disk (hdd line option), e.g. "2GiB"; "tmpfs:SIZE"
    /// gives each disk its own tmpfs, "shared-tmpfs:SIZE[:LIMIT]" puts every disk on one tmpfs
    /// (disks sharing a file system, as folders on one root file system do), each with the
    /// hdd line limit LIMIT.
    pub disk_limit: Option<String>,
    /// Lines of the exports file.
    pub exports: Vec<String>,
    /// Extra master config lines.
    pub master_extra: Vec<String>,
    /// Extra chunkserver config lines (every chunkserver).
    pub chunkserver_extra: Vec<String>,
    pub default_goal: u8,
    /// Start a metalogger too.
    pub metalogger: bool,
}

impl Default for ClusterSpec {
    fn default() -> Self {
        ClusterSpec {
            chunkservers: 3,
            disk_limit: Some("4GiB".into()),
            exports: vec!["* / rw,alldirs,maproot=0".into()],
            master_extra: vec![],
            chunkserver_extra: vec![],
            default_goal: 1,
            metalogger: false,
        }
    }
}

pub struct Chunkserver {
    pub cfg: PathBuf,
    pub data: PathBuf,
    pub disk: PathBuf,
    pub port: u16,
}

pub struct LocalCluster {
    pub dir: tempfile::TempDir,
    pub bins: PathBuf,
    pub master_cfg: PathBuf,
    pub master_data: PathBuf,
    pub exports_file: PathBuf,
    pub cs_port: u16,
    pub cl_port: u16,
    pub ml_port: u16,
    pub chunkservers: Vec<Chunkserver>,
    pub mounts: Vec<PathBuf>,
    /// Config and DATA_PATH of the metalogger, when there is one.
    pub metalogger: Option<(PathBuf, PathBuf)>,
    spec: ClusterSpec,
}

/// DATA_PATH, and WORKING_USER root (the tests run as root and keep it).
fn run_as_root(data: &Path) -> CommonKeys {
    CommonKeys {
        data_path: Some(data.to_path_buf()),
        working_user: Some("root".into()),
        ..CommonKeys::default()
    }
}

/// The config text of `cfg` with a test's extra `KEY = VALUE` lines, read back by the daemon's
/// own parser (so a misspelt extra key fails here, naming the line).
fn with_extra<K: DaemonKeys>(cfg: DaemonCfg<K>, extra: &[String], path: &Path) -> Result<String> {
    let mut text = cfg.render("");
    for line in extra {
        text.push_str(line);
        text.push('\n');
    }
    Ok(DaemonCfg::<K>::parse(path, &text)?.render(""))
}

fn run(cmd: &mut Command) -> Result<Output> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    Ok(out)
}

fn check(cmd: &mut Command) -> Result<String> {
    let out = run(cmd)?;
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

/// Every thread of process `pid` is stopped (state `T` in /proc).
fn all_threads_stopped(pid: i32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().all(|t| {
        std::fs::read_to_string(t.path().join("stat")).is_ok_and(|stat| {
            // The state follows the parenthesised name.
            stat.rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().next())
                .is_some_and(|state| matches!(state, "T" | "t"))
        })
    })
}

/// A master frozen by [`LocalCluster::pause_master`]; it goes on when this is dropped (also
/// when a test fails).
/// A daemon frozen with SIGSTOP; it goes on (SIGCONT) when this is dropped.
pub struct Paused {
    pid: i32,
}

impl Drop for Paused {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the daemon that `pause` stopped.
        unsafe { libc::kill(self.pid, libc::SIGCONT) };
    }
}

/// Freezes the daemon that holds `lock` (SIGSTOP) until the returned guard is dropped.
fn pause(lock: &Path) -> Result<Paused> {
    let pid = moose_common::lockfile::holder(lock)
        .with_context(|| format!("no daemon holds {}", lock.display()))?;
    // SAFETY: kill(2) on a daemon this cluster started.
    if unsafe { libc::kill(pid, libc::SIGSTOP) } != 0 {
        bail!("cannot stop {pid}: {}", std::io::Error::last_os_error());
    }
    let paused = Paused { pid };
    // The stop takes effect once one of the daemon's threads runs to take it: on a busy
    // machine its other threads may answer requests meanwhile.
    let start = Instant::now();
    while !all_threads_stopped(pid) {
        if start.elapsed() > Duration::from_secs(10) {
            bail!("daemon {pid} did not stop within 10 s of SIGSTOP");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(paused)
}

impl LocalCluster {
    /// Writes every config file and starts the master and the chunkservers (each `start`
    /// returns once the daemon is ready).
    pub fn start(spec: ClusterSpec) -> Result<LocalCluster> {
        let bins = bin_dir();
        let dir = tempfile::Builder::new().prefix("moose-test-").tempdir()?;
        let root = dir.path().to_path_buf();
        let master_data = root.join("master");
        std::fs::create_dir_all(&master_data)?;
        let exports_file = root.join("exports.cfg");
        let exports = ExportsFile::parse(&exports_file, &(spec.exports.join("\n") + "\n"))?;
        std::fs::write(&exports_file, exports.render(""))?;
        let (ml_port, cs_port, cl_port) = (free_port(), free_port(), free_port());
        let master_cfg = root.join("master.cfg");
        let local = || Some("127.0.0.1".to_string());
        let master = MasterCfg {
            common: run_as_root(&master_data),
            keys: MasterKeys {
                exports_filename: Some(exports_file.clone()),
                matoml_listen_host: local(),
                matoml_listen_port: Some(ml_port),
                matocs_listen_host: local(),
                matocs_listen_port: Some(cs_port),
                matocl_listen_host: local(),
                matocl_listen_port: Some(cl_port),
                default_goal: Some(u64::from(spec.default_goal)),
                ..MasterKeys::default()
            },
            stock: Vec::new(),
        };
        std::fs::write(
            &master_cfg,
            with_extra(master, &spec.master_extra, &master_cfg)?,
        )?;
        let mut cluster = LocalCluster {
            dir,
            bins,
            master_cfg,
            master_data,
            exports_file,
            cs_port,
            cl_port,
            ml_port,
            chunkservers: vec![],
            mounts: vec![],
            metalogger: None,
            spec: spec.clone(),
        };
        cluster.start_master()?;
        if spec.metalogger {
            let data = root.join("metalogger");
            std::fs::create_dir_all(&data)?;
            let cfg = root.join("metalogger.cfg");
            let metalogger = MetaloggerCfg {
                common: run_as_root(&data),
                keys: MetaloggerKeys {
                    master_host: Some("127.0.0.1".into()),
                    master_port: Some(ml_port),
                    ..MetaloggerKeys::default()
                },
                stock: Vec::new(),
            };
            std::fs::write(&cfg, metalogger.render(""))?;
            cluster.metalogger = Some((cfg, data));
            cluster.start_metalogger()?;
        }
        for i in 0..spec.chunkservers {
            let cs = cluster.write_chunkserver(i, spec.disk_limit.as_deref())?;
            cluster.chunkservers.push(cs);
            cluster.start_chunkserver(i)?;
        }
        cluster.wait_for_chunkservers(spec.chunkservers)?;
        Ok(cluster)
    }

    fn write_chunkserver(&self, i: usize, limit: Option<&str>) -> Result<Chunkserver> {
        let root = self.dir.path();
        let data = root.join(format!("cs{i}"));
        // "shared-tmpfs:SIZE[:LIMIT]": one tmpfs for all, each disk with the hdd limit LIMIT.
        let (shared, shared_limit) = match limit.and_then(|l| l.strip_prefix("shared-tmpfs:")) {
            Some(rest) => match rest.split_once(':') {
                Some((size, limit)) => (Some(size), Some(limit)),
                None => (Some(rest), None),
            },
            None => (None, None),
        };
        let disk = match shared {
            Some(_) => self.shared_disks().join(format!("cs{i}")),
            None => root.join(format!("cs{i}-disk")),
        };
        std::fs::create_dir_all(&data)?;
        if let (Some(size), 0) = (shared, i) {
            std::fs::create_dir_all(self.shared_disks())?;
            check(
                Command::new("mount")
                    .args(["-t", "tmpfs", "-o", &format!("size={size}"), "moose-test"])
                    .arg(self.shared_disks()),
            )?;
        }
        std::fs::create_dir_all(&disk)?;
        if let Some(size) = self.spec_tmpfs_size() {
            check(
                Command::new("mount")
                    .args(["-t", "tmpfs", "-o", &format!("size={size}"), "moose-test"])
                    .arg(&disk),
            )?;
        }
        let hdd = root.join(format!("cs{i}-hdd.cfg"));
        let limit = shared_limit
            .or(limit.filter(|l| !l.contains("tmpfs:")))
            .unwrap_or("");
        let hdd_file = HddFile {
            entries: vec![HddEntry {
                path: disk.clone(),
                line: 0,
                marked_for_removal: false,
                limit: match limit {
                    "" => SpaceLimit::Default,
                    limit => SpaceLimit::parse(limit)?,
                },
            }],
            warnings: Vec::new(),
        };
        std::fs::write(&hdd, hdd_file.render(""))?;
        let port = free_port();
        let cfg = root.join(format!("cs{i}.cfg"));
        let chunkserver = ChunkserverCfg {
            common: run_as_root(&data),
            keys: ChunkserverKeys {
                master_host: Some(Name("127.0.0.1".into())),
                master_port: Some(self.cs_port),
                csserv_listen_host: Some("127.0.0.1".into()),
                csserv_listen_port: Some(port),
                hdd_conf_filename: Some(hdd.clone()),
                ..ChunkserverKeys::default()
            },
            stock: Vec::new(),
        };
        let text = with_extra(chunkserver, &self.spec.chunkserver_extra, &cfg)?;
        std::fs::write(&cfg, text)?;
        Ok(Chunkserver {
            cfg,
            data,
            disk,
            port,
        })
    }

    fn daemon(&self, program: &str, cfg: &Path, verb: &str) -> Result<String> {
        check(
            Command::new(self.bins.join(program))
                .arg("-c")
                .arg(cfg)
                .arg(verb)
                .env("RUST_BACKTRACE", "0"),
        )
    }

    /// A `tmpfs:SIZE` disk limit asks for each disk to be a tmpfs of that size.
    /// Where the disks live when they share one tmpfs.
    fn shared_disks(&self) -> PathBuf {
        self.dir.path().join("disks")
    }

    fn spec_tmpfs_size(&self) -> Option<String> {
        self.spec
            .disk_limit
            .as_deref()
            .and_then(|l| l.strip_prefix("tmpfs:"))
            .map(str::to_string)
    }

    pub fn start_metalogger(&self) -> Result<()> {
        let (cfg, _) = self
            .metalogger
            .as_ref()
            .context("no metalogger in this cluster")?;
        self.daemon("moose-metalogger", cfg, "start").map(|_| ())
    }

    pub fn stop_metalogger(&self) -> Result<()> {
        let (cfg, _) = self
            .metalogger
            .as_ref()
            .context("no metalogger in this cluster")?;
        self.daemon("moose-metalogger", cfg, "stop").map(|_| ())
    }

    /// Runs `moose-master VERB ARGS…` and returns its output (also on failure).
    pub fn master_verb(&self, args: &[&str]) -> Result<Output> {
        run(Command::new(self.bins.join("moose-master"))
            .arg("-c")
            .arg(&self.master_cfg)
            .args(args)
            .env("RUST_BACKTRACE", "0"))
    }

    /// Tries a mount and returns its output without failing the test on refusal.
    pub fn try_mount(&mut self, extra: &[&str]) -> Result<(PathBuf, Output)> {
        let mnt = self.dir.path().join(format!("mnt{}", self.mounts.len()));
        std::fs::create_dir_all(&mnt)?;
        let out = run(Command::new(self.bins.join("moose-mount"))
            .arg(&mnt)
            .args(["-H", "127.0.0.1", "-P"])
            .arg(self.cl_port.to_string())
            .args(extra)
            .env("RUST_BACKTRACE", "0"))?;
        if out.status.success() {
            self.mounts.push(mnt.clone());
        }
        Ok((mnt, out))
    }

    /// The master's log so far.
    pub fn master_log(&self) -> String {
        std::fs::read_to_string(self.master_data.join("moose-master.log")).unwrap_or_default()
    }

    pub fn start_master(&self) -> Result<()> {
        self.daemon("moose-master", &self.master_cfg, "start")
            .map(|_| ())
    }

    pub fn stop_master(&self) -> Result<()> {
        self.daemon("moose-master", &self.master_cfg, "stop")
            .map(|_| ())
    }

    pub fn kill_master(&self) -> Result<()> {
        self.daemon("moose-master", &self.master_cfg, "kill")
            .map(|_| ())
    }

    pub fn start_chunkserver(&self, i: usize) -> Result<()> {
        self.daemon("moose-chunkserver", &self.chunkservers[i].cfg, "start")
            .map(|_| ())
    }

    pub fn stop_chunkserver(&self, i: usize) -> Result<()> {
        self.daemon("moose-chunkserver", &self.chunkservers[i].cfg, "stop")
            .map(|_| ())
    }

    pub fn kill_chunkserver(&self, i: usize) -> Result<()> {
        self.daemon("moose-chunkserver", &self.chunkservers[i].cfg, "kill")
            .map(|_| ())
    }

    /// Freezes the master (SIGSTOP) until the returned guard is dropped: requests wait
    /// unanswered meanwhile, as behind a master that is slow or far away.
    pub fn pause_master(&self) -> Result<Paused> {
        pause(&self.master_data.join(".moose-master.lock"))
    }

    /// Freezes chunkserver `i` (SIGSTOP) until the returned guard is dropped.
    pub fn pause_chunkserver(&self, i: usize) -> Result<Paused> {
        pause(&self.chunkservers[i].data.join(".moose-chunkserver.lock"))
    }

    /// Waits until the master reports `n` connected chunkservers with space.
    pub fn wait_for_chunkservers(&self, n: usize) -> Result<()> {
        self.wait_until(Duration::from_secs(30), "chunkservers to register", |c| {
            let info = c.cluster_info()?;
            let ok = info["chunkservers"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter(|c| c["connected"] == true && c["total"].as_u64() > Some(0))
                        .count()
                })
                .unwrap_or(0);
            Ok(ok >= n)
        })
    }

    /// Rebuilds a lost master from the metalogger's copy, as an admin would: waits until the
    /// metalogger has every change up to `version`, stops it, kills the master, empties its
    /// DATA_PATH, runs `restore`, starts the master and waits for `chunkservers` servers.
    pub fn rebuild_master_from_metalogger(&self, version: u64, chunkservers: usize) -> Result<()> {
        // The metalogger reports what it has on disk; wait until that is every change.
        self.wait_until(Duration::from_secs(20), "the metalogger to catch up", |c| {
            let info = c.cluster_info()?;
            Ok(info["metaloggers"][0]["version"].as_u64() >= Some(version))
        })?;
        self.stop_metalogger()?;
        self.kill_master()?;
        for e in std::fs::read_dir(&self.master_data)? {
            let p = e?.path();
            if p.is_dir() {
                std::fs::remove_dir_all(&p)?;
            } else {
                std::fs::remove_file(&p)?;
            }
        }
        let ml = self
            .metalogger
            .as_ref()
            .context("this cluster has no metalogger")?
            .1
            .clone();
        let out = self.master_verb(&["restore", &ml.to_string_lossy()])?;
        if !out.status.success() {
            bail!("restore: {}", String::from_utf8_lossy(&out.stderr));
        }
        self.start_master()?;
        self.wait_for_chunkservers(chunkservers)
    }

    /// Polls `cond` every 100 ms until it holds or `timeout` passes.
    pub fn wait_until(
        &self,
        timeout: Duration,
        what: &str,
        mut cond: impl FnMut(&Self) -> Result<bool>,
    ) -> Result<()> {
        let start = Instant::now();
        let mut last_err = String::new();
        loop {
            match cond(self) {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => last_err = format!(" (last error: {e:#})"),
            }
            if start.elapsed() > timeout {
                bail!("timed out after {:?} waiting for {what}{last_err}", timeout);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The master's status as JSON (through `moose-tool info`).
    pub fn cluster_info(&self) -> Result<serde_json::Value> {
        let out = check(
            Command::new(self.bins.join("moose-tool"))
                .args(["info", "--json", "-H", "127.0.0.1", "-P"])
                .arg(self.cl_port.to_string()),
        )?;
        Ok(serde_json::from_str(&out)?)
    }

    /// Mounts the file system (subfolder `/`) and returns the mount point.
    pub fn mount(&mut self) -> Result<PathBuf> {
        self.mount_with(&[])
    }

    pub fn mount_with(&mut self, extra: &[&str]) -> Result<PathBuf> {
        let mnt = self.dir.path().join(format!("mnt{}", self.mounts.len()));
        std::fs::create_dir_all(&mnt)?;
        check(
            Command::new(self.bins.join("moose-mount"))
                .arg(&mnt)
                .args(["-H", "127.0.0.1", "-P"])
                .arg(self.cl_port.to_string())
                .args(extra)
                .env("RUST_BACKTRACE", "0"),
        )?;
        self.mounts.push(mnt.clone());
        Ok(mnt)
    }

    pub fn unmount(&mut self, mnt: &Path) -> Result<()> {
        check(Command::new("umount").arg(mnt))?;
        self.mounts.retain(|m| m != mnt);
        Ok(())
    }

    /// Runs moose-tool with `args`.
    pub fn tool(&self, args: &[&str]) -> Result<String> {
        check(Command::new(self.bins.join("moose-tool")).args(args))
    }

    /// Every chunk file on chunkserver `i`.
    pub fn chunk_files(&self, i: usize) -> Vec<PathBuf> {
        let mut out = vec![];
        let disk = &self.chunkservers[i].disk;
        for sub in std::fs::read_dir(disk).into_iter().flatten().flatten() {
            if !sub.path().is_dir() {
                continue;
            }
            for f in std::fs::read_dir(sub.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let name = f.file_name().to_string_lossy().into_owned();
                if name.starts_with("chunk_") && name.ends_with(".mfs") {
                    out.push(f.path());
                }
            }
        }
        out.sort();
        out
    }

    /// Writes the kernel's dirty pages and drops its caches, so reads reach the cluster.
    pub fn drop_caches(&self) {
        // SAFETY: sync(2) cannot fail.
        unsafe { libc::sync() };
        let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for m in std::mem::take(&mut self.mounts) {
            let ok = Command::new("umount")
                .arg(&m)
                .output()
                .is_ok_and(|o| o.status.success());
            if !ok {
                let _ = Command::new("umount").arg("-l").arg(&m).output();
            }
        }
        for i in 0..self.chunkservers.len() {
            let _ = self.kill_chunkserver(i);
        }
        if let Some((cfg, _)) = &self.metalogger {
            let _ = self.daemon("moose-metalogger", cfg, "kill");
        }
        let _ = self.kill_master();
        for cs in &self.chunkservers {
            let _ = Command::new("umount").arg(&cs.disk).output();
        }
        if self.shared_disks().exists() {
            let _ = Command::new("umount").arg(self.shared_disks()).output();
        }
    }
}
