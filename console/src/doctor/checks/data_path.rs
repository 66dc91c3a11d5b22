//! **data-path** and **lockfile**: the run-as user and group exist; every DATA_PATH and disk
//! folder, and each folder above it, is searchable and writable as that user (tested as that
//! user with `setpriv`) and holds no file of another owner (left by a run as root); each
//! daemon's lockfile can be opened by the user and is locked by nobody or by its daemon.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use moose_inventory::{Role, RoleInstance};

use crate::doctor::finding::{shell_word, Finding, FixAction, Status};
use crate::doctor::runner::{par_map, script, Ctx};
use crate::engine::host::BoxFuture;

pub const CHECK: &str = "data-path";
pub const LOCKFILE: &str = "lockfile";

/// `$1` user, `$2` group ("" = the user's primary group), then `d:FOLDER` and `l:LOCKFILE`
/// items. Prints one tab-separated line per fact.
const SCRIPT: &str = r#"u=$1; g=$2; shift 2
if ! getent passwd "$u" >/dev/null 2>&1; then echo nouser; exit 0; fi
if [ -z "$g" ]; then g=$(id -gn "$u"); elif ! getent group "$g" >/dev/null 2>&1; then printf 'nogroup\t%s\n' "$g"; exit 0; fi
printf 'group\t%s\n' "$g"
uid=$(id -u "$u")
as() { if [ "$(id -u)" = "$uid" ]; then "$@"; else setpriv --reuid="$uid" --regid="$g" --init-groups "$@"; fi; }
own() { stat -c '%U:%G %a' -- "$1" 2>/dev/null; }
for item; do
  k=${item%%:*}; p=${item#*:}
  case $k in
  d)
    e=$p; while [ ! -e "$e" ]; do e=$(dirname -- "$e"); done
    a=$e; bad=
    while :; do
      if [ -d "$a" ] && ! as test -x "$a"; then printf 'unsearchable\t%s\t%s\t%s\n' "$p" "$a" "$(own "$a")"; bad=1; fi
      [ "$a" = / ] && break; a=$(dirname -- "$a")
    done
    if [ "$e" != "$p" ]; then printf 'missing\t%s\t%s\t%s\n' "$p" "$e" "$(own "$e")"
    elif [ -n "$bad" ]; then :
    elif ! as test -w "$p"; then printf 'unwritable\t%s\t%s\n' "$p" "$(own "$p")"
    else
      f=
      [ "$uid" != 0 ] && f=$(find "$p" -xdev ! -user "$u" -print -quit 2>/dev/null)
      if [ -n "$f" ]; then printf 'foreign\t%s\t%s\t%s\n' "$p" "$f" "$(own "$f")"
      else printf 'fine\t%s\t%s\n' "$p" "$(own "$p")"; fi
    fi ;;
  l)
    if [ ! -e "$p" ]; then [ -d "${p%/*}" ] && printf 'nolock\t%s\n' "$p"; continue; fi
    if as sh -c 'exec 3<>"$1"' sh "$p" 2>/dev/null; then o=open; else o=denied; fi
    i=$(stat -c %i -- "$p")
    h=$(awk -v i="$i" '$2 != "->" { n = split($6, f, ":"); if (f[n] == i) { print $5; exit } }' /proc/locks)
    c=; [ -n "$h" ] && c=$(cat "/proc/$h/comm" 2>/dev/null)
    printf 'lock\t%s\t%s\t%s\t%s\t%s\n' "$p" "$o" "$(own "$p")" "$h" "$c" ;;
  esac
done
"#;

/// One fact the script printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fact {
    NoUser,
    NoGroup(String),
    Group(String),
    /// Folder, the folder above (or itself) that cannot be searched, its owner and mode.
    Unsearchable {
        dir: PathBuf,
        at: PathBuf,
        owner: String,
    },
    /// Folder, the nearest existing folder above it, that one's owner and mode.
    Missing {
        dir: PathBuf,
        nearest: PathBuf,
        owner: String,
    },
    Unwritable {
        dir: PathBuf,
        owner: String,
    },
    /// A file in the folder owned by someone else.
    Foreign {
        dir: PathBuf,
        file: PathBuf,
        owner: String,
    },
    Fine {
        dir: PathBuf,
        owner: String,
    },
    NoLock(PathBuf),
    Lock {
        path: PathBuf,
        opens: bool,
        owner: String,
        holder: Option<(u32, String)>,
    },
}

