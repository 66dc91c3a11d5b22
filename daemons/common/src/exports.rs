//! The master's exports: [`moose_formats::admission`] decides which line admits a client; here
//! the user and group names of `maproot`/`mapall` are resolved on this (the master's) host.

use std::path::Path;

pub use moose_formats::admission::*;
use moose_formats::exports::IdSpec;

/// Resolves `USER[:GROUP]` on this host (a name's group defaults to its primary group).
pub fn resolve_ids(ids: &IdSpec) -> Result<(u32, u32), String> {
    let (u, g) = (ids.user.as_str(), ids.group.as_deref());
    let (uid, primary_gid) = if let Ok(n) = u.parse::<u32>() {
        (n, n)
    } else {
        let user = nix::unistd::User::from_name(u)
            .ok()
            .flatten()
            .ok_or(format!("no user '{u}' on the master host"))?;
        (user.uid.as_raw(), user.gid.as_raw())
    };
    let gid = match g {
        None => primary_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => nix::unistd::Group::from_name(g)
                .ok()
                .flatten()
                .ok_or(format!("no group '{g}' on the master host"))?
                .gid
                .as_raw(),
        },
    };
    Ok((uid, gid))
}

/// Reads the master's exports file, names resolved on this host.
pub fn load(path: &Path) -> Result<Exports, ExportsError> {
    Exports::load(path, &resolve_ids)
}

/// Parses exports text as the master on this host would read it.
pub fn parse(path: &Path, text: &str) -> Result<Exports, ExportsError> {
    Exports::parse(path, text, &resolve_ids)
}

/// Reads an option list (`rw,alldirs,maproot=0`) with user and group names resolved here.
pub fn parse_options(text: &str) -> Result<ExportOptions, String> {
    let options = moose_formats::exports::parse_options(text).map_err(|e| e.to_string())?;
    resolve_options(&options, &resolve_ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_on_this_host() {
        let o = parse_options("rw,maproot=root,mapall=0:0").unwrap();
        assert_eq!(o.maproot, Some((0, 0)));
        let e = parse_options("maproot=no-such-user-here").unwrap_err();
        assert!(
            e.contains("no user 'no-such-user-here' on the master host"),
            "{e}"
        );
    }
}
