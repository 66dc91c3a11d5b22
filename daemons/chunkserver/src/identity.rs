//! Who this chunkserver is: the id the master gave it and the cluster it belongs to
//! (`DATA_PATH/chunkserver.id`), and the cluster each disk belongs to (`DISK/.metaid`).

use std::io::Write;
use std::path::{Path, PathBuf};

/// Name of the per-disk file holding the cluster id.
pub const METAID_FILE: &str = ".metaid";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub cs_id: u32,
    pub cluster_id: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{} is damaged (expected 'CS_ID CLUSTER_ID', found '{text}'); delete it to register \
         this chunkserver as a new one",
        .path.display()
    )]
    Parse { path: PathBuf, text: String },
    #[error("cannot write {}: {source}", .path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Reads `chunkserver.id`; `None` when it does not exist yet.
pub fn load(path: &Path) -> Result<Option<Identity>, IdentityError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(IdentityError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let bad = || IdentityError::Parse {
        path: path.to_path_buf(),
        text: text.trim().to_string(),
    };
    let mut words = text.split_whitespace();
    let cs_id = words.next().and_then(|w| w.parse().ok()).ok_or_else(bad)?;
    let cluster_id = words.next().and_then(|w| w.parse().ok()).ok_or_else(bad)?;
    if words.next().is_some() {
        return Err(bad());
    }
    Ok(Some(Identity { cs_id, cluster_id }))
}

/// Writes `chunkserver.id` (atomically: a crash leaves the old or the new content).
pub fn save(path: &Path, id: &Identity) -> Result<(), IdentityError> {
    write_atomic(path, &format!("{} {}\n", id.cs_id, id.cluster_id)).map_err(|source| {
        IdentityError::Write {
            path: path.to_path_buf(),
            source,
        }
    })
}

/// The cluster id recorded on a disk; `None` for a disk that never joined a cluster.
pub fn read_metaid(disk: &Path) -> Result<Option<u64>, String> {
    let path = disk.join(METAID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().parse().map(Some).map_err(|_| {
            format!(
                "{} is damaged (expected the cluster id as a decimal number, found '{}'); \
                 if this folder belongs to this cluster, write the cluster id into it",
                path.display(),
                text.trim()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Records the cluster id on a disk.
pub fn write_metaid(disk: &Path, cluster_id: u64) -> Result<(), String> {
    let path = disk.join(METAID_FILE);
    write_atomic(&path, &format!("{cluster_id}\n"))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_file_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chunkserver.id");
        assert_eq!(load(&path).unwrap(), None);
        let id = Identity {
            cs_id: 7,
            cluster_id: 123_456_789_012,
        };
        save(&path, &id).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "7 123456789012\n");
        assert_eq!(load(&path).unwrap(), Some(id));
        std::fs::write(&path, "7\n").unwrap();
        let e = load(&path).unwrap_err().to_string();
        assert!(e.contains("is damaged") && e.contains("found '7'"), "{e}");
    }

    #[test]
    fn metaid_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_metaid(dir.path()).unwrap(), None);
        write_metaid(dir.path(), 42).unwrap();
        assert_eq!(read_metaid(dir.path()).unwrap(), Some(42));
        std::fs::write(dir.path().join(METAID_FILE), "x").unwrap();
        assert!(read_metaid(dir.path())
            .unwrap_err()
            .contains(".metaid is damaged"));
    }
}