pub fn parse(lines: &[String]) -> Vec<Fact> {
    lines
        .iter()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let p = |i: usize| PathBuf::from(f.get(i).copied().unwrap_or(""));
            let s = |i: usize| f.get(i).copied().unwrap_or("").to_string();
            Some(match f[0] {
                "nouser" => Fact::NoUser,
                "nogroup" => Fact::NoGroup(s(1)),
                "group" => Fact::Group(s(1)),
                "unsearchable" => Fact::Unsearchable {
                    dir: p(1),
                    at: p(2),
                    owner: s(3),
                },
                "missing" => Fact::Missing {
                    dir: p(1),
                    nearest: p(2),
                    owner: s(3),
                },
                "unwritable" => Fact::Unwritable {
                    dir: p(1),
                    owner: s(2),
                },
                "foreign" => Fact::Foreign {
                    dir: p(1),
                    file: p(2),
                    owner: s(3),
                },
                "fine" => Fact::Fine {
                    dir: p(1),
                    owner: s(2),
                },
                "nolock" => Fact::NoLock(p(1)),
                "lock" => Fact::Lock {
                    path: p(1),
                    opens: s(2) == "open",
                    owner: s(3),
                    holder: s(4).parse().ok().map(|pid| (pid, s(5))),
                },
                _ => return None,
            })
        })
        .collect()
}

/// What one host's daemons need: the folders and the lockfiles with their programs.
#[derive(Debug, Clone, Default)]
pub struct Needs {
    pub dirs: Vec<PathBuf>,
    /// Lockfile → the program that takes it.
    pub locks: BTreeMap<PathBuf, &'static str>,
}

impl Needs {
    pub fn of(instances: &[RoleInstance]) -> Needs {
        let mut n = Needs::default();
        for i in instances.iter().filter(|i| i.role != Role::Client) {
            if let Some(d) = &i.data_dir {
                n.dirs.push(d.clone());
                n.locks.insert(
                    d.join(format!(".{}.lock", i.role.program())),
                    i.role.program(),
                );
            }
            n.dirs.extend(i.disks.iter().cloned());
        }
        n.dirs.sort();
        n.dirs.dedup();
        n
    }

    fn args(&self, user: &str, group: &str) -> Vec<String> {
        let mut a = vec![user.to_string(), group.to_string()];
        a.extend(self.dirs.iter().map(|d| format!("d:{}", d.display())));
        a.extend(self.locks.keys().map(|l| format!("l:{}", l.display())));
        a
    }
}

