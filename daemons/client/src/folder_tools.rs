//! `moose-tool` verbs about trees: `dirinfo` (the master's counters of a tree) and
//! `makesnapshot` (a lazy copy made on the master).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use moose_proto::msg::{ClReply, ClRequest, DirStats};
use moose_proto::FsError;
use serde_json::{json, Value};

use crate::master::CallError;
use crate::tool::{failure, finish, own_cred, resolve, runtime, Sessions};

/// How long `makesnapshot` retries while a file of the source is being written.
const SNAPSHOT_PATIENCE: Duration = Duration::from_secs(30);

/// Text of a `dirinfo` answer (after the `PATH:` line), laid out as stock `mfsdirinfo`.
pub fn format_dirinfo(s: &DirStats) -> String {
    format!(
        " inodes: {:>24}\n  directories: {:>18}\n  files: {:>24}\n chunks: {:>24}\n \
         length: {:>24}\n size: {:>26}\n realsize: {:>22}\n",
        s.inodes, s.dirs, s.files, s.chunks, s.length, s.size, s.realsize
    )
}

pub fn dirinfo_json(path: &str, s: &DirStats) -> Value {
    json!({
        "path": path,
        "inodes": s.inodes,
        "directories": s.dirs,
        "files": s.files,
        "chunks": s.chunks,
        "length": s.length,
        "size": s.size,
        "realsize": s.realsize,
    })
}

async fn dirinfo_one(
    sessions: &mut Sessions,
    path: &Path,
    json_out: bool,
) -> anyhow::Result<Value> {
    let target = resolve(path)?;
    let (client, inode) = sessions.inode_of(&target).await?;
    let shown = path.display().to_string();
    match client.call(ClRequest::DirInfo { inode }).await? {
        ClReply::DirInfo(s) => {
            if !json_out {
                print!("{shown}:\n{}", format_dirinfo(&s));
            }
            Ok(dirinfo_json(&shown, &s))
        }
        other => bail!("unexpected answer from the master: {other:?}"),
    }
}

/// Where a snapshot of `src` goes: into `dst` when it is a folder (under the source's name),
/// else as `dst` itself. Returns the folder and the name.
fn destination(src: &Path, dst: &Path, many: bool) -> anyhow::Result<(PathBuf, Vec<u8>)> {
    use std::os::unix::ffi::OsStrExt;
    if dst.is_dir() {
        let name = src
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.as_bytes().to_vec()))
            .ok_or_else(|| anyhow!("{} has no name to copy under", src.display()))?;
        return Ok((dst.to_path_buf(), name));
    }
    if many {
        bail!(
            "{} is not a folder: with several sources the destination must be an existing folder",
            dst.display()
        );
    }
    let name = dst
        .file_name()
        .map(|n| n.as_bytes().to_vec())
        .ok_or_else(|| anyhow!("{} has no name to create", dst.display()))?;
    let parent = match dst.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((parent, name))
}

async fn snapshot_one(
    sessions: &mut Sessions,
    src: &Path,
    dst: &Path,
    many: bool,
    replace: bool,
) -> anyhow::Result<Value> {
    let source = resolve(src)?;
    let (folder, name) = destination(src, dst, many)?;
    let into = resolve(&folder).with_context(|| format!("destination {}", folder.display()))?;
    if source.mount_point != into.mount_point {
        bail!(
            "{} and {} are on different mounts: a snapshot stays within one file system",
            src.display(),
            folder.display()
        );
    }
    let (client, src_inode) = sessions.inode_of(&source).await?;
    let (_, parent) = sessions.inode_of(&into).await?;
    let req = ClRequest::Snapshot {
        src: src_inode,
        parent,
        name: name.clone(),
        replace,
        cred: own_cred(),
    };
    let start = Instant::now();
    loop {
        match client.call(req.clone()).await {
            Ok(ClReply::Done) => break,
            Err(CallError::Fs(FsError::Locked)) if start.elapsed() < SNAPSHOT_PATIENCE => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(CallError::Fs(FsError::Exist)) => bail!(
                "{}/{} exists (give -o to replace it)",
                folder.display(),
                String::from_utf8_lossy(&name)
            ),
            Err(CallError::Fs(FsError::Locked)) => bail!(
                "a file of the source was being written for {}s; try again when writes pause",
                SNAPSHOT_PATIENCE.as_secs()
            ),
            Err(e) => return Err(e.into()),
            Ok(other) => bail!("unexpected answer from the master: {other:?}"),
        }
    }
    Ok(json!({
        "source": src.display().to_string(),
        "destination": folder.join(String::from_utf8_lossy(&name).as_ref()).display().to_string(),
    }))
}

/// `moose-tool dirinfo PATH...`
pub fn dirinfo(paths: &[PathBuf], json_out: bool) -> ExitCode {
    let Some(rt) = runtime() else {
        return ExitCode::FAILURE;
    };
    let mut failed = false;
    let mut results = Vec::new();
    rt.block_on(async {
        let mut sessions = Sessions::default();
        for path in paths {
            match dirinfo_one(&mut sessions, path, json_out).await {
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

/// `moose-tool makesnapshot [-o] SRC... DST`
pub fn makesnapshot(sources: &[PathBuf], dst: &Path, replace: bool, json_out: bool) -> ExitCode {
    let Some(rt) = runtime() else {
        return ExitCode::FAILURE;
    };
    let mut failed = false;
    let mut results = Vec::new();
    rt.block_on(async {
        let mut sessions = Sessions::default();
        for src in sources {
            match snapshot_one(&mut sessions, src, dst, sources.len() > 1, replace).await {
                Ok(v) => results.push(v),
                Err(e) => {
                    failed = true;
                    results.push(failure(src, &e));
                }
            }
        }
    });
    finish(results, failed, json_out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirinfo_text_is_laid_out_as_stock() {
        let s = DirStats {
            inodes: 7,
            dirs: 2,
            files: 5,
            chunks: 5,
            length: 1048581,
            size: 1372160,
            realsize: 2744320,
        };
        assert_eq!(
            format_dirinfo(&s),
            " inodes:                        7\n  directories:                  2\n  files:                        5\n chunks:                        5\n length:                  1048581\n size:                    1372160\n realsize:                2744320\n"
        );
        assert_eq!(dirinfo_json("/m/d", &s)["directories"], 2);
    }

    #[test]
    fn a_snapshot_goes_into_an_existing_folder_or_becomes_the_name() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::write(&src, b"x").unwrap();
        let (folder, name) = destination(&src, dir.path(), true).unwrap();
        assert_eq!(
            (folder.as_path(), name.as_slice()),
            (dir.path(), &b"src"[..])
        );
        let (folder, name) = destination(&src, &dir.path().join("new"), false).unwrap();
        assert_eq!(
            (folder.as_path(), name.as_slice()),
            (dir.path(), &b"new"[..])
        );
        let e = destination(&src, &dir.path().join("new"), true).unwrap_err();
        assert!(e.to_string().contains("must be an existing folder"));
    }
}
