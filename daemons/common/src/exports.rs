//! The exports file (`ADDRESS PATH [OPTIONS]`, MooseFS syntax) and the decision which line, if
//! any, admits a client.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use md5::{Digest, Md5};
pub use moose_formats::exports::{admits_path, normalize_path, parse_address, ADDRESS_FORMS};
use moose_formats::exports::{ExportOption, ExportsFile, IdSpec};

#[derive(Debug, thiserror::Error)]
pub enum ExportsError {
    #[error(transparent)]
    File(#[from] moose_formats::exports::ExportsError),
    #[error("{}:{line}: {message}", .path.display())]
    Ids {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// Parsed options of one exports line (MooseFS defaults: read-only, root mapped to 999:999).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportOptions {
    pub read_only: bool,
    pub alldirs: bool,
    pub maproot: Option<(u32, u32)>,
    pub mapall: Option<(u32, u32)>,
    pub password: Option<String>,
    pub mingoal: u8,
    pub maxgoal: u8,
    pub ignoregid: bool,
    pub admin: bool,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            read_only: true,
            alldirs: false,
            maproot: Some((999, 999)),
            mapall: None,
            password: None,
            mingoal: 1,
            maxgoal: 9,
            ignoregid: false,
            admin: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportLine {
    pub line: usize,
    pub address: String,
    pub from: u32,
    pub to: u32,
    /// "/" or "/a/b" (normalized); "." is the meta file system (trash).
    pub path: String,
    pub opts: ExportOptions,
}

impl ExportLine {
    pub fn admits_ip(&self, ip: u32) -> bool {
        (self.from..=self.to).contains(&ip)
    }

    pub fn admits_path(&self, subdir: &str) -> bool {
        admits_path(&self.path, self.opts.alldirs, subdir)
    }

    /// MooseFS's preference among matching lines: rw over ro, unrestricted root over
    /// maproot, admin, password-protected, then the longest path.
    fn rank(&self) -> (bool, bool, bool, bool, usize) {
        (
            !self.opts.read_only,
            self.opts.maproot == Some((0, 0)) || self.opts.maproot.is_none(),
            self.opts.admin,
            self.opts.password.is_some(),
            self.path.len(),
        )
    }

    /// A short summary like MooseFS prints on mount.
    pub fn describe(&self) -> String {
        let mut parts = vec![if self.opts.read_only {
            "read-only".to_string()
        } else {
            "read-write".to_string()
        }];
        if self.opts.alldirs {
            parts.push("alldirs".into());
        }
        if self.opts.admin {
            parts.push("admin".into());
        }
        if self.opts.ignoregid {
            parts.push("ignoregid".into());
        }
        match self.opts.maproot {
            Some((0, 0)) | None => parts.push("root not mapped".into()),
            Some((u, g)) => parts.push(format!("root mapped to {u}:{g}")),
        }
        if let Some((u, g)) = self.opts.mapall {
            parts.push(format!("all users mapped to {u}:{g}"));
        }
        if self.opts.mingoal != 1 || self.opts.maxgoal != 9 {
            parts.push(format!("goal {}..{}", self.opts.mingoal, self.opts.maxgoal));
        }
        parts.join(", ")
    }
}

#[derive(Debug, Clone, Default)]
pub struct Exports {
    pub path: PathBuf,
    pub lines: Vec<ExportLine>,
    /// Lines whose path is `.`: they admit meta mounts (`moose-mount -m`) only.
    pub meta_lines: Vec<ExportLine>,
}

/// Resolves `USER[:GROUP]` on this host (a name's group defaults to its primary group).
fn resolve_ids(ids: &IdSpec) -> Result<(u32, u32), String> {
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

/// Reads an option list (`rw,alldirs,maproot=0`) with user and group names resolved.
pub fn parse_options(text: &str) -> Result<ExportOptions, String> {
    let options = moose_formats::exports::parse_options(text).map_err(|e| e.to_string())?;
    resolve_options(&options)
}

fn resolve_options(options: &[ExportOption]) -> Result<ExportOptions, String> {
    let mut o = ExportOptions::default();
    for opt in options {
        match opt {
            ExportOption::Flag("ro" | "readonly") => o.read_only = true,
            ExportOption::Flag("rw" | "readwrite") => o.read_only = false,
            ExportOption::Flag("alldirs") => o.alldirs = true,
            ExportOption::Flag("ignoregid") => o.ignoregid = true,
            ExportOption::Flag("admin") => o.admin = true,
            // dynamicip, canchangequota: accepted, nothing to do.
            ExportOption::Flag(_) => {}
            ExportOption::MapRoot(ids) => o.maproot = Some(resolve_ids(ids)?),
            ExportOption::MapAll(ids) => o.mapall = Some(resolve_ids(ids)?),
            ExportOption::Password(p) => o.password = Some(p.clone()),
            ExportOption::MinGoal(g) => o.mingoal = *g,
            ExportOption::MaxGoal(g) => o.maxgoal = *g,
        }
    }
    Ok(o)
}

impl Exports {
    pub fn load(path: &Path) -> Result<Exports, ExportsError> {
        Exports::resolve(path, ExportsFile::load(path)?)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Exports, ExportsError> {
        Exports::resolve(path, ExportsFile::parse(path, text)?)
    }

    fn resolve(path: &Path, file: ExportsFile) -> Result<Exports, ExportsError> {
        let mut lines = Vec::new();
        let mut meta_lines = Vec::new();
        for l in file.lines {
            let opts = resolve_options(&l.options).map_err(|message| ExportsError::Ids {
                path: path.to_path_buf(),
                line: l.line,
                message,
            })?;
            // The file parser has checked the address.
            let Ok((from, to)) = parse_address(&l.address) else {
                continue;
            };
            let meta = l.path == ".";
            let line = ExportLine {
                line: l.line,
                from,
                to,
                path: if meta {
                    ".".into()
                } else {
                    normalize_path(&l.path)
                },
                address: l.address,
                opts,
            };
            if meta {
                meta_lines.push(line);
            } else {
                lines.push(line);
            }
        }
        Ok(Exports {
            path: path.to_path_buf(),
            lines,
            meta_lines,
        })
    }

    /// Picks the `.` line that admits `ip` to the meta file system, or says why none does.
    pub fn admit_meta(
        &self,
        ip: IpAddr,
        proof: Option<&[u8]>,
        challenge: Option<&[u8]>,
    ) -> Result<&ExportLine, String> {
        let ip4 = ipv4_of(ip);
        let mut candidates: Vec<&ExportLine> = self
            .meta_lines
            .iter()
            .filter(|l| match ip4 {
                Some(a) => l.admits_ip(a),
                None => l.from == 0 && l.to == u32::MAX,
            })
            .collect();
        if candidates.is_empty() {
            return Err(format!(
                "no exports line with path '.' admits {ip} to the meta file system (exports \
                 file {}); add a line like '{ip} . rw'",
                self.path.display()
            ));
        }
        candidates.sort_by_key(|l| std::cmp::Reverse(l.rank()));
        pick_by_password(candidates, proof, challenge).map_err(|why| {
            format!(
                "{why} for the meta file system from {ip} (exports file {})",
                self.path.display()
            )
        })
    }

    /// Picks the line that admits `ip` for `subdir`, or says why none does.
    pub fn admit(
        &self,
        ip: IpAddr,
        subdir: &str,
        proof: Option<&[u8]>,
        challenge: Option<&[u8]>,
    ) -> Result<&ExportLine, String> {
        let subdir = normalize_path(subdir);
        let ip4 = ipv4_of(ip);
        let by_ip: Vec<&ExportLine> = self
            .lines
            .iter()
            .filter(|l| match ip4 {
                Some(a) => l.admits_ip(a),
                None => l.from == 0 && l.to == u32::MAX,
            })
            .collect();
        if by_ip.is_empty() {
            return Err(format!(
                "no exports line admits {ip} (exports file {}); add a line for this address",
                self.path.display()
            ));
        }
        let mut candidates: Vec<&ExportLine> = by_ip
            .iter()
            .copied()
            .filter(|l| l.admits_path(&subdir))
            .collect();
        if candidates.is_empty() {
            let paths: Vec<String> = by_ip
                .iter()
                .map(|l| {
                    format!(
                        "{}{} (line {})",
                        l.path,
                        if l.opts.alldirs { " and below" } else { "" },
                        l.line
                    )
                })
                .collect();
            return Err(format!(
                "no exports line admits {ip} for {subdir}; for this address {} exports only {}",
                self.path.display(),
                paths.join(", ")
            ));
        }
        candidates.sort_by_key(|l| std::cmp::Reverse(l.rank()));
        pick_by_password(candidates, proof, challenge).map_err(|why| {
            format!(
                "{why} for {subdir} from {ip} (exports file {})",
                self.path.display()
            )
        })
    }
}

fn ipv4_of(ip: IpAddr) -> Option<u32> {
    match ip {
        IpAddr::V4(v4) => Some(u32::from(v4)),
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(u32::from),
    }
}

/// The first of `candidates` (best first) whose password, if any, the client proved.
fn pick_by_password<'a>(
    candidates: Vec<&'a ExportLine>,
    proof: Option<&[u8]>,
    challenge: Option<&[u8]>,
) -> Result<&'a ExportLine, &'static str> {
    let mut password_failure = None;
    for line in candidates {
        match &line.opts.password {
            None => return Ok(line),
            Some(pass) => match (proof, challenge) {
                (Some(p), Some(c)) if p == password_proof(c, pass).as_slice() => return Ok(line),
                (Some(_), _) => password_failure = Some("incorrect password"),
                (None, _) => {
                    password_failure
                        .get_or_insert("a password is needed (mount with -o mfspassword=...)");
                }
            },
        }
    }
    Err(password_failure.unwrap_or("refused"))
}

/// The proof a client sends for a password: md5(challenge[..16] ‖ md5(password) ‖ challenge[16..]).
pub fn password_proof(challenge: &[u8], password: &str) -> Vec<u8> {
    let inner = Md5::digest(password.as_bytes());
    let half = challenge.len().min(16);
    let mut h = Md5::new();
    h.update(&challenge[..half]);
    h.update(inner);
    h.update(&challenge[half..]);
    h.finalize().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Exports {
        Exports::parse(Path::new("exports.cfg"), text).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn errors_name_file_and_line() {
        let e = Exports::parse(Path::new("e.cfg"), "\n* / rw,bogus\n").unwrap_err();
        assert_eq!(e.to_string(), "e.cfg:2: unknown option 'bogus'");
    }

    #[test]
    fn only_dot_lines_admit_the_meta_file_system() {
        let ex = parse("* / rw,alldirs\n10.0.0.0/8 . rw\n");
        assert_eq!(ex.admit_meta(ip("10.1.2.3"), None, None).unwrap().line, 2);
        let why = ex.admit_meta(ip("192.168.1.1"), None, None).unwrap_err();
        assert!(why.contains("path '.'"), "{why}");
        // A "." line admits no normal mount.
        let ex = parse("10.0.0.0/8 . rw\n");
        assert!(ex.admit(ip("10.1.2.3"), "/", None, None).is_err());
    }

    #[test]
    fn precedence_and_paths() {
        let ex = parse("* / ro\n127.0.0.1 / rw,maproot=0\n10.0.0.0/8 /data rw,alldirs\n");
        let l = ex.admit(ip("127.0.0.1"), "/", None, None).unwrap();
        assert_eq!(l.line, 2);
        assert!(!l.opts.read_only);
        assert_eq!(ex.admit(ip("10.1.2.3"), "/", None, None).unwrap().line, 1);
        assert_eq!(
            ex.admit(ip("10.1.2.3"), "/data/x", None, None)
                .unwrap()
                .line,
            3
        );
        let err = ex
            .admit(ip("192.168.0.1"), "/data/x", None, None)
            .unwrap_err();
        assert!(
            err.contains("no exports line admits 192.168.0.1 for /data/x"),
            "{err}"
        );
        let none = parse("10.0.0.1 / rw\n");
        let err = none.admit(ip("10.0.3.7"), "/", None, None).unwrap_err();
        assert!(err.starts_with("no exports line admits 10.0.3.7"), "{err}");
    }

    #[test]
    fn passwords() {
        let ex = parse("* / rw,password=secret\n");
        let challenge = [7u8; 32];
        let good = password_proof(&challenge, "secret");
        assert!(ex
            .admit(ip("1.2.3.4"), "/", Some(&good), Some(&challenge))
            .is_ok());
        let bad = password_proof(&challenge, "nope");
        let err = ex
            .admit(ip("1.2.3.4"), "/", Some(&bad), Some(&challenge))
            .unwrap_err();
        assert!(err.starts_with("incorrect password"), "{err}");
        let err = ex.admit(ip("1.2.3.4"), "/", None, None).unwrap_err();
        assert!(err.starts_with("a password is needed"), "{err}");
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics(text in "(?s).{0,300}") {
            let _ = Exports::parse(Path::new("p.cfg"), &text);
        }
    }
}