/// Judges one host's facts.
pub fn judge(host: &str, user: &str, needs: &Needs, facts: &[Fact]) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut group = String::new();
    let owner = |g: &str| format!("{user}:{g}");
    for fact in facts {
        match fact {
            Fact::NoUser => out.push(
                Finding::new(CHECK, host, Status::Error, format!("the run-as user {user} does not exist on {host}"))
                    .evidence(format!("getent passwd {user}: no answer"))
                    .fix(format!("useradd --system --no-create-home {}", shell_word(user))),
            ),
            Fact::NoGroup(g) => out.push(
                Finding::new(CHECK, host, Status::Error, format!("the run-as group {g} does not exist on {host}"))
                    .evidence(format!("getent group {g}: no answer"))
                    .fix(format!("groupadd --system {}", shell_word(g))),
            ),
            Fact::Group(g) => group = g.clone(),
            Fact::Unsearchable { dir, at, owner: o } => out.push(
                Finding::new(
                    CHECK,
                    host,
                    Status::Error,
                    format!("{user} cannot reach {}: {} is not searchable for it", dir.display(), at.display()),
                )
                .evidence(format!("{}: owner and mode {o}", at.display()))
                .fix(format!("chmod o+x {}", shell_word(&at.to_string_lossy()))),
            ),
            Fact::Missing { dir, nearest, owner: o } => out.push(
                Finding::new(
                    CHECK,
                    host,
                    Status::Info,
                    format!("{} does not exist yet; deploy and start create it", dir.display()),
                )
                .evidence(format!("nearest existing folder {} ({o})", nearest.display())),
            ),
            Fact::Unwritable { dir, owner: o } => out.push(
                Finding::new(CHECK, host, Status::Error, format!("{user} cannot write {}", dir.display()))
                    .evidence(format!("{}: owner and mode {o}, tested as {user}", dir.display()))
                    .safe(FixAction::Chown { dir: dir.clone(), owner: owner(&group) }),
            ),
            Fact::Foreign { dir, file, owner: o } => out.push(
                Finding::new(
                    CHECK,
                    host,
                    Status::Error,
                    format!("{} holds files of another owner (left by a run as root?); {user} cannot change them", dir.display()),
                )
                .evidence(format!("{}: owner {o}", file.display()))
                .safe(FixAction::Chown { dir: dir.clone(), owner: owner(&group) }),
            ),
            Fact::Fine { dir, owner: o } => out.push(
                Finding::new(CHECK, host, Status::Ok, format!("{} is writable by {user}", dir.display()))
                    .evidence(format!("{}: owner and mode {o}, searchable from /, tested as {user}", dir.display())),
            ),
            Fact::NoLock(p) => out.push(
                Finding::new(LOCKFILE, host, Status::Ok, format!("no lockfile {} yet", p.display())),
            ),
            Fact::Lock { path, opens, owner: o, holder } => {
                let program = needs.locks.get(path).copied().unwrap_or("");
                let dir = path.parent().unwrap_or(Path::new("/")).to_path_buf();
                out.push(if !opens {
                    Finding::new(
                        LOCKFILE,
                        host,
                        Status::Error,
                        format!(
                            "{user} cannot open the lockfile {}: {program} fails with \"can't create lockfile … EACCES\"",
                            path.display()
                        ),
                    )
                    .evidence(format!("{}: owner and mode {o}", path.display()))
                    .safe(FixAction::Chown { dir, owner: owner(&group) })
                } else {
                    match holder {
                        // /proc/PID/comm keeps 15 characters.
                        Some((pid, comm)) if !program.starts_with(comm.as_str()) || comm.is_empty() => {
                            Finding::new(
                                LOCKFILE,
                                host,
                                Status::Error,
                                format!("{} is locked by another program: pid {pid} ({comm}); {program} cannot start", path.display()),
                            )
                            .evidence(format!("/proc/locks: pid {pid} holds {}", path.display()))
                        }
                        Some((pid, _)) => Finding::new(LOCKFILE, host, Status::Ok, format!("{} is held by {program} (pid {pid})", path.display())),
                        None => Finding::new(LOCKFILE, host, Status::Ok, format!("{} can be opened by {user}; nobody holds it", path.display()))
                            .evidence(format!("{}: owner and mode {o}", path.display())),
                    }
                });
            }
        }
    }
    out
}

