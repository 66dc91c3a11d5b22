//! Questions asked on a host with small POSIX shell scripts (run through [`Machine::run`], so
//! they work the same on this machine and over SSH): is a daemon running, is a mount there,
//! who holds a busy mount, how long has a process been running.

use std::path::{Path, PathBuf};
use std::time::Duration;

use moose_inventory::{Command, RoleInstance};
use serde::Serialize;

use crate::engine::host::{HostError, Machine};

/// How long a probe may take before its answer counts as unknown.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether a daemon runs, from its `status` verb.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum Process {
    Running {
        pid: u32,
    },
    Stopped,
    /// The status could not be learned; the reason in words.
    Unknown {
        reason: String,
    },
}

impl Process {
    pub fn pid(&self) -> Option<u32> {
        match self {
            Process::Running { pid } => Some(*pid),
            _ => None,
        }
    }
}

/// `NAME pid: N` (exit 0) or `NAME is not running` (exit 1), as the daemons' `status` prints.
pub fn parse_status(code: Option<i32>, stdout: &[String], message: &str) -> Process {
    let pid = stdout.iter().find_map(|l| {
        l.split_once(" pid: ")
            .and_then(|(_, p)| p.trim().parse().ok())
    });
    match (code, pid) {
        (Some(0), Some(pid)) => Process::Running { pid },
        (Some(1), _) if stdout.iter().any(|l| l.ends_with("is not running")) => Process::Stopped,
        _ => Process::Unknown {
            reason: message.to_string(),
        },
    }
}

/// Runs the instance's `status` command.
pub async fn daemon_status(host: &dyn Machine, inst: &RoleInstance) -> Process {
    let Some(cmd) = &inst.status else {
        return Process::Unknown {
            reason: "no status command".into(),
        };
    };
    match tokio::time::timeout(PROBE_TIMEOUT, host.run(cmd, None)).await {
        Err(_) => Process::Unknown {
            reason: format!("status did not answer within {} s", PROBE_TIMEOUT.as_secs()),
        },
        Ok(Err(e)) => Process::Unknown {
            reason: e.to_string(),
        },
        Ok(Ok(f)) => parse_status(f.code, &f.stdout, &f.message()),
    }
}

/// What a client host says about one mount point.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct MountProbe {
    /// `/dev/fuse` is a character device.
    pub fuse_device: bool,
    /// Path of `fusermount3`, if installed.
    pub fusermount3: Option<String>,
    /// The probing user is root.
    pub root: bool,
    /// The mount point is in `/proc/mounts`.
    pub mounted: bool,
    /// `statvfs` of the mount point: total and available bytes, or why it failed.
    pub statfs: Option<Result<(u64, u64), String>>,
    /// `moose-mount` processes serving this mount point.
    pub pids: Vec<u32>,
}

impl MountProbe {
    /// Why this host cannot mount at all, with the fix; `None` when it can.
    pub fn cannot_mount(&self, host: &str) -> Option<String> {
        if !self.fuse_device {
            return Some(format!(
                "FUSE is not available on {host}: /dev/fuse is missing; fix: modprobe fuse \
                 (in a container, give it /dev/fuse)"
            ));
        }
        if !self.root && self.fusermount3.is_none() {
            return Some(format!(
                "fusermount3 is missing on {host} and mounts there are not made as root; fix: \
                 apt-get install fuse3"
            ));
        }
        None
    }

    /// A remark that does not stop mounting, with the fix.
    pub fn remark(&self, host: &str) -> Option<String> {
        if let Some(reason) = self.cannot_mount(host) {
            return Some(reason);
        }
        if self.fusermount3.is_none() {
            return Some(
                "fusermount3 missing: unmount uses umount, no auto-unmount; fix: apt-get install fuse3"
                    .to_string(),
            );
        }
        None
    }

    /// Mounted and `statvfs` answers.
    pub fn healthy(&self) -> bool {
        self.mounted && matches!(self.statfs, Some(Ok(_)))
    }
}

/// Prints facts about a mount point, one `key value` per line. $1: the mount point.
const MOUNT_SCRIPT: &str = r#"m=$1
if [ -c /dev/fuse ]; then echo "fuse yes"; else echo "fuse no"; fi
if f=$(command -v fusermount3 2>/dev/null); then echo "fusermount3 $f"; fi
echo "uid $(id -u)"
c=$(readlink -f -- "$m" 2>/dev/null) || c=$m
[ -n "$c" ] || c=$m
if M=$c awk '{ p = $2; gsub(/\\040/, " ", p); gsub(/\\011/, "\t", p); gsub(/\\012/, "\n", p); gsub(/\\134/, "\\", p); if (p == ENVIRON["M"]) found = 1 } END { exit !found }' /proc/mounts; then
  echo "mounted yes"
  if out=$(timeout 5 stat -f -c '%b %a %S' -- "$m" 2>&1); then echo "statfs ok $out"; else echo "statfs error $out" | tr '\n' ' '; echo; fi
