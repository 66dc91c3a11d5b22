//! Deploying: every host gets its roles' binaries (pushed over SSH where they differ from
//! the build), every rendered config file with its rendered contents, and every data and
//! disk folder with the cluster's owner.
//!
//! In four steps: a preflight on every host before anything changes ([`Work::preflight`]:
//! connect, machine type, write access, current hashes and files), the diff
//! ([`Changes`]), staging (temp files beside their targets, synced, checked, binaries run
//! once with `--version`) and, once every host has staged, the commit (old files backed up
//! under `.moosectl-backup/<UTC time>/`, temps renamed over them).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use moose_inventory::{Command, RenderedFile, Role, Transport};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::engine::host::{Check, Folders, HostError, Machine, Source};
use crate::engine::model::Model;

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("{0}")]
    Host(HostError),
    /// A check of the preflight failed (the message names the host and the fix).
    #[error("{0}")]
    Check(String),
    #[error("{host}: cannot create the folders ({command}): {reason}")]
    Folders {
        host: String,
        command: String,
        reason: String,
    },
}

/// What deploying the chosen instances means on one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Work {
    pub host: String,
    /// Programs the instances run.
    pub binaries: Vec<&'static str>,
    pub files: Vec<RenderedFile>,
    /// Data folders and disk folders.
    pub folders: Vec<PathBuf>,
    /// Mount points of the clients (made with the folders while they are not mounted).
    pub mount_points: Vec<PathBuf>,
    /// `user:` or `user:group`.
    pub owner: String,
    /// Where the binaries go on the host.
    pub install_dir: PathBuf,
    /// The account the console logs in as (SSH hosts), and whether it uses sudo.
    pub login: Option<(String, bool)>,
}

/// A program of the build, looked at once per deploy.
#[derive(Debug, Clone)]
pub struct Built {
    pub path: PathBuf,
    pub sha256: String,
    pub bytes: u64,
    /// `uname -m` name of the ELF machine, when known.
    pub arch: Option<&'static str>,
}

/// The build the binaries come from.
#[derive(Debug, Clone, Default)]
pub struct Build {
    pub dir: PathBuf,
    pub programs: BTreeMap<String, Built>,
}

impl Build {
    /// Hashes every program in `programs` found in `dir` (blocking: run off the runtime).
    pub fn scan(dir: &Path, programs: &BTreeSet<&str>) -> Build {
        let mut out = BTreeMap::new();
        for p in programs {
            let path = dir.join(p);
            if let Ok((sha256, bytes)) = sha256_file(&path) {
                let arch = elf_arch(&path);
                out.insert(
                    p.to_string(),
                    Built {
                        path,
                        sha256,
                        bytes,
                        arch,
                    },
                );
            }
        }
        Build {
            dir: dir.to_path_buf(),
            programs: out,
        }
    }
}

/// sha256 (hex) and size of a file.
pub fn sha256_file(path: &Path) -> std::io::Result<(String, u64)> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            break;
        }
        n += k as u64;
        h.update(&buf[..k]);
    }
    Ok((hex(&h.finalize()), n))
}

pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The `uname -m` name of an ELF file's machine (`None`: not ELF, or a machine not listed).
pub fn elf_arch(path: &Path) -> Option<&'static str> {
    use std::io::Read;
    let mut head = [0u8; 20];
    std::fs::File::open(path).ok()?.read_exact(&mut head).ok()?;
    if &head[..4] != b"\x7fELF" {
        return None;
    }
    let machine = if head[5] == 2 {
        u16::from_be_bytes([head[18], head[19]])
    } else {
        u16::from_le_bytes([head[18], head[19]])
    };
    Some(match machine {
        0x3e => "x86_64",
        0xb7 => "aarch64",
        0x03 => "i686",
        0x28 => "armv7l",
        0xf3 => "riscv64",
        0x15 => "ppc64le",
        0x16 => "s390x",
        _ => return None,
    })
}

