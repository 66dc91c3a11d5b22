//! The exports file (`ADDRESS PATH [OPTIONS]`, MooseFS syntax) and the decision which line, if
//! any, admits a client.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use md5::{Digest, Md5};

#[derive(Debug, thiserror::Error)]
#[error("{path}:{line}: {message}")]
pub struct ExportsError {
    pub path: PathBuf,
    pub line: usize,
    pub message: String,
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
    /// "/" or "/a/b" (normalized); "." is the meta file system (not served).
    pub path: String,
    pub opts: ExportOptions,
}

impl ExportLine {
    pub fn admits_ip(&self, ip: u32) -> bool {
        (self.from..=self.to).contains(&ip)
    }

    pub fn admits_path(&self, subdir: &str) -> bool {
        subdir == self.path
            || (self.opts.alldirs
                && (self.path == "/" || subdir.starts_with(&format!("{}/", self.path))))
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
}

/// Normalizes a subfolder given by a client or an exports line: "/a/b", or "/" for the root.
/// `..` is resolved here, before any exports line is matched (it never climbs above "/"), so
/// `/data/../secret` is checked as `/secret`.
pub fn normalize_path(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for s in p.split('/') {
        match s {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    format!("/{}", parts.join("/"))
}

#[cfg(test)]
mod normalize_tests {
    use super::normalize_path;

    #[test]
    fn dot_dot_is_resolved_and_never_climbs_above_the_root() {
        assert_eq!(normalize_path("/data/../secret"), "/secret");
        assert_eq!(normalize_path("data/./a//b/"), "/data/a/b");
        assert_eq!(normalize_path("/../../etc"), "/etc");
        assert_eq!(normalize_path("/a/b/../.."), "/");
        assert_eq!(normalize_path(""), "/");
    }
}

fn ipv4(s: &str) -> Option<u32> {
    s.parse::<Ipv4Addr>().ok().map(u32::from)
}

/// The address forms of exports (and topology) lines, as an inclusive range of IPv4 addresses.
pub fn parse_address(s: &str) -> Result<(u32, u32), String> {
    let ip = |t: &str| ipv4(t.trim()).ok_or(format!("'{t}' is not an IPv4 address"));
    if s == "*" {
        return Ok((0, u32::MAX));
    }
    if let Some((a, b)) = s.split_once('-') {
        let (lo, hi) = (ip(a)?, ip(b)?);
        if lo > hi {
            return Err(format!("the range runs backwards ({a} is after {b})"));
        }
        return Ok((lo, hi));
    }
    if let Some((a, m)) = s.split_once('/') {
        let base = ip(a)?;
        let mask = if let Ok(bits) = m.parse::<u32>() {
            if bits > 32 {
                return Err(format!("/{bits} is too long, a prefix has at most 32 bits"));
            }
            u32::MAX.checked_shl(32 - bits).unwrap_or(0)
        } else {
            let mask = ipv4(m).ok_or(format!("'{m}' is neither a prefix length nor a netmask"))?;
            if mask.leading_ones() + mask.trailing_zeros() != 32 {
                return Err(format!("{m} is not a valid netmask"));
            }
            mask
        };
        return Ok((base & mask, (base & mask) | !mask));
    }
    let one = ip(s)?;
    Ok((one, one))
}

/// What every address error ends with.
pub const ADDRESS_FORMS: &str =
    "addresses are *, A.B.C.D, A.B.C.D/BITS, A.B.C.D/NETMASK or A.B.C.D-E.F.G.H";

fn parse_ids(value: &str) -> Result<(u32, u32), String> {
    let (u, g) = match value.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (value, None),
    };
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

pub fn parse_options<'a>(text: &'a str) -> Result<ExportOptions, String> {
    let mut o = ExportOptions::default();
    for opt in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (key, value) = match opt.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (opt, None),
        };
        let need = |v: Option<&'a str>| v.ok_or(format!("option {key} needs a value ({key}=...)"));
        match key {
            "ro" | "readonly" => o.read_only = true,
            "rw" | "readwrite" => o.read_only = false,
            "alldirs" => o.alldirs = true,
            "ignoregid" => o.ignoregid = true,
            "admin" => o.admin = true,
            "dynamicip" | "canchangequota" => {}
            "maproot" => o.maproot = Some(parse_ids(need(value)?)?),
            "mapall" => o.mapall = Some(parse_ids(need(value)?)?),
            "password" => o.password = Some(need(value)?.to_string()),
            "mingoal" | "maxgoal" => {
                let v: u8 = need(value)?
                    .parse()
                    .ok()
                    .filter(|g| (1..=9).contains(g))
                    .ok_or(format!("{key} takes a goal from 1 to 9"))?;
                if key == "mingoal" {
                    o.mingoal = v
                } else {
                    o.maxgoal = v
                }
            }
            "minversion" | "mintrashtime" | "maxtrashtime" | "umask" | "mintrashretention"
            | "maxtrashretention" | "md5pass" | "disable" | "sclassgroups" => {
                return Err(format!("option {key} is not supported by moose-master"))
            }
            other => return Err(format!("unknown option '{other}'")),
        }
    }
    if o.mingoal > o.maxgoal {
        return Err(format!(
            "mingoal {} is above maxgoal {}",
            o.mingoal, o.maxgoal
        ));
    }
    Ok(o)
}

