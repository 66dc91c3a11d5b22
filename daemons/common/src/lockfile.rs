//! The daemon lockfile: a POSIX write lock on `DATA_PATH/.NAME.lock` holding the pid.
//!
//! The kernel drops the lock when the process dies, so a stale file never blocks a restart,
//! and `F_GETLK` tells any other process who holds it (that is how `stop`, `status`, `reload`
//! and `kill` find the daemon).

use std::fs::{File, OpenOptions};
use std::io::{Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{name} is already running (pid {pid}, lockfile {path})")]
    Held {
        name: String,
        pid: i32,
        path: PathBuf,
    },
    #[error("cannot create lockfile {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    /// EACCES (the seed's "can't create lockfile"): says who owns it and which chown fixes it.
    #[error("cannot create lockfile {path}: {source}; {hint}")]
    Denied {
        path: PathBuf,
        source: std::io::Error,
        hint: String,
    },
    #[error("cannot lock {path}: {source}")]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A held lockfile; dropping it releases the lock.
#[derive(Debug)]
pub struct Lockfile {
    _file: File,
    path: PathBuf,
}

impl Lockfile {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn flock_struct(kind: libc::c_short) -> libc::flock {
    // SAFETY: flock is a plain C struct; all-zero is a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl
}

/// Takes the lock at `path` and writes our pid into it.
pub fn acquire(path: &Path, name: &str) -> Result<Lockfile, LockError> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(path)
        .map_err(|source| {
            if source.kind() == std::io::ErrorKind::PermissionDenied {
                let dir = path.parent().unwrap_or(Path::new("/"));
                LockError::Denied {
                    hint: crate::user::access_hint(path, dir),
                    path: path.to_path_buf(),
                    source,
                }
            } else {
                LockError::Create {
                    path: path.to_path_buf(),
                    source,
                }
            }
        })?;
    let fl = flock_struct(libc::F_WRLCK as libc::c_short);
    // SAFETY: valid fd and a valid flock pointer.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLK, &fl) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        if matches!(err.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES)) {
            let pid = holder(path).unwrap_or(0);
            return Err(LockError::Held {
                name: name.to_string(),
                pid,
                path: path.to_path_buf(),
            });
        }
        return Err(LockError::Lock {
            path: path.to_path_buf(),
            source: err,
        });
    }
    let write = |f: &mut File| -> std::io::Result<()> {
        f.set_len(0)?;
        f.rewind()?;
        writeln!(f, "{}", std::process::id())?;
        f.flush()
    };
    write(&mut file).map_err(|source| LockError::Create {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Lockfile {
        _file: file,
        path: path.to_path_buf(),
    })
}

/// The pid of the process holding the lock at `path`, if any.
pub fn holder(path: &Path) -> Option<i32> {
    let file = File::open(path).ok()?;
    let mut fl = flock_struct(libc::F_WRLCK as libc::c_short);
    // F_GETLK needs a descriptor open for reading only when asking about a write lock.
    // SAFETY: valid fd and a valid flock pointer.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETLK, &mut fl) };
    if rc != 0 || fl.l_type == libc::F_UNLCK as libc::c_short {
        return None;
    }
    Some(fl.l_pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_is_exclusive_and_reports_holder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".t.lock");
        let lock = acquire(&path, "t").unwrap();
        assert_eq!(
            holder(&path),
            None,
            "own process is not reported by F_GETLK"
        );
        drop(lock);
        assert!(acquire(&path, "t").is_ok());
    }
}