pub fn check(ctx: Arc<Ctx>) -> BoxFuture<'static, Vec<Finding>> {
    Box::pin(async move {
        let cluster = &ctx.fleet.model.inventory.cluster;
        let (user, group) = (cluster.user.clone(), cluster.group.clone());
        let hosts: Vec<(String, Needs)> = ctx
            .hosts()
            .into_iter()
            .map(|h| {
                let mine: Vec<RoleInstance> = ctx
                    .fleet
                    .model
                    .instances
                    .iter()
                    .filter(|i| i.host == h)
                    .cloned()
                    .collect();
                (h, Needs::of(&mine))
            })
            .filter(|(_, n)| !n.dirs.is_empty())
            .collect();
        let c = ctx.clone();
        par_map(hosts, move |(h, needs)| {
            let (ctx, user, group) = (c.clone(), user.clone(), group.clone());
            async move {
                if let Some(why) = ctx.silent(&h) {
                    return vec![Finding::skipped(CHECK, &h, &why)];
                }
                let m = ctx.machine(&h);
                match script(
                    m.as_ref(),
                    "checking the data folders",
                    SCRIPT,
                    &needs.args(&user, &group),
                )
                .await
                {
                    Ok(lines) => judge(&h, &user, &needs, &parse(&lines)),
                    Err(e) => vec![Finding::new(
                        CHECK,
                        &h,
                        Status::Error,
                        "cannot check the data folders",
                    )
                    .evidence(e)],
                }
            }
        })
        .await
        .into_iter()
        .flatten()
        .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(s: &str) -> Vec<String> {
        s.lines().map(str::to_string).collect()
    }

    #[test]
    fn facts_become_findings_with_chown_fixes() {
        let mut needs = Needs::default();
        needs
            .locks
            .insert(PathBuf::from("/d/m/.moose-master.lock"), "moose-master");
        let facts = parse(&lines(
            "group\tmfs\nunwritable\t/d/m\troot:root 755\nfine\t/d/c\tmfs:mfs 755\nlock\t/d/m/.moose-master.lock\tdenied\troot:root 644\t\t\nlock\t/d/x/.moose-master.lock\topen\tmfs:mfs 644\t77\tbash\nbogus",
        ));
        assert_eq!(facts.len(), 5);
        let f = judge("h", "mfs", &needs, &facts);
        assert_eq!(f[0].status, Status::Error);
        assert_eq!(f[0].fix.as_deref(), Some("chown -R mfs:mfs /d/m"));
        assert!(f[0].safe_fix);
        assert_eq!(f[1].status, Status::Ok);
        assert_eq!(f[2].check, LOCKFILE);
        assert!(f[2].summary.contains("EACCES"), "{}", f[2].summary);
        assert_eq!(f[2].fix.as_deref(), Some("chown -R mfs:mfs /d/m"));
        assert!(
            f[3].summary.contains("another program: pid 77 (bash)"),
            "{}",
            f[3].summary
        );
    }

    #[test]
    fn own_daemon_holding_its_lock_is_fine() {
        let mut needs = Needs::default();
        needs.locks.insert(
            PathBuf::from("/d/.moose-chunkserver.lock"),
            "moose-chunkserver",
        );
        // comm is cut to 15 characters.
        let f = judge(
            "h",
            "root",
            &needs,
            &parse(&lines(
                "lock\t/d/.moose-chunkserver.lock\topen\troot:root 644\t12\tmoose-chunkserv",
            )),
        );
        assert_eq!(f[0].status, Status::Ok, "{f:?}");
    }

    /// Runs the script as root (the tests' user) judging for `nobody`.
    #[tokio::test]
    async fn script_judges_real_folders_as_another_user() {
        use crate::engine::host::Local;
        use std::os::unix::fs::PermissionsExt;
        assert!(nix::unistd::geteuid().is_root(), "run the tests as root");
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join(".moose-master.lock"), "").unwrap();
        let host = Local::new("here", "127.0.0.1", PathBuf::from("/nonexistent"));
        let mut needs = Needs {
            dirs: vec![data.clone(), dir.path().join("later")],
            ..Needs::default()
        };
        needs
            .locks
            .insert(data.join(".moose-master.lock"), "moose-master");
        let facts = || async {
            let lines = script(&host, "test", SCRIPT, &needs.args("nobody", ""))
                .await
                .unwrap();
            parse(&lines)
        };
        let mode = |m: u32| {
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(m)).unwrap()
        };
        // Root's folder with mode 700: nobody cannot even reach what is inside.
        mode(0o700);
        let f = facts().await;
        assert!(
            f.iter()
                .any(|x| matches!(x, Fact::Unsearchable { at, .. } if at == dir.path())),
            "{f:?}"
        );
        // Reachable, but root's: not writable, the lockfile cannot be opened.
        mode(0o755);
        let f = facts().await;
        assert!(
            f.iter()
                .any(|x| matches!(x, Fact::Unwritable { dir, .. } if *dir == data)),
            "{f:?}"
        );
        assert!(f.iter().any(|x| matches!(x, Fact::Missing { .. })), "{f:?}");
        assert!(
            f.iter()
                .any(|x| matches!(x, Fact::Lock { opens: false, .. })),
            "{f:?}"
        );
    }
}