impl Exports {
    pub fn load(path: &Path) -> Result<Exports, ExportsError> {
        let text = std::fs::read_to_string(path).map_err(|e| ExportsError {
            path: path.to_path_buf(),
            line: 0,
            message: format!(
                "cannot read the exports file: {e}; create it (e.g. a line '* / rw,alldirs,maproot=0') \
                 or set EXPORTS_FILENAME"
            ),
        })?;
        Exports::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Exports, ExportsError> {
        let mut lines = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let err = |message: String| ExportsError {
                path: path.to_path_buf(),
                line: i + 1,
                message,
            };
            let mut words = line.split_whitespace();
            let address = words.next().unwrap_or("");
            let Some(dir) = words.next() else {
                return Err(err(format!(
                    "'{line}' has no path; the form is ADDRESS PATH [OPTIONS]"
                )));
            };
            let opts_text = words.collect::<Vec<_>>().join("");
            let (from, to) =
                parse_address(address).map_err(|e| err(format!("{e}; {ADDRESS_FORMS}")))?;
            let opts = parse_options(&opts_text).map_err(err)?;
            if dir == "." {
                // The meta file system (trash) is not served; such lines admit nothing.
                continue;
            }
            lines.push(ExportLine {
                line: i + 1,
                address: address.to_string(),
                from,
                to,
                path: normalize_path(dir),
                opts,
            });
        }
        Ok(Exports {
            path: path.to_path_buf(),
            lines,
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
        let ip4 = match ip {
            IpAddr::V4(v4) => Some(u32::from(v4)),
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(u32::from),
        };
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
        let mut password_failure = None;
        for line in candidates {
            match &line.opts.password {
                None => return Ok(line),
                Some(pass) => match (proof, challenge) {
                    (Some(p), Some(c)) if p == password_proof(c, pass).as_slice() => {
                        return Ok(line)
                    }
                    (Some(_), _) => password_failure = Some("incorrect password"),
                    (None, _) => {
                        password_failure
                            .get_or_insert("a password is needed (mount with -o mfspassword=...)");
                    }
                },
            }
        }
        Err(format!(
            "{} for {subdir} from {ip} (exports file {})",
            password_failure.unwrap_or("refused"),
            self.path.display()
        ))
    }
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
    fn address_forms() {
        assert_eq!(parse_address("*"), Ok((0, u32::MAX)));
        assert_eq!(
            parse_address("10.0.0.0/8").unwrap().1,
            u32::from(Ipv4Addr::new(10, 255, 255, 255))
        );
        assert_eq!(
            parse_address("192.168.1.0/255.255.255.0").unwrap().1,
            u32::from(Ipv4Addr::new(192, 168, 1, 255))
        );
        assert_eq!(
            parse_address("10.0.0.5-10.0.0.9"),
            Ok((
                u32::from(Ipv4Addr::new(10, 0, 0, 5)),
                u32::from(Ipv4Addr::new(10, 0, 0, 9))
            ))
        );
        assert!(parse_address("10.0.0.9-10.0.0.5").is_err());
        assert!(parse_address("10.0.0.0/33").is_err());
        assert!(parse_address("10.0.0.0/255.0.255.0").is_err());
    }

    #[test]
    fn errors_name_file_and_line() {
        let e = Exports::parse(Path::new("e.cfg"), "\n* / rw,bogus\n").unwrap_err();
        assert_eq!(e.to_string(), "e.cfg:2: unknown option 'bogus'");
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