/// Whether `uname -m` of a host runs binaries built for `built`.
fn arch_matches(built: &str, host: &str) -> bool {
    built == host
        || (built == "i686" && matches!(host, "i386" | "i486" | "i586"))
        || (built == "armv7l" && host.starts_with("armv7"))
        || (built == "aarch64" && host == "arm64")
}

/// What deploy changes on one host, in the shape `deploy --dry-run --json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Changes {
    pub host: String,
    pub binaries: Vec<BinaryChange>,
    pub files: Vec<FileChange>,
    pub folders: Vec<PathBuf>,
    /// Whether commands run as root there (directly or through sudo).
    #[serde(skip)]
    pub root: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct BinaryChange {
    pub program: String,
    pub path: PathBuf,
    pub sha256: String,
    pub bytes: u64,
    /// `push` or `same`.
    pub action: &'static str,
    /// The sha256 there now, if the file exists.
    #[serde(skip)]
    pub old_sha256: Option<String>,
    #[serde(skip)]
    pub source: PathBuf,
}

#[derive(Debug, Clone, Serialize)]
pub struct FileChange {
    pub path: PathBuf,
    /// `create`, `update` or `same`.
    pub action: &'static str,
    /// Unified diff from the file there to the rendered one (empty when the same).
    pub diff: String,
    #[serde(skip)]
    pub file: RenderedFile,
}

impl Changes {
    /// Whether anything is pushed or written.
    pub fn pushes(&self) -> usize {
        self.binaries.iter().filter(|b| b.action == "push").count()
            + self.files.iter().filter(|f| f.action != "same").count()
    }

    /// The diff in words: binaries to push, then each changed file's unified diff.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for b in &self.binaries {
            if b.action == "push" {
                out.push_str(&format!(
                    "{}: push {} ({}): {} -> {}\n",
                    self.host,
                    b.path.display(),
                    crate::fmt::bytes(b.bytes),
                    b.old_sha256
                        .as_deref()
                        .map_or("absent".to_string(), short_sha),
                    short_sha(&b.sha256)
                ));
            }
        }
        for f in &self.files {
            match f.action {
                "same" => {}
                a => {
                    out.push_str(&format!("{}: {a} {}\n", self.host, f.path.display()));
                    out.push_str(&f.diff);
                }
            }
        }
        if out.is_empty() {
            out.push_str(&format!("{}: nothing to push\n", self.host));
        }
        out
    }
}

fn short_sha(s: &str) -> String {
    s.chars().take(12).collect()
}

/// A unified diff (3 lines of context) from `old` to `new`, labelled with `path`.
pub fn unified_diff(path: &Path, old: &str, new: &str) -> String {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    // Longest common subsequence table, from the ends.
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    // Edit script: (' ', a index, b index), ('-', ..), ('+', ..).
    let mut ops: Vec<(char, usize, usize)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            ops.push((' ', i, j));
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[i][j + 1] >= lcs[i + 1][j]) {
            ops.push(('+', i, j));
            j += 1;
        } else {
            ops.push(('-', i, j));
            i += 1;
        }
    }
    let changed: Vec<usize> = (0..ops.len()).filter(|&k| ops[k].0 != ' ').collect();
    if changed.is_empty() {
        return String::new();
    }
    let mut out = format!("--- {0}\n+++ {0}\n", path.display());
    let mut k = 0;
    while k < changed.len() {
        let start = changed[k].saturating_sub(3);
        let mut end = changed[k];
        while k < changed.len() && changed[k] <= end + 7 {
            end = changed[k];
            k += 1;
        }
        let end = (end + 3).min(ops.len() - 1);
        let hunk = &ops[start..=end];
        let (a0, b0) = (hunk[0].1, hunk[0].2);
        let a_len = hunk.iter().filter(|o| o.0 != '+').count();
        let b_len = hunk.iter().filter(|o| o.0 != '-').count();
        let from = |s: usize, l: usize| if l == 0 { s } else { s + 1 };
        out.push_str(&format!(
            "@@ -{},{a_len} +{},{b_len} @@\n",
            from(a0, a_len),
            from(b0, b_len)
        ));
        for &(op, ai, bj) in hunk {
            let text = if op == '+' { b[bj] } else { a[ai] };
            out.push_str(&format!("{op}{text}\n"));
        }
    }
    out
}

