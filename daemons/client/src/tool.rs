//! `moose-tool`: goals and chunk information of files on a mount, asked from the master of the
//! mount holding each path.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use moose_admin::status::status_text;
use moose_proto::msg::{ChunkInfo, ClReply, ClRequest, CopyState, SetGoalReply};
use moose_proto::{Cred, FsError, Inode, MAX_GOAL};
use serde_json::{json, Value};

use crate::master::{CallError, MasterClient, SessionParams};
use crate::mountinfo::{mount_of, parse_mountinfo, Source, FSTYPE};

const NAME: &str = "moose-tool";

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    SetGoal {
        goal: u8,
        recursive: bool,
    },
    GetGoal,
    FileInfo,
    SetTrashTime {
        seconds: u32,
        recursive: bool,
    },
    GetTrashTime,
    /// Puts a file of a meta mount's trash back at its path.
    Undelete,
}

/// A path resolved to its mount and master inode.
pub(crate) struct Target {
    /// Canonical path of the mount point.
    pub(crate) mount_point: PathBuf,
    source: Source,
    /// `stat` inode (1 = the mount's root).
    st_ino: u64,
}

impl Target {
    /// The folder of the file system the mount shows (`/` for all of it).
    pub(crate) fn subdir(&self) -> &str {
        &self.source.subdir
    }
}

/// Connections per mount, opened on first use.
#[derive(Default)]
pub(crate) struct Sessions {
    by_mount: HashMap<PathBuf, (MasterClient, Inode)>,
}

impl Sessions {
    pub(crate) async fn get(&mut self, t: &Target) -> anyhow::Result<(MasterClient, Inode)> {
        if let Some(s) = self.by_mount.get(&t.mount_point) {
            return Ok(s.clone());
        }
        let params = SessionParams {
            host: t.source.host.clone(),
            port: t.source.port,
            subdir: t.source.subdir.clone(),
            mount_point: t.mount_point.display().to_string(),
            password: None,
            tool: true,
        };
        let (client, reply) = MasterClient::connect(params, false).await?;
        let s = (client, reply.root_inode);
        self.by_mount.insert(t.mount_point.clone(), s.clone());
        Ok(s)
    }

    /// The master of the target's mount, and the target's inode there.
    pub(crate) async fn inode_of(&mut self, t: &Target) -> anyhow::Result<(MasterClient, Inode)> {
        let (client, root) = self.get(t).await?;
        Ok((client, if t.st_ino == 1 { root } else { t.st_ino }))
    }
}

pub(crate) fn resolve(path: &Path) -> anyhow::Result<Target> {
    let canonical = std::fs::canonicalize(path)?;
    let meta = std::fs::metadata(&canonical)?;
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .context("cannot read /proc/self/mountinfo")?;
    let mounts = parse_mountinfo(&text);
    let m = mount_of(&mounts, &canonical).ok_or_else(|| anyhow!("no mount holds it"))?;
    if m.fstype != FSTYPE {
        bail!(
            "not on a MooseFS mount ({} is {} of type {})",
            m.mount_point.display(),
            m.source,
            m.fstype
        );
    }
    let source = Source::parse(&m.source)?;
    Ok(Target {
        mount_point: m.mount_point.clone(),
        source,
        st_ino: meta.ino(),
    })
}

pub(crate) fn own_cred() -> Cred {
    Cred {
        uid: nix::unistd::getuid().as_raw(),
        gid: nix::unistd::getgid().as_raw(),
        groups: nix::unistd::getgroups()
            .map(|g| g.into_iter().map(|g| g.as_raw()).collect())
            .unwrap_or_default(),
    }
}

/// Copy state as MooseFS prints it.
fn state_name(s: CopyState) -> &'static str {
    match s {
        CopyState::Valid => "VALID",
        CopyState::MarkedForRemoval => "MARKED FOR REMOVAL",
        CopyState::WrongVersion => "WRONG VERSION",
        CopyState::Damaged => "DAMAGED",
    }
}

/// Text of a `fileinfo` answer (after the `PATH:` line).
pub fn format_fileinfo(chunks: &[ChunkInfo]) -> String {
    let mut out = String::new();
    for c in chunks {
        if c.chunk_id == 0 {
            out.push_str(&format!("\tchunk {}: empty\n", c.index));
            continue;
        }
        out.push_str(&format!(
            "\tchunk {}: {:016X}_{:08X} / (id:{} ver:{})\n",
            c.index, c.chunk_id, c.version, c.chunk_id, c.version
        ));
        for (k, copy) in c.copies.iter().enumerate() {
            out.push_str(&format!(
                "\t\tcopy {}: {} (status:{})\n",
                k + 1,
                copy.server,
                state_name(copy.state)
            ));
        }
        if !c.copies.iter().any(|x| x.state == CopyState::Valid) {
            out.push_str("\t\tno valid copies !!!\n");
        }
    }
    out
}

