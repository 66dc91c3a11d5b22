//! Which exports line, if any, admits a client: the master's decision, in one place, so that
//! the master, `moosectl doctor`, the console's Exports pane and the inventory's validation
//! judge a client the same way.
//!
//! User and group names of `maproot`/`mapall` mean something only on the master's host: the
//! caller resolves them ([`Exports::from_file`] takes the resolver; the master passes one that
//! asks the system, the console [`ids_unresolved`], since admission does not depend on them).

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use md5::{Digest, Md5};

pub use crate::exports::{admits_path, normalize_path, parse_address, ADDRESS_FORMS};
use crate::exports::{ExportOption, ExportsFile, IdSpec};

/// Turns `USER[:GROUP]` into numeric ids, or says why it cannot.
pub type IdResolver<'a> = &'a dyn Fn(&IdSpec) -> Result<(u32, u32), String>;

/// A resolver for hosts other than the master's: numeric ids as written, names as `u32::MAX`
/// (they are looked up on the master's host, and no admission decision depends on them).
pub fn ids_unresolved(ids: &IdSpec) -> Result<(u32, u32), String> {
    let uid = ids.user.parse::<u32>().unwrap_or(u32::MAX);
    let gid = match ids.group.as_deref() {
        None => uid,
        Some(g) => g.parse::<u32>().unwrap_or(u32::MAX),
    };
    Ok((uid, gid))
}

#[derive(Debug, thiserror::Error)]
pub enum ExportsError {
    #[error(transparent)]
    File(#[from] crate::exports::ExportsError),
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

/// Options of one line, with user and group names resolved by `resolve`.
pub fn resolve_options(
    options: &[ExportOption],
    resolve: IdResolver,
) -> Result<ExportOptions, String> {
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
            ExportOption::MapRoot(ids) => o.maproot = Some(resolve(ids)?),
            ExportOption::MapAll(ids) => o.mapall = Some(resolve(ids)?),
            ExportOption::Password(p) => o.password = Some(p.clone()),
            ExportOption::MinGoal(g) => o.mingoal = *g,
            ExportOption::MaxGoal(g) => o.maxgoal = *g,
        }
    }
    Ok(o)
}

impl Exports {
    /// Reads the exports file `path` with names resolved by `resolve`.
    pub fn load(path: &Path, resolve: IdResolver) -> Result<Exports, ExportsError> {
        Exports::from_file(path, ExportsFile::load(path)?, resolve)
    }

    /// Parses `text`, the exports file `path`, with names resolved by `resolve`.
    pub fn parse(path: &Path, text: &str, resolve: IdResolver) -> Result<Exports, ExportsError> {
        Exports::from_file(path, ExportsFile::parse(path, text)?, resolve)
    }

