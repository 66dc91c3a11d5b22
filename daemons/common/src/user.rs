//! The run-as user: resolving WORKING_USER/WORKING_GROUP, dropping privileges, and telling the
//! admin exactly which `chown` fixes a folder the daemon cannot write.

use std::ffi::CString;
use std::path::Path;

use nix::unistd::{Gid, Group, Uid, User};

/// The user and group a daemon runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub user: String,
    pub group: String,
    pub uid: u32,
    pub gid: u32,
}

/// Resolves `WORKING_USER` / `WORKING_GROUP` (`#123` means a numeric id; an empty group
/// means the user's primary group).
pub fn resolve(user: &str, group: &str) -> Result<RunAs, String> {
    let u = if let Some(num) = user.strip_prefix('#') {
        let uid: u32 = num
            .parse()
            .map_err(|_| format!("WORKING_USER = {user}: '#' must be followed by a number"))?;
        User::from_uid(Uid::from_raw(uid))
            .ok()
            .flatten()
            .ok_or_else(|| format!("WORKING_USER = {user}: no user has uid {uid}"))?
    } else {
        User::from_name(user).ok().flatten().ok_or_else(|| {
            format!(
                "WORKING_USER = {user}: no such user on this host; create it \
                 (useradd --system --no-create-home {user}) or set WORKING_USER to an existing user"
            )
        })?
    };
    let (gname, gid) = if group.is_empty() {
        let g = Group::from_gid(u.gid).ok().flatten();
        (
            g.map(|g| g.name).unwrap_or_else(|| u.gid.to_string()),
            u.gid.as_raw(),
        )
    } else if let Some(num) = group.strip_prefix('#') {
        let gid: u32 = num
            .parse()
            .map_err(|_| format!("WORKING_GROUP = {group}: '#' must be followed by a number"))?;
        (group.to_string(), gid)
    } else {
        let g = Group::from_name(group)
            .ok()
            .flatten()
            .ok_or_else(|| format!("WORKING_GROUP = {group}: no such group on this host"))?;
        (g.name, g.gid.as_raw())
    };
    Ok(RunAs {
        user: u.name,
        group: gname,
        uid: u.uid.as_raw(),
        gid,
    })
}

/// Switches to `who` when running as root (clearing supplementary groups). As another user it
/// only warns when that user differs, because it cannot switch.
pub fn drop_privileges(who: &RunAs) -> Result<Option<String>, String> {
    let me = Uid::current();
    if !me.is_root() {
        if me.as_raw() != who.uid {
            return Ok(Some(format!(
                "not started as root, so running as uid {} instead of WORKING_USER {}",
                me.as_raw(),
                who.user
            )));
        }
        return Ok(None);
    }
    if who.uid == 0 {
        return Ok(None);
    }
    let cname = CString::new(who.user.clone()).map_err(|e| e.to_string())?;
    nix::unistd::initgroups(&cname, Gid::from_raw(who.gid))
        .or_else(|_| nix::unistd::setgroups(&[Gid::from_raw(who.gid)]))
        .map_err(|e| format!("cannot set groups for {}: {e}", who.user))?;
    nix::unistd::setgid(Gid::from_raw(who.gid))
        .map_err(|e| format!("cannot switch to group {}: {e}", who.group))?;
    nix::unistd::setuid(Uid::from_raw(who.uid))
        .map_err(|e| format!("cannot switch to user {}: {e}", who.user))?;
    Ok(None)
}

/// Checks that the current process can create files in `dir`; otherwise says who owns it and
/// the exact command that fixes it. `what` names the folder ("DATA_PATH", "hdd folder").
pub fn check_writable(dir: &Path, what: &str, who: &RunAs) -> Result<(), String> {
    let meta = std::fs::metadata(dir).map_err(|e| match unsearchable_parent(dir) {
        // The folder may well exist: a folder above it keeps this user out.
        Some(parent) => format!(
            "{what} {} cannot be used: {e}; {}",
            dir.display(),
            unsearchable_hint(&parent, &who.user)
        ),
        None => format!(
            "{what} {} cannot be used: {e}; create it with: install -d -o {} -g {} {}",
            dir.display(),
            who.user,
            who.group,
            dir.display()
        ),
    })?;
    if !meta.is_dir() {
        return Err(format!("{what} {} is not a folder", dir.display()));
    }
    let cpath = CString::new(dir.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
    // SAFETY: valid NUL-terminated path.
    let ok = unsafe { libc::access(cpath.as_ptr(), libc::W_OK | libc::X_OK) } == 0;
    if ok {
        return Ok(());
    }
    use std::os::unix::fs::MetadataExt;
    let owner = User::from_uid(Uid::from_raw(meta.uid()))
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| meta.uid().to_string());
    let group = Group::from_gid(Gid::from_raw(meta.gid()))
        .ok()
        .flatten()
        .map(|g| g.name)
        .unwrap_or_else(|| meta.gid().to_string());
    Err(format!(
        "{what} {} is owned by {owner}:{group} (mode {:o}) and is not writable by user {}; \
         fix: chown -R {}:{} {}",
        dir.display(),
        meta.mode() & 0o7777,
        who.user,
        who.user,
        who.group,
        dir.display()
    ))
}

/// The first folder above `path` (from `/` down) this process cannot search.
pub fn unsearchable_parent(path: &Path) -> Option<std::path::PathBuf> {
    let mut above: Vec<&Path> = path.ancestors().skip(1).collect();
    above.reverse();
    above
        .into_iter()
        .find(|p| {
            let Ok(c) = CString::new(p.as_os_str().as_encoded_bytes()) else {
                return false;
            };
            // SAFETY: valid NUL-terminated path.
            !p.as_os_str().is_empty() && unsafe { libc::access(c.as_ptr(), libc::X_OK) } != 0
        })
        .map(Path::to_path_buf)
}

fn owner_and_mode(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    let user = User::from_uid(Uid::from_raw(m.uid()))
        .ok()
        .flatten()
        .map_or_else(|| m.uid().to_string(), |u| u.name);
    let group = Group::from_gid(Gid::from_raw(m.gid()))
        .ok()
        .flatten()
        .map_or_else(|| m.gid().to_string(), |g| g.name);
    Some(format!("{user}:{group}, mode {:o}", m.mode() & 0o7777))
}

fn unsearchable_hint(parent: &Path, user: &str) -> String {
    format!(
        "{} ({}) is not searchable by user {user}; fix: chmod o+x {}",
        parent.display(),
        owner_and_mode(parent).unwrap_or_else(|| "owner unknown".into()),
        parent.display()
    )
}

/// For a permission error on `path`: who owns it, who this process runs as, and the exact
/// command that fixes it (`chown -R` of `dir`, or `chmod o+x` of a folder above).
pub fn access_hint(path: &Path, dir: &Path) -> String {
    let uid = nix::unistd::geteuid();
    let gid = nix::unistd::getegid();
    let me = User::from_uid(uid)
        .ok()
        .flatten()
        .map_or_else(|| uid.to_string(), |u| u.name);
    let group = Group::from_gid(gid)
        .ok()
        .flatten()
        .map_or_else(|| gid.to_string(), |g| g.name);
    if let Some(parent) = unsearchable_parent(path) {
        return unsearchable_hint(&parent, &me);
    }
    let owned = owner_and_mode(path)
        .map(|o| format!("it is owned by {o} and "))
        .unwrap_or_default();
    format!(
        "{owned}this process runs as {me}:{group}; fix: chown -R {me}:{group} {}",
        dir.display()
    )
}