fn fileinfo_json(chunks: &[ChunkInfo]) -> Value {
    Value::Array(
        chunks
            .iter()
            .map(|c| {
                json!({
                    "index": c.index,
                    "chunk_id": c.chunk_id,
                    "version": c.version,
                    "goal": c.goal,
                    "copies": c.copies.iter().map(|x| json!({
                        "server": x.server.to_string(),
                        "status": state_name(x.state),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect(),
    )
}

/// Text of a `setgoal` or `settrashtime` answer (after the `PATH:` line), as stock's tools
/// print it; `what` is `goal` or `trashtime`.
pub fn format_set(what: &str, r: &SetGoalReply) -> String {
    format!(
        " inodes with {what} changed: {}\n inodes with {what} not changed: {}\n inodes with permission denied: {}\n",
        r.changed, r.unchanged, r.not_permitted
    )
}

/// Prints (unless `json_out`) and returns the answer of a `setgoal` or `settrashtime`.
fn set_report(shown: &str, what: &str, r: &SetGoalReply, json_out: bool) -> Value {
    if !json_out {
        print!("{shown}:\n{}", format_set(what, r));
    }
    json!({
        "path": shown,
        "changed": r.changed,
        "unchanged": r.unchanged,
        "permission_denied": r.not_permitted,
    })
}

async fn one(
    sessions: &mut Sessions,
    cmd: &Command,
    path: &Path,
    json_out: bool,
) -> anyhow::Result<Value> {
    let target = resolve(path)?;
    if (target.source.subdir == ".") != (*cmd == Command::Undelete) {
        if *cmd == Command::Undelete {
            bail!("not in a meta mount (moose-mount -m); name a file in its trash/");
        }
        bail!("in a meta mount: name a file of a normal mount");
    }
    let (client, inode) = sessions.inode_of(&target).await?;
    let shown = path.display().to_string();
    match cmd {
        Command::GetGoal => match client.call(ClRequest::GetGoal { inode }).await? {
            ClReply::Goal(g) => {
                if !json_out {
                    println!("{shown}: {g}");
                }
                Ok(json!({ "path": shown, "goal": g }))
            }
            other => bail!("unexpected answer from the master: {other:?}"),
        },
        Command::SetGoal { goal, recursive } => {
            let req = ClRequest::SetGoal {
                inode,
                goal: *goal,
                recursive: *recursive,
                cred: own_cred(),
            };
            match client.call(req).await? {
                ClReply::GoalSet(r) => Ok(set_report(&shown, "goal", &r, json_out)),
                other => bail!("unexpected answer from the master: {other:?}"),
            }
        }
        Command::GetTrashTime => match client.call(ClRequest::GetTrashTime { inode }).await? {
            ClReply::TrashTime(t) => {
                if !json_out {
                    println!("{shown}: {t}");
                }
                Ok(json!({ "path": shown, "trash_time": t }))
            }
            other => bail!("unexpected answer from the master: {other:?}"),
        },
        Command::SetTrashTime { seconds, recursive } => {
            let req = ClRequest::SetTrashTime {
                inode,
                trash_time: *seconds,
                recursive: *recursive,
                cred: own_cred(),
            };
            match client.call(req).await? {
                ClReply::TrashTimeSet(r) => Ok(set_report(&shown, "trashtime", &r, json_out)),
                other => bail!("unexpected answer from the master: {other:?}"),
            }
        }
        Command::Undelete => undelete(&client, path, &shown, json_out).await,
        Command::FileInfo => match client.call(ClRequest::FileInfo { inode }).await? {
            ClReply::FileInfo(chunks) => {
                if !json_out {
                    print!("{shown}:\n{}", format_fileinfo(&chunks));
                }
                Ok(json!({ "path": shown, "chunks": fileinfo_json(&chunks) }))
            }
            other => bail!("unexpected answer from the master: {other:?}"),
        },
    }
}

/// `undelete`: the file named `IIIIIIII|…` in a meta mount goes back to its path.
async fn undelete(
    client: &MasterClient,
    path: &Path,
    shown: &str,
    json_out: bool,
) -> anyhow::Result<Value> {
    let name = path
        .file_name()
        .map(|n| n.as_encoded_bytes().to_vec())
        .unwrap_or_default();
    let inode = crate::meta::inode_of_name(&name).ok_or_else(|| {
        anyhow!("not a file of the trash (its name must start with its inode in hex and '|')")
    })?;
    let original = match client.call(ClRequest::TrashGet { inode }).await {
        Ok(ClReply::TrashEntry(e)) => format!("/{}", String::from_utf8_lossy(&e.path)),
        Ok(other) => bail!("unexpected answer from the master: {other:?}"),
        Err(e) => bail!("not in the trash any more ({e})"),
    };
    match client.call(ClRequest::Undelete { inode }).await {
        Ok(_) => {
            if !json_out {
                println!("{shown}: restored to {original}");
            }
            Ok(json!({ "path": shown, "restored_to": original }))
        }
        Err(CallError::Fs(FsError::Exist)) => bail!(
            "cannot restore it: {original} already exists; move that file away, then try again"
        ),
        Err(CallError::Fs(FsError::NotDir)) => {
            bail!("cannot restore it to {original}: a part of that path is not a folder")
        }
        Err(e) => bail!("cannot restore it to {original}: {e}"),
    }
}

/// The runtime a tool command runs on (says why when there is none).
pub(crate) fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("{NAME}: cannot start the runtime: {e}");
            None
        }
    }
}

/// Prints the JSON answers; the exit code says whether everything worked.
pub(crate) fn finish(results: Vec<Value>, failed: bool, json_out: bool) -> ExitCode {
    let mut failed = failed;
    if json_out {
        match serde_json::to_string_pretty(&Value::Array(results)) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("{NAME}: cannot format the answer: {e}");
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Reports a path's failure and its JSON entry.
pub(crate) fn failure(path: &Path, e: &anyhow::Error) -> Value {
    eprintln!("{NAME}: {}: {e:#}", path.display());
    json!({ "path": path.display().to_string(), "error": format!("{e:#}") })
}

/// How long `moose-tool info` waits for each step of its query.
const INFO_TIMEOUT: Duration = Duration::from_secs(10);

/// `moose-tool info`: the master's view of the cluster.
pub fn info(host: &str, port: u16, json_out: bool) -> ExitCode {
    let Some(rt) = runtime() else {
        return ExitCode::FAILURE;
    };
    let result = rt.block_on(async {
        moose_admin::connect(host, port, INFO_TIMEOUT)
            .await?
            .cluster_info()
            .await
    });
    let info = match result {
        Ok(i) => i,
        Err(e) => {
            eprintln!("{NAME}: {e}");
            return ExitCode::FAILURE;
        }
    };
    if json_out {
        match serde_json::to_string_pretty(&info) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("{NAME}: cannot format the answer: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        let at = format!("{host}:{port}");
        print!("{}", status_text(&info, &at, |s, _| s.to_string()));
    }
    ExitCode::SUCCESS
}

/// Runs the command on every path; returns the exit code (failure if any path failed).
pub fn run(cmd: Command, paths: &[PathBuf], json_out: bool) -> ExitCode {
    if let Command::SetGoal { goal, .. } = cmd {
        if goal == 0 || goal > MAX_GOAL {
            eprintln!("{NAME}: goal must be between 1 and {MAX_GOAL}, not {goal}");
            return ExitCode::FAILURE;
        }
    }
    let Some(rt) = runtime() else {
        return ExitCode::FAILURE;
    };
    let mut failed = false;
    let mut results = Vec::new();
    rt.block_on(async {
        let mut sessions = Sessions::default();
        for path in paths {
            match one(&mut sessions, &cmd, path, json_out).await {
                Ok(v) => results.push(v),
                Err(e) => {
                    failed = true;
                    results.push(failure(path, &e));
                }
            }
        }
    });
    finish(results, failed, json_out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use moose_proto::msg::CopyInfo;
    use moose_proto::CsAddr;

    fn addr(h: &str) -> CsAddr {
        CsAddr {
            host: h.into(),
            port: 9422,
        }
    }

    #[test]
    fn fileinfo_text() {
        let chunks = vec![
            ChunkInfo {
                index: 0,
                chunk_id: 0x1A,
                version: 3,
                goal: 2,
                copies: vec![
                    CopyInfo {
                        server: addr("10.0.0.1"),
                        state: CopyState::Valid,
                    },
                    CopyInfo {
                        server: addr("10.0.0.2"),
                        state: CopyState::MarkedForRemoval,
                    },
                ],
            },
            ChunkInfo {
                index: 1,
                chunk_id: 0x1B,
                version: 1,
                goal: 2,
                copies: vec![],
            },
        ];
        assert_eq!(
            format_fileinfo(&chunks),
            "\tchunk 0: 000000000000001A_00000003 / (id:26 ver:3)\n\
             \t\tcopy 1: 10.0.0.1:9422 (status:VALID)\n\
             \t\tcopy 2: 10.0.0.2:9422 (status:MARKED FOR REMOVAL)\n\
             \tchunk 1: 000000000000001B_00000001 / (id:27 ver:1)\n\
             \t\tno valid copies !!!\n"
        );
        let j = fileinfo_json(&chunks);
        assert_eq!(j[0]["copies"][1]["status"], "MARKED FOR REMOVAL");
        assert_eq!(j[1]["copies"].as_array().map(|a| a.len()), Some(0));
    }

    #[test]
    fn setgoal_text() {
        let r = SetGoalReply {
            changed: 3,
            unchanged: 1,
            not_permitted: 0,
        };
        assert_eq!(
            format_set("goal", &r),
            " inodes with goal changed: 3\n inodes with goal not changed: 1\n inodes with permission denied: 0\n"
        );
    }

    #[test]
    fn path_outside_moosefs_is_refused() {
        let e = resolve(Path::new("/proc")).err().map(|e| format!("{e:#}"));
        assert!(e.is_some_and(|m| m.contains("not on a MooseFS mount")));
    }
}