    /// The admission lines of a parsed (or built) exports file.
    pub fn from_file(
        path: &Path,
        file: ExportsFile,
        resolve: IdResolver,
    ) -> Result<Exports, ExportsError> {
        let mut lines = Vec::new();
        let mut meta_lines = Vec::new();
        for l in file.lines {
            let opts =
                resolve_options(&l.options, resolve).map_err(|message| ExportsError::Ids {
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
    ) -> Result<&ExportLine, Refusal> {
        let mut candidates = lines_for(&self.meta_lines, ip);
        if candidates.is_empty() {
            return Err(Refusal::NoMetaLine {
                ip,
                file: self.path.clone(),
            });
        }
        candidates.sort_by_key(|l| std::cmp::Reverse(l.rank()));
        pick_by_password(candidates, proof, challenge).map_err(|why| Refusal::Password {
            why,
            what: "the meta file system".into(),
            ip,
            file: self.path.clone(),
        })
    }

    /// Picks the line that admits `ip` for `subdir`, or says why none does.
    pub fn admit(
        &self,
        ip: IpAddr,
        subdir: &str,
        proof: Option<&[u8]>,
        challenge: Option<&[u8]>,
    ) -> Result<&ExportLine, Refusal> {
        let subdir = normalize_path(subdir);
        let by_ip = lines_for(&self.lines, ip);
        if by_ip.is_empty() {
            return Err(Refusal::NoAddress {
                ip,
                file: self.path.clone(),
            });
        }
        let mut candidates: Vec<&ExportLine> = by_ip
            .iter()
            .copied()
            .filter(|l| l.admits_path(&subdir))
            .collect();
        if candidates.is_empty() {
            let exported = by_ip.into_iter().cloned().collect();
            return Err(Refusal::NoPath {
                ip,
                subdir,
                file: self.path.clone(),
                exported,
            });
        }
        candidates.sort_by_key(|l| std::cmp::Reverse(l.rank()));
        pick_by_password(candidates, proof, challenge).map_err(|why| Refusal::Password {
            why,
            what: subdir.clone(),
            ip,
            file: self.path.clone(),
        })
    }
}

/// Why no exports line admits a client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no exports line admits {ip} (exports file {}); add a line for this address", .file.display())]
    NoAddress { ip: IpAddr, file: PathBuf },
    #[error(
        "no exports line admits {ip} for {subdir}; for this address {} exports only {}",
        .file.display(),
        exported_paths(.exported, "line")
    )]
    NoPath {
        ip: IpAddr,
        subdir: String,
        file: PathBuf,
        /// The lines that admit the address (for other paths).
        exported: Vec<ExportLine>,
    },
    #[error(
        "no exports line with path '.' admits {ip} to the meta file system (exports file {}); \
         add a line like '{ip} . rw'",
        .file.display()
    )]
    NoMetaLine { ip: IpAddr, file: PathBuf },
    /// Lines admit the address and path, but each wants a password not given or not proved.
    #[error("{why} for {what} from {ip} (exports file {})", .file.display())]
    Password {
        why: &'static str,
        what: String,
        ip: IpAddr,
        file: PathBuf,
    },
}

/// "/a and below (line 3), /b (line 5)": the paths `lines` export, each with its number,
/// `what` naming what the number counts.
pub fn exported_paths(lines: &[ExportLine], what: &str) -> String {
    let paths: Vec<String> = lines
        .iter()
        .map(|l| {
            let below = if l.opts.alldirs { " and below" } else { "" };
            format!("{}{below} ({what} {})", l.path, l.line)
        })
        .collect();
    paths.join(", ")
}

/// The lines of `lines` whose address range holds `ip` (an IPv6 client only by `*`).
fn lines_for(lines: &[ExportLine], ip: IpAddr) -> Vec<&ExportLine> {
    let ip4 = ipv4_of(ip);
    lines
        .iter()
        .filter(|l| match ip4 {
            Some(a) => l.admits_ip(a),
            None => l.from == 0 && l.to == u32::MAX,
        })
        .collect()
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
        Exports::parse(Path::new("exports.cfg"), text, &ids_unresolved).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn errors_name_file_and_line() {
        let e =
            Exports::parse(Path::new("e.cfg"), "\n* / rw,bogus\n", &ids_unresolved).unwrap_err();
        assert_eq!(e.to_string(), "e.cfg:2: unknown option 'bogus'");
    }

    #[test]
    fn only_dot_lines_admit_the_meta_file_system() {
        let ex = parse("* / rw,alldirs\n10.0.0.0/8 . rw\n");
        assert_eq!(ex.admit_meta(ip("10.1.2.3"), None, None).unwrap().line, 2);
        let why = ex.admit_meta(ip("192.168.1.1"), None, None).unwrap_err();
        assert!(matches!(why, Refusal::NoMetaLine { .. }));
        assert!(why.to_string().contains("path '.'"), "{why}");
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
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no exports line admits 192.168.0.1 for /data/x"),
            "{err}"
        );
        let none = parse("10.0.0.1 / rw\n");
        let err = none.admit(ip("10.0.3.7"), "/", None, None).unwrap_err();
        assert!(matches!(err, Refusal::NoAddress { .. }));
        let err = err.to_string();
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
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("incorrect password"), "{err}");
        let err = ex
            .admit(ip("1.2.3.4"), "/", None, None)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("a password is needed"), "{err}");
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics(text in "(?s).{0,300}") {
            let _ = Exports::parse(Path::new("p.cfg"), &text, &ids_unresolved);
        }
    }
}