else
  echo "mounted no"
fi
for d in /proc/[0-9]*; do
  read -r comm 2>/dev/null < "$d/comm" || continue
  [ "$comm" = moose-mount ] || continue
  a=$(tr '\0' '\n' 2>/dev/null < "$d/cmdline") || continue
  if printf '%s\n' "$a" | grep -qxF -e "$m" -e "$c"; then echo "pid ${d#/proc/}"; fi
done
"#;

fn sh(script: &str, args: &[&str]) -> Command {
    let mut a = vec!["-c".to_string(), script.to_string(), "sh".to_string()];
    a.extend(args.iter().map(|s| s.to_string()));
    Command {
        program: PathBuf::from("sh"),
        args: a,
    }
}

/// Parses the output of [`MOUNT_SCRIPT`].
pub fn parse_mount_probe(lines: &[String]) -> MountProbe {
    let mut p = MountProbe::default();
    for l in lines {
        let (key, value) = l.split_once(' ').unwrap_or((l.as_str(), ""));
        match key {
            "fuse" => p.fuse_device = value == "yes",
            "fusermount3" => p.fusermount3 = Some(value.to_string()),
            "uid" => p.root = value == "0",
            "mounted" => p.mounted = value == "yes",
            "statfs" => {
                p.statfs = Some(match value.split_once(' ') {
                    Some(("ok", nums)) => {
                        let n: Vec<u64> = nums
                            .split_whitespace()
                            .filter_map(|x| x.parse().ok())
                            .collect();
                        match n[..] {
                            [blocks, avail, size] => Ok((blocks * size, avail * size)),
                            _ => Err(format!("unreadable statfs answer: {nums}")),
                        }
                    }
                    Some((_, why)) => Err(why.trim().to_string()),
                    None => Err(value.to_string()),
                })
            }
            "pid" => p.pids.extend(value.parse::<u32>().ok()),
            _ => {}
        }
    }
    p
}

/// Probes a mount point on its host.
pub async fn mount(host: &dyn Machine, mount_point: &Path) -> Result<MountProbe, String> {
    let m = mount_point.to_string_lossy();
    let cmd = sh(MOUNT_SCRIPT, &[&m]);
    match tokio::time::timeout(PROBE_TIMEOUT, host.run(&cmd, None)).await {
        Err(_) => Err(format!(
            "{}: probing {m} did not finish within {} s",
            host.name(),
            PROBE_TIMEOUT.as_secs()
        )),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(f)) if f.success() => Ok(parse_mount_probe(&f.stdout)),
        Ok(Ok(f)) => Err(format!(
            "{}: probing {m} failed: {}",
            host.name(),
            f.message()
        )),
    }
}

/// A process that keeps a mount point busy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Holder {
    pub pid: u32,
    pub command: String,
    /// What points into the mount: `cwd`, `root`, `fd 3 /mnt/x/file`.
    pub uses: String,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pid {} ({}: {})", self.pid, self.command, self.uses)
    }
}

/// Lists processes whose working folder, root or open files are under $1.
const HOLDERS_SCRIPT: &str = r#"m=$1
for d in /proc/[0-9]*; do
  w=""
  t=$(readlink "$d/cwd" 2>/dev/null) && case $t in "$m"|"$m"/*) w="cwd" ;; esac
  t=$(readlink "$d/root" 2>/dev/null) && case $t in "$m"|"$m"/*) w="${w:+$w, }root" ;; esac
  for f in "$d"/fd/*; do
    t=$(readlink "$f" 2>/dev/null) || continue
    case $t in "$m"|"$m"/*) w="${w:+$w, }fd ${f##*/} $t" ;; esac
  done
  if [ -n "$w" ]; then printf '%s\t%s\t%s\n' "${d#/proc/}" "$(cat "$d/comm" 2>/dev/null)" "$w"; fi
done
"#;

pub fn parse_holders(lines: &[String]) -> Vec<Holder> {
    lines
        .iter()
        .filter_map(|l| {
            let mut it = l.splitn(3, '\t');
            Some(Holder {
                pid: it.next()?.parse().ok()?,
                command: it.next()?.to_string(),
                uses: it.next()?.to_string(),
            })
        })
        .collect()
}

/// The processes holding `mount_point` on its host (scans `/proc/*/fd`, `cwd` and `root`).
pub async fn holders(host: &dyn Machine, mount_point: &Path) -> Result<Vec<Holder>, HostError> {
    let cmd = sh(HOLDERS_SCRIPT, &[&mount_point.to_string_lossy()]);
    let f = host.run(&cmd, None).await?;
    Ok(parse_holders(&f.stdout))
}

