//! Deploying to one host: the binaries are there, every rendered config file has its
//! rendered contents (written only where they differ), and every data and disk folder exists
//! with the cluster's owner.

use std::collections::BTreeSet;
use std::path::PathBuf;

use moose_inventory::{Command, RenderedFile, Role};

use crate::host::{Host, HostError};
use crate::model::Model;
use crate::probe;

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("{0}")]
    Host(HostError),
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
        binaries.dedup();
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
        }
    }

    /// The work in words, one line per thing.
    pub fn describe(&self) -> Vec<String> {
        let mut out = vec![format!("check binaries: {}", self.binaries.join(", "))];
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

    /// Carries the work out on `host`; returns a one-line summary.
    pub async fn run(&self, host: &dyn Host) -> Result<String, DeployError> {
        for b in &self.binaries {
            host.check_binary(b).await.map_err(DeployError::Host)?;
        }
        let (mut written, mut unchanged) = (0, 0);
        for f in &self.files {
            let current = host.read_file(&f.path).await.map_err(DeployError::Host)?;
            if current.as_deref() == Some(f.contents.as_bytes()) {
                unchanged += 1;
                continue;
            }
            host.write_file(&f.path, f.contents.as_bytes(), f.mode, f.owner.as_deref())
                .await
                .map_err(DeployError::Host)?;
            written += 1;
        }
        let mut summary = format!(
            "binaries found; {} config files: {written} written, {unchanged} unchanged",
            self.files.len()
        );
        // A mounted mount point is the root of the file system: leave its owner alone.
        let mut unmounted = Vec::new();
        for m in &self.mount_points {
            match probe::mount(host, m).await {
                Ok(p) if p.mounted => {}
                Ok(_) => unmounted.push(m.clone()),
                Err(e) => {
                    return Err(DeployError::Folders {
                        host: self.host.clone(),
                        command: format!("probing {}", m.display()),
                        reason: e,
                    })
                }
            }
        }
        let folders = self.all_folders(&unmounted);
        if !folders.is_empty() {
            let id = Command {
                program: PathBuf::from("id"),
                args: vec!["-u".to_string()],
            };
            let root = host
                .run(&id, None)
                .await
                .map_err(DeployError::Host)?
                .stdout
                .first()
                .is_some_and(|u| u.trim() == "0");
            let cmd = self.folders_command(root, &folders);
            let done = host.run(&cmd, None).await.map_err(DeployError::Host)?;
            if !done.success() {
                return Err(DeployError::Folders {
                    host: self.host.clone(),
                    command: cmd.shell_line(),
                    reason: done.message(),
                });
            }
            summary.push_str(&format!("; {} folders ready", folders.len()));
            if !root {
                summary.push_str(" (not root: owned by the deploying user)");
            }
        }
        Ok(summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::Local;
    use crate::model::tests::local_model;

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
                "moose-mount"
            ]
        );
        assert_eq!(w.files.len(), 9);
        assert_eq!(w.folders.len(), 8, "5 data folders and 3 disks");
        assert_eq!(w.mount_points, [PathBuf::from("/var/lib/moosectl/mnt")]);
        let d = w.describe();
        assert_eq!(
            d[0],
            "check binaries: moose-master, moose-metalogger, moose-chunkserver, moose-mount"
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
        let host = Local::new("local", "127.0.0.1", bins);
        let w = Work::of(&m, "local", &[2]);
        let first = w.run(&host).await.unwrap();
        assert!(
            first.starts_with(
                "binaries found; 2 config files: 2 written, 0 unchanged; 2 folders ready"
            ),
            "{first}"
        );
        assert!(dir.path().join("disks/cs1").is_dir());
        assert!(dir.path().join("data/chunkserver-19422").is_dir());
        let again = w.run(&host).await.unwrap();
        assert!(again.contains("0 written, 2 unchanged"), "{again}");
        let missing = Work::of(&m, "local", &[0])
            .run(&host)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            missing.starts_with("local: moose-master is missing"),
            "{missing}"
        );
    }
}
