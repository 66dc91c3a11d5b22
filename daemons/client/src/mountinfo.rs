//! Finding our mounts: `/proc/self/mountinfo` parsing and the `HOST:PORT:/SUBDIR` source.

use std::path::{Path, PathBuf};

/// File system type of our mounts as the kernel shows it.
pub const FSTYPE: &str = "fuse.moosefs";
/// FUSE subtype that produces [`FSTYPE`].
pub const SUBTYPE: &str = "moosefs";

/// One line of mountinfo (the fields we use).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub mount_point: PathBuf,
    pub fstype: String,
    pub source: String,
}

/// Parses the text of `/proc/self/mountinfo`; malformed lines are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<MountEntry> {
    let fields: Vec<&str> = line.split(' ').collect();
    // id parent major:minor root mount_point options [optional…] - fstype source super_options
    let mount_point = fields.get(4)?;
    let sep = fields.iter().skip(6).position(|f| *f == "-")? + 6;
    let fstype = fields.get(sep + 1)?;
    let source = fields.get(sep + 2)?;
    Some(MountEntry {
        mount_point: PathBuf::from(unescape(mount_point)),
        fstype: unescape(fstype),
        source: unescape(source),
    })
}

/// Undoes the kernel's octal escapes (`\040` for a space, `\134` for a backslash…).
pub fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let oct = &b[i + 1..i + 4];
            if oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                let v = (oct[0] - b'0') as u32 * 64
                    + (oct[1] - b'0') as u32 * 8
                    + (oct[2] - b'0') as u32;
                if let Ok(byte) = u8::try_from(v) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount holding `path` (canonical, absolute): the longest mount point that is a prefix of
/// it, the latest one on a tie (it hides the earlier ones).
pub fn mount_of<'a>(mounts: &'a [MountEntry], path: &Path) -> Option<&'a MountEntry> {
    let mut best: Option<&MountEntry> = None;
    for m in mounts {
        if path.starts_with(&m.mount_point) {
            let longer = best
                .is_none_or(|b| m.mount_point.as_os_str().len() >= b.mount_point.as_os_str().len());
            if longer {
                best = Some(m);
            }
        }
    }
    best
}

/// Where a mount comes from: the master and the folder it exports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub host: String,
    pub port: u16,
    pub subdir: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("mount source '{0}' is not of the form HOST:PORT:/SUBDIR")]
pub struct BadSource(pub String);

impl Source {
    /// Parses `HOST:PORT:/SUBDIR` (an IPv6 host may be in brackets), or `HOST:PORT:.` for
    /// a meta mount.
    pub fn parse(s: &str) -> Result<Source, BadSource> {
        let err = || BadSource(s.to_string());
        let cut = s
            .find(":/")
            .or_else(|| s.strip_suffix(":.").map(str::len))
            .ok_or_else(err)?;
        let (left, subdir) = (&s[..cut], &s[cut + 1..]);
        let (host, port) = left.rsplit_once(':').ok_or_else(err)?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if host.is_empty() {
            return Err(err());
        }
        let port: u16 = port.parse().map_err(|_| err())?;
        Ok(Source {
            host: host.to_string(),
            port,
            subdir: subdir.to_string(),
        })
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}:{}", self.host, self.port, self.subdir)
        } else {
            write!(f, "{}:{}:{}", self.host, self.port, self.subdir)
        }
    }
}