/// Prints `PID UPTIME_SECONDS_OF_SYSTEM START_TICKS TICKS_PER_SECOND` for each pid given.
const UPTIME_SCRIPT: &str = r#"read -r up _ < /proc/uptime
hz=$(getconf CLK_TCK 2>/dev/null) || hz=100
for p in "$@"; do
  read -r line 2>/dev/null < "/proc/$p/stat" || continue
  set -- ${line##*) }
  [ $# -ge 20 ] && echo "$p $up ${20} $hz"
done
"#;

/// How long each process has been running, from its start time in `/proc/PID/stat`.
pub fn parse_uptimes(lines: &[String]) -> Vec<(u32, Duration)> {
    lines
        .iter()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let [pid, up, start, hz] = f[..] else {
                return None;
            };
            let up: f64 = up.parse().ok()?;
            let start: f64 = start.parse().ok()?;
            let hz: f64 = hz.parse().ok().filter(|h: &f64| *h > 0.0)?;
            let secs = (up - start / hz).max(0.0);
            Some((pid.parse().ok()?, Duration::from_secs(secs as u64)))
        })
        .collect()
}

/// Uptimes of `pids` on `host` (missing processes are left out).
pub async fn uptimes(host: &dyn Machine, pids: &[u32]) -> Vec<(u32, Duration)> {
    if pids.is_empty() {
        return Vec::new();
    }
    let args: Vec<String> = pids.iter().map(u32::to_string).collect();
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let cmd = sh(UPTIME_SCRIPT, &refs);
    match tokio::time::timeout(PROBE_TIMEOUT, host.run(&cmd, None)).await {
        Ok(Ok(f)) => parse_uptimes(&f.stdout),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::host::Local;

    fn lines(s: &str) -> Vec<String> {
        s.lines().map(str::to_string).collect()
    }

    #[test]
    fn status_output_of_the_daemons() {
        assert_eq!(
            parse_status(Some(0), &lines("moose-master pid: 4242"), ""),
            Process::Running { pid: 4242 }
        );
        assert_eq!(
            parse_status(Some(1), &lines("moose-master is not running"), ""),
            Process::Stopped
        );
        assert_eq!(
            parse_status(Some(2), &[], "moose-master: cannot read config"),
            Process::Unknown {
                reason: "moose-master: cannot read config".into()
            }
        );
    }

    #[test]
    fn mount_probe_lines() {
        let p = parse_mount_probe(&lines(
            "fuse yes\nfusermount3 /usr/bin/fusermount3\nuid 0\nmounted yes\nstatfs ok 100 40 4096\npid 12\npid 13",
        ));
        assert!(p.fuse_device && p.root && p.mounted && p.healthy());
        assert_eq!(p.statfs, Some(Ok((409600, 163840))));
        assert_eq!(p.pids, [12, 13]);
        assert_eq!(p.remark("h"), None);
        let p = parse_mount_probe(&lines(
            "fuse no\nuid 1000\nmounted yes\nstatfs error stat: Transport endpoint is not connected",
        ));
        assert!(!p.healthy());
        assert_eq!(
            p.statfs,
            Some(Err("stat: Transport endpoint is not connected".into()))
        );
        assert!(p
            .cannot_mount("h")
            .unwrap()
            .contains("/dev/fuse is missing"));
        let p = parse_mount_probe(&lines("fuse yes\nuid 0\nmounted no"));
        assert_eq!(p.cannot_mount("h"), None);
        assert!(p.remark("h").unwrap().contains("apt-get install fuse3"));
    }

    #[test]
    fn holders_and_uptimes_parse() {
        let h = parse_holders(&lines("12\tbash\tcwd\n13\tvim\tfd 4 /mnt/x/f\nbad line"));
        assert_eq!(h.len(), 2);
        assert_eq!(h[1].to_string(), "pid 13 (vim: fd 4 /mnt/x/f)");
        let u = parse_uptimes(&lines("12 1000.5 50000 100\nnonsense"));
        assert_eq!(u, [(12, Duration::from_secs(500))]);
    }

    #[tokio::test]
    async fn scripts_run_on_this_machine() {
        let host = Local::new("here", "127.0.0.1", PathBuf::from("/nonexistent"));
        let dir = tempfile::tempdir().unwrap();
        let p = mount(&host, dir.path()).await.unwrap();
        assert!(!p.mounted);
        assert!(p.pids.is_empty());
        // This test process holds the folder open and a shell sits in it.
        let f = std::fs::File::create(dir.path().join("held")).unwrap();
        let found = holders(&host, dir.path()).await.unwrap();
        let me = std::process::id();
        assert!(
            found.iter().any(|h| h.pid == me && h.uses.contains("held")),
            "{found:?}"
        );
        drop(f);
        let up = uptimes(&host, &[me]).await;
        assert_eq!(up.len(), 1);
        assert!(up[0].1 < Duration::from_secs(3600));
    }
}