/// The preflight of every host of a deploy plan: the diff in lines, or one line per failing
/// host.
pub async fn preview(
    cluster: &crate::engine::model::Fleet,
    plan: &crate::engine::plan::Plan,
) -> Result<Vec<String>, Vec<String>> {
    let steps: Vec<&crate::engine::plan::Step> = plan
        .stages
        .iter()
        .flat_map(|s| s.steps.iter())
        .filter(|s| s.kind == crate::engine::plan::StepKind::Deploy)
        .collect();
    let hosts = preflight_all(cluster, &steps).await?;
    Ok(hosts
        .iter()
        .flat_map(|h| {
            h.changes
                .describe()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect())
}

/// One host's part of a deploy: the work and what its preflight found there.
pub struct HostDeploy {
    pub work: Work,
    pub changes: Changes,
}

/// The preflight of the hosts of these deploy steps, side by side: what each would change,
/// or one line per failing host.
pub async fn preflight_all(
    cluster: &crate::engine::model::Fleet,
    steps: &[&crate::engine::plan::Step],
) -> Result<Vec<HostDeploy>, Vec<String>> {
    let works = steps
        .iter()
        .map(|s| Work::of(&cluster.model, &s.host, &s.instances))
        .collect();
    preflight_hosts(cluster, works).await
}

/// The preflight of `works`, every host at once (at most `--parallel` of them): what each
/// would change, or one line per failing host.
pub async fn preflight_hosts(
    cluster: &crate::engine::model::Fleet,
    works: Vec<Work>,
) -> Result<Vec<HostDeploy>, Vec<String>> {
    let programs: BTreeSet<&'static str> = works
        .iter()
        .flat_map(|w| w.binaries.iter().copied())
        .collect();
    let build = cluster.build_of(&programs).await;
    let checks = crate::engine::join_all(works.iter().map(|w| {
        let host = cluster.host(&w.host);
        let build = build.clone();
        async move {
            let _slot = cluster.slots.acquire().await;
            w.preflight(host.as_ref(), &build).await
        }
    }))
    .await;
    let mut hosts = Vec::new();
    let mut errors = Vec::new();
    for (work, r) in works.into_iter().zip(checks) {
        match r {
            Ok(changes) => hosts.push(HostDeploy { work, changes }),
            Err(e) => errors.push(e.to_string()),
        }
    }
    if errors.is_empty() {
        Ok(hosts)
    } else {
        Err(errors)
    }
}

/// Stages on every host at once. When a host fails, what the others staged is removed (the
/// old version keeps running everywhere) and the failures come back, one line per host.
pub async fn stage_all(
    cluster: &crate::engine::model::Fleet,
    hosts: &[HostDeploy],
) -> Result<Vec<Staged>, Vec<String>> {
    let staged = crate::engine::join_all(hosts.iter().map(|h| {
        let host = cluster.host(&h.work.host);
        async move {
            let _slot = cluster.slots.acquire().await;
            h.work.stage(host.as_ref(), &h.changes).await
        }
    }))
    .await;
    if staged.iter().all(Result::is_ok) {
        return Ok(staged.into_iter().flatten().collect());
    }
    crate::engine::join_all(hosts.iter().zip(&staged).map(|(h, r)| {
        let host = cluster.host(&h.work.host);
        async move {
            if let Ok(s) = r {
                let temps: Vec<PathBuf> = s.iter().map(|(t, _)| t.clone()).collect();
                let _ = host.discard(&temps).await;
            }
        }
    }))
    .await;
    Err(staged
        .into_iter()
        .filter_map(|r| r.err().map(|e| e.to_string()))
        .collect())
}

/// Commits what every host staged, all at once: each host's summary or error.
pub async fn commit_all(
    cluster: &crate::engine::model::Fleet,
    hosts: &[HostDeploy],
    staged: &[Staged],
) -> Vec<Result<String, DeployError>> {
    let stamp = backup_stamp();
    crate::engine::join_all(hosts.iter().zip(staged).map(|(h, s)| {
        let host = cluster.host(&h.work.host);
        let stamp = &stamp;
        async move {
            let _slot = cluster.slots.acquire().await;
            h.work.commit(host.as_ref(), &h.changes, s, stamp).await
        }
    }))
    .await
}

/// What a host keeps of a stage: `(temp, target)` pairs.
pub type Staged = Vec<(PathBuf, PathBuf)>;

/// The UTC time as the backup folder name, e.g. `20261204T142501Z`.
pub fn backup_stamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

impl Work {
    /// The work for the instances `picked` (indexes into the model) that live on `host`.
    pub fn of(model: &Model, host: &str, picked: &[usize]) -> Work {
        let here: Vec<_> = picked
            .iter()
            .map(|&i| &model.instances[i])
            .filter(|i| i.host == host)
            .collect();
        let names: BTreeSet<&str> = here.iter().map(|i| i.name.as_str()).collect();
        let mut binaries: Vec<&'static str> = here.iter().map(|i| i.role.program()).collect();
        if here.iter().any(|i| i.role == Role::Client) {
            binaries.push("moose-tool");
        }
        binaries.dedup();
        let inv_host = model.inventory.hosts.iter().find(|h| h.name == host);
        let login = inv_host
            .filter(|h| h.transport == Transport::Ssh)
            .map(|h| (h.ssh.user.clone(), h.ssh.sudo));
        let files = moose_inventory::render(&model.inventory)
            .into_iter()
            .filter(|f| f.host == host && names.contains(f.instance.as_str()))
            .collect();
        let mut folders = Vec::new();
        for i in here.iter().filter(|i| i.role != Role::Client) {
            folders.extend(i.data_dir.iter().cloned());
            folders.extend(i.disks.iter().cloned());
        }
        let mount_points = here.iter().filter_map(|i| i.mount_point.clone()).collect();
        Work {
            host: host.to_string(),
            binaries,
            files,
            folders,
            mount_points,
            owner: model.inventory.cluster.owner(),
            install_dir: model.inventory.cluster.install_dir.clone(),
            login,
        }
    }

    /// The preflight on `host`: connects, checks the machine type against the build, write
    /// access and the login, and compares what is there with what deploy would put there.
    /// Changes nothing.
    pub async fn preflight(
        &self,
        host: &dyn Machine,
        build: &Build,
    ) -> Result<Changes, DeployError> {
        let mut binaries = Vec::new();
        let mut targets = Vec::new();
        for &p in &self.binaries {
            let target = host.binary_path(p);
            if self.login.is_none() || target == build.dir.join(p) {
                // The host runs the build in place (a local host): it must be there.
                host.check_binary(p).await.map_err(DeployError::Host)?;
                let built = build.programs.get(p);
                binaries.push(BinaryChange {
                    program: p.to_string(),
                    path: target.clone(),
                    sha256: built.map(|b| b.sha256.clone()).unwrap_or_default(),
                    bytes: built.map_or(0, |b| b.bytes),
                    action: "same",
                    old_sha256: None,
                    source: target,
                });
                continue;
            }
            let Some(built) = build.programs.get(p) else {
                return Err(DeployError::Check(format!(
                    "{}: the build has no {p} in {}; build it (cargo build --release) or pass \
                     --binaries DIR",
                    self.host,
                    build.dir.display()
                )));
            };
            targets.push(target.clone());
            binaries.push(BinaryChange {
                program: p.to_string(),
                path: target,
                sha256: built.sha256.clone(),
                bytes: built.bytes,
                action: "same",
                old_sha256: None,
                source: built.path.clone(),
            });
        }
        let mut dirs: Vec<PathBuf> = Vec::new();
        let in_place = binaries.iter().all(|b| b.path == b.source);
        if !in_place {
            dirs.push(self.install_dir.clone());
        }
        for f in &self.files {
            if let Some(d) = f.path.parent() {
                dirs.push(d.to_path_buf());
            }
        }
        dirs.extend(self.folders.iter().cloned());
        dirs.sort();
        dirs.dedup();
        let hash_targets: Vec<PathBuf> = if in_place { Vec::new() } else { targets };
        let reads: Vec<PathBuf> = self.files.iter().map(|f| f.path.clone()).collect();
        let mut facts = host
            .facts(&dirs, &hash_targets, &reads)
            .await
            .map_err(DeployError::Host)?;
        if let Some((user, sudo)) = &self.login {
            if facts.uid != Some(0) {
                if let Some(d) = facts.unwritable.first() {
                    return Err(DeployError::Check(format!(
                        "{}: {user} cannot write {}; log in as root or set sudo = true",
                        self.host,
                        d.display()
                    )));
                }
                if !sudo {
                    return Err(DeployError::Check(format!(
                        "{}: {user} is not root and sudo is not set, so the folders cannot be \
                         given to {}; log in as root or set sudo = true",
                        self.host, self.owner
                    )));
                }
            }
        }
        if !in_place {
            for b in &mut binaries {
                let built = &build.programs[&b.program];
                if let Some(arch) = built.arch {
                    if !facts.arch.is_empty() && !arch_matches(arch, &facts.arch) {
                        return Err(DeployError::Check(format!(
                            "{0}: the build is {arch} but {0} is {1}; pass --binaries DIR with \
                             a {1} build",
                            self.host, facts.arch
                        )));
                    }
                }
                b.old_sha256 = facts.hashes.get(&b.path).cloned();
                if b.old_sha256.as_deref() != Some(b.sha256.as_str()) {
                    b.action = "push";
                }
            }
        }
        let mut files = Vec::new();
        for f in &self.files {
            let current = facts.contents.remove(&f.path).flatten();
            let (action, diff) = match current {
                None => ("create", unified_diff(&f.path, "", &f.contents)),
                Some(c) if c == f.contents.as_bytes() => ("same", String::new()),
                Some(c) => (
                    "update",
                    unified_diff(&f.path, &String::from_utf8_lossy(&c), &f.contents),
                ),
            };
            files.push(FileChange {
                path: f.path.clone(),
                action,
                diff,
                file: f.clone(),
            });
        }
        Ok(Changes {
            host: self.host.clone(),
            binaries,
            files,
            folders: self.all_folders(&self.mount_points),
            root: facts.uid == Some(0),
        })
    }

    /// Stages what `changes` pushes on `host`: every file at once, each in a temp beside its
    /// target, checked there by sha256, each binary run once with `--version`. On failure the
    /// temps made are removed before the error returns.
    pub async fn stage(
        &self,
        host: &dyn Machine,
        changes: &Changes,
    ) -> Result<Staged, DeployError> {
        let mut wanted: Vec<(Source<'_>, &Path, u32, Option<&str>, String)> = Vec::new();
        for b in changes.binaries.iter().filter(|b| b.action == "push") {
            wanted.push((
                Source::File(&b.source),
                &b.path,
                0o755,
                None,
                b.sha256.clone(),
            ));
        }
        for f in changes.files.iter().filter(|f| f.action != "same") {
            let bytes = f.file.contents.as_bytes();
            wanted.push((
                Source::Bytes(bytes),
                &f.path,
                f.file.mode,
                f.file.owner.as_deref(),
                hex(&Sha256::digest(bytes)),
            ));
        }
        let pushed = changes
            .binaries
            .iter()
            .filter(|b| b.action == "push")
            .count();
        let results = crate::engine::join_all(wanted.iter().enumerate().map(
            |(k, (source, target, mode, owner, sha256))| {
                let check = Check {
                    sha256,
                    runs: k < pushed,
                };
                host.stage(target, *source, *mode, *owner, check)
            },
        ))
        .await;
        let mut staged: Staged = Vec::new();
        let mut failure = None;
        for (r, (_, target, ..)) in results.into_iter().zip(&wanted) {
            match r {
                Ok(tmp) => staged.push((tmp, target.to_path_buf())),
                Err(e) => failure = failure.or(Some(DeployError::Host(e))),
            }
        }
        match failure {
            None => Ok(staged),
            Some(e) => {
                let temps: Vec<PathBuf> = staged.iter().map(|(t, _)| t.clone()).collect();
                let _ = host.discard(&temps).await;
                Err(e)
            }
        }
    }

    /// Puts what was staged in place (old files backed up) and makes the folders, in one
    /// command there.
    pub async fn commit(
        &self,
        host: &dyn Machine,
        changes: &Changes,
        staged: &Staged,
        stamp: &str,
    ) -> Result<String, DeployError> {
        let root = changes.root;
        let folders = Folders {
            folders: &self.folders,
            mount_points: &self.mount_points,
            owner: &self.owner,
            root,
        };
        let made = host
            .commit(staged, stamp, folders)
            .await
            .map_err(|e| match e {
                HostError::Script { what, reason, .. } if what == "make the folders" => {
                    DeployError::Folders {
                        host: self.host.clone(),
                        command: self
                            .folders_command(root, &self.all_folders(&self.mount_points))
                            .shell_line(),
                        reason,
                    }
                }
                e => DeployError::Host(e),
            })?;
        let pushed = changes
            .binaries
            .iter()
            .filter(|b| b.action == "push")
            .count();
        let written = changes.files.iter().filter(|f| f.action != "same").count();
        let mut summary = format!(
            "{} binaries: {pushed} pushed; {} config files: {written} written, {} unchanged",
            changes.binaries.len(),
            changes.files.len(),
            changes.files.len() - written
        );
        if !self.folders.is_empty() || !self.mount_points.is_empty() {
            summary.push_str(&format!("; {made} folders ready"));
            if !root {
                summary.push_str(" (not root: owned by the deploying user)");
            }
        }
        Ok(summary)
    }

    /// The work in words, one line per thing.
    pub fn describe(&self) -> Vec<String> {
        let mut out = vec![match self.login {
            Some(_) => format!(
                "push binaries that differ from the build to {}: {}",
                self.install_dir.display(),
                self.binaries.join(", ")
            ),
            None => format!("check binaries: {}", self.binaries.join(", ")),
        }];
        for f in &self.files {
            out.push(format!(
                "write {} (mode {:o}{}) if it differs",
                f.path.display(),
                f.mode,
                f.owner
                    .as_ref()
                    .map(|o| format!(", owner {o}"))
                    .unwrap_or_default()
            ));
        }
        let all = self.all_folders(&self.mount_points);
        if !all.is_empty() {
            out.push(format!(
                "$ {}",
                self.folders_command(true, &all).shell_line()
            ));
        }
        if !self.mount_points.is_empty() {
            out.push("(a mount point that is mounted already is left as it is)".to_string());
        }
        out
    }

    fn all_folders(&self, mount_points: &[PathBuf]) -> Vec<PathBuf> {
        self.folders.iter().chain(mount_points).cloned().collect()
    }

    /// `install -d -o USER [-g GROUP] FOLDERS...` as root, `mkdir -p FOLDERS...` otherwise
    /// (the daemons then run as the deploying user, who owns what it creates).
    fn folders_command(&self, root: bool, folders: &[PathBuf]) -> Command {
        let mut args = Vec::new();
        let program = if root {
            let (user, group) = self.owner.split_once(':').unwrap_or((&self.owner, ""));
            args.extend(["-d".to_string(), "-o".to_string(), user.to_string()]);
            if !group.is_empty() {
                args.extend(["-g".to_string(), group.to_string()]);
            }
            "install"
        } else {
            args.push("-p".to_string());
            "mkdir"
        };
        args.extend(folders.iter().map(|f| f.to_string_lossy().into_owned()));
        Command {
            program: PathBuf::from(program),
            args,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::host::Local;
    use crate::engine::model::tests::local_model;

    #[test]
    fn work_of_the_local_host() {
        let m = local_model();
        let all: Vec<usize> = (0..m.instances.len()).collect();
        let w = Work::of(&m, "local", &all);
        assert_eq!(
            w.binaries,
            [
                "moose-master",
                "moose-metalogger",
                "moose-chunkserver",
                "moose-mount",
                "moose-tool"
            ]
        );
        assert_eq!(w.files.len(), 9);
        assert_eq!(w.folders.len(), 8, "5 data folders and 3 disks");
        assert_eq!(w.mount_points, [PathBuf::from("/var/lib/moosectl/mnt")]);
        let d = w.describe();
        assert_eq!(
            d[0],
            "check binaries: moose-master, moose-metalogger, moose-chunkserver, moose-mount, \
             moose-tool"
        );
        assert_eq!(
            d[1],
            "write /var/lib/moosectl/etc/master.cfg (mode 644) if it differs"
        );
        let folders = &d[d.len() - 2];
        assert!(folders.starts_with(
            "$ install -d -o root /var/lib/moosectl/data/master /var/lib/moosectl/data/metalogger"
        ));
        assert!(folders.ends_with(" /var/lib/moosectl/mnt"), "{folders}");
        let one = Work::of(&m, "local", &[2]);
        assert_eq!(one.binaries, ["moose-chunkserver"]);
        assert_eq!(one.files.len(), 2);
        assert_eq!(
            one.folders,
            [
                PathBuf::from("/var/lib/moosectl/data/chunkserver-19422"),
                PathBuf::from("/var/lib/moosectl/disks/cs1")
            ]
        );
    }

    /// Preflight, stage and commit on one host.
    async fn deploy_on(w: &Work, host: &dyn Machine, build: &Build) -> Result<String, DeployError> {
        let changes = w.preflight(host, build).await?;
        let staged = w.stage(host, &changes).await?;
        w.commit(host, &changes, &staged, &backup_stamp()).await
    }

    #[tokio::test]
    async fn a_staged_file_that_differs_from_what_was_sent_is_removed_and_refused() {
        let dir = tempfile::tempdir().unwrap();
        let host = Local::new("local", "127.0.0.1", dir.path().to_path_buf());
        let target = dir.path().join("etc/mfschunkserver.cfg");
        let wrong = Check {
            sha256: "0000",
            runs: false,
        };
        let e = host
            .stage(&target, Source::Bytes(b"X = 1\n"), 0o644, None, wrong)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not have the sha256 sent"), "{e}");
        assert!(e.ends_with("nothing was replaced"), "{e}");
        let left: Vec<_> = std::fs::read_dir(dir.path().join("etc")).unwrap().collect();
        assert!(left.is_empty(), "the temp was removed: {left:?}");
    }

    #[tokio::test]
    async fn deploy_writes_only_what_differs_and_makes_folders() {
        let dir = tempfile::tempdir().unwrap();
        let bins = dir.path().join("bin");
        std::fs::create_dir(&bins).unwrap();
        let exe = bins.join("moose-chunkserver");
        std::fs::write(&exe, "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let loaded = moose_inventory::load_local_default(dir.path()).unwrap();
        let m = Model::new(loaded.inventory, vec![]);
        let host = Local::new("local", "127.0.0.1", bins.clone());
        let w = Work::of(&m, "local", &[2]);
        let build = Build {
            dir: bins,
            programs: BTreeMap::new(),
        };
        let first = deploy_on(&w, &host, &build).await.unwrap();
        assert!(
            first.starts_with(
                "1 binaries: 0 pushed; 2 config files: 2 written, 0 unchanged; 2 folders ready"
            ),
            "{first}"
        );
        assert!(dir.path().join("disks/cs1").is_dir());
        assert!(dir.path().join("data/chunkserver-19422").is_dir());
        let again = deploy_on(&w, &host, &build).await.unwrap();
        assert!(again.contains("0 written, 2 unchanged"), "{again}");
        let missing = deploy_on(&Work::of(&m, "local", &[0]), &host, &build)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            missing.starts_with("local: moose-master is missing"),
            "{missing}"
        );
    }
}