/// Normalises a subfolder: absolute, no empty or `.` components, no trailing slash. `..` is
/// refused.
pub fn normalize_subdir(s: &str) -> Result<String, String> {
    let mut parts = Vec::new();
    for p in s.split('/') {
        match p {
            "" | "." => {}
            ".." => return Err(format!("subfolder '{s}' must not contain '..'")),
            p => parts.push(p),
        }
    }
    Ok(format!("/{}", parts.join("/")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
36 25 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro
90 36 0:50 / /mnt/mfs rw,nosuid,nodev,relatime shared:200 - fuse.moosefs mfsmaster:9421:/ rw,user_id=0,group_id=0,default_permissions,allow_other
91 90 0:51 / /mnt/mfs/inner rw,relatime - tmpfs tmpfs rw
92 36 0:52 / /mnt/with\\040space rw,relatime - fuse.moosefs [::1]:9421:/sub\\040dir rw
bad line
";

    #[test]
    fn parses_fields_and_escapes() {
        let m = parse_mountinfo(SAMPLE);
        assert_eq!(m.len(), 5);
        assert_eq!(m[2].mount_point, PathBuf::from("/mnt/mfs"));
        assert_eq!(m[2].fstype, FSTYPE);
        assert_eq!(m[2].source, "mfsmaster:9421:/");
        assert_eq!(m[4].mount_point, PathBuf::from("/mnt/with space"));
        assert_eq!(m[4].source, "[::1]:9421:/sub dir");
    }

    #[test]
    fn optional_fields_may_be_absent_or_many() {
        let line = "1 2 0:3 / /x rw a:1 b:2 c:3 - fuse.moosefs h:1:/ rw";
        assert_eq!(parse_mountinfo(line)[0].fstype, FSTYPE);
        let line = "1 2 0:3 / /x rw - fuse.moosefs h:1:/ rw";
        assert_eq!(parse_mountinfo(line)[0].source, "h:1:/");
    }

    #[test]
    fn longest_prefix_wins() {
        let m = parse_mountinfo(SAMPLE);
        let f = |p: &str| mount_of(&m, Path::new(p)).map(|e| e.mount_point.clone());
        assert_eq!(f("/mnt/mfs/a/b"), Some(PathBuf::from("/mnt/mfs")));
        assert_eq!(f("/mnt/mfs"), Some(PathBuf::from("/mnt/mfs")));
        assert_eq!(f("/mnt/mfs/inner/x"), Some(PathBuf::from("/mnt/mfs/inner")));
        assert_eq!(
            f("/mnt/mfsx"),
            Some(PathBuf::from("/")),
            "component-wise prefix"
        );
        assert_eq!(
            f("/mnt/with space/f"),
            Some(PathBuf::from("/mnt/with space"))
        );
    }

    #[test]
    fn latest_mount_on_same_point_wins() {
        let text = "1 0 0:1 / /m rw - ext4 a rw\n2 1 0:2 / /m rw - fuse.moosefs h:9421:/ rw\n";
        let m = parse_mountinfo(text);
        assert_eq!(mount_of(&m, Path::new("/m/f")).unwrap().fstype, FSTYPE);
    }

    #[test]
    fn unescape_edge_cases() {
        assert_eq!(unescape("a\\134b"), "a\\b");
        assert_eq!(unescape("a\\0"), "a\\0");
        assert_eq!(unescape("a\\999"), "a\\999");
        assert_eq!(unescape("\\011x"), "\tx");
        assert_eq!(unescape("end\\"), "end\\");
    }

    #[test]
    fn source_round_trip() {
        let s = Source::parse("mfsmaster:9421:/").unwrap();
        assert_eq!(
            s,
            Source {
                host: "mfsmaster".into(),
                port: 9421,
                subdir: "/".into()
            }
        );
        assert_eq!(s.to_string(), "mfsmaster:9421:/");
        let s = Source::parse("[fe80::1]:9500:/a/b:/c").unwrap();
        assert_eq!(s.host, "fe80::1");
        assert_eq!(s.port, 9500);
        assert_eq!(s.subdir, "/a/b:/c");
        assert_eq!(s.to_string(), "[fe80::1]:9500:/a/b:/c");
        assert_eq!(Source::parse(&s.to_string()).unwrap(), s);
        for bad in [
            "",
            "host",
            "host:9421",
            "host:x:/",
            ":9421:/",
            "host:99999:/",
        ] {
            assert!(Source::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn subdir_normalisation() {
        assert_eq!(normalize_subdir("/").unwrap(), "/");
        assert_eq!(normalize_subdir("").unwrap(), "/");
        assert_eq!(normalize_subdir("a//b/./c/").unwrap(), "/a/b/c");
        assert!(normalize_subdir("/a/../b").is_err());
        let meta = Source::parse("mfsmaster:9421:.").unwrap();
        assert_eq!(meta.subdir, ".");
        assert_eq!(meta.to_string(), "mfsmaster:9421:.");
    }
}
