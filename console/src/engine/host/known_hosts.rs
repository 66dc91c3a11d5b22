//! `known_hosts` files as OpenSSH writes and reads them: plain and hashed (`|1|salt|hash`)
//! host patterns, `[addr]:port` off port 22, `*`/`?` wildcards, `!` negation, `@revoked`
//! markers. What matters here is the verdict for one host and one offered key, with the
//! `file:line` of the entry that decided it.

use std::path::{Path, PathBuf};

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use russh::keys::ssh_key::{HashAlg, PublicKey};
use sha1::Sha1;

/// One key line of a known_hosts file.
#[derive(Debug, Clone)]
pub struct Entry {
    pub file: PathBuf,
    /// 1-based line number.
    pub line: usize,
    /// The comma-separated host patterns as written.
    patterns: String,
    revoked: bool,
    pub key: PublicKey,
}

/// What the known_hosts files say about a key offered by a host.
#[derive(Debug, Clone)]
pub enum Verdict {
    /// An entry lists this key for this host.
    Known,
    /// No entry names the host.
    Unknown,
    /// The host is listed, but with other keys: the first such entry.
    Changed(Box<Entry>),
    /// The key is marked `@revoked`.
    Revoked(Box<Entry>),
}

/// How the host is written in known_hosts: `addr` on port 22, `[addr]:port` otherwise.
pub fn host_pattern(address: &str, port: u16) -> String {
    if port == 22 {
        address.to_string()
    } else {
        format!("[{address}]:{port}")
    }
}

/// `SHA256:...` of a key, as `ssh-keygen -l` prints it.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// The key's algorithm as OpenSSH names it (`ssh-ed25519`).
pub fn algorithm(key: &PublicKey) -> String {
    key.algorithm().as_str().to_string()
}

/// Parses the text of a known_hosts file; lines that are not key lines (comments,
/// `@cert-authority` entries, garbage) are skipped, as OpenSSH does.
pub fn parse(file: &Path, text: &str) -> Vec<Entry> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace();
        let mut first = words.next().unwrap_or_default();
        let mut revoked = false;
        if let Some(marker) = first.strip_prefix('@') {
            match marker {
                "revoked" => revoked = true,
                _ => continue, // @cert-authority: host certificates are not used here
            }
            first = match words.next() {
                Some(w) => w,
                None => continue,
            };
        }
        let (Some(alg), Some(b64)) = (words.next(), words.next()) else {
            continue;
        };
        let Ok(key) = PublicKey::from_openssh(&format!("{alg} {b64}")) else {
            continue;
        };
        out.push(Entry {
            file: file.to_path_buf(),
            line: i + 1,
            patterns: first.to_string(),
            revoked,
            key,
        });
    }
    out
}

/// Reads and parses the files that exist (a missing file is empty).
pub fn load(files: &[PathBuf]) -> Vec<Entry> {
    let mut out = Vec::new();
    for f in files {
        if let Ok(text) = std::fs::read_to_string(f) {
            out.extend(parse(f, &text));
        }
    }
    out
}

impl Entry {
    /// Whether this entry's patterns name `host` (as [`host_pattern`] writes it).
    pub fn names(&self, host: &str) -> bool {
        let mut matched = false;
        for p in self.patterns.split(',') {
            if let Some(neg) = p.strip_prefix('!') {
                if pattern_matches(neg, host) {
                    return false;
                }
            } else if pattern_matches(p, host) {
                matched = true;
            }
        }
        matched
    }
}

fn pattern_matches(pattern: &str, host: &str) -> bool {
    if let Some(hashed) = pattern.strip_prefix("|1|") {
        let Some((salt, hash)) = hashed.split_once('|') else {
            return false;
        };
        let b64 = base64::engine::general_purpose::STANDARD;
        let (Ok(salt), Ok(hash)) = (b64.decode(salt), b64.decode(hash)) else {
            return false;
        };
        let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(&salt) else {
            return false;
        };
        mac.update(host.as_bytes());
        return mac.verify_slice(&hash).is_ok();
    }
    wildcard(pattern.as_bytes(), host.as_bytes())
}

/// `*` and `?` glob matching, case-insensitive as OpenSSH matches host names.
fn wildcard(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi].eq_ignore_ascii_case(&s[si])) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

/// The verdict of `entries` on `key` offered by `host` (as [`host_pattern`] writes it).
/// A host listed only with keys of other types counts as changed: accepting a new type
/// blindly would let anyone in the middle choose the type.
pub fn check(entries: &[Entry], host: &str, key: &PublicKey) -> Verdict {
    let mut other = None;
    for e in entries.iter().filter(|e| e.names(host)) {
        let same = e.key.key_data() == key.key_data();
        if e.revoked {
            if same {
                return Verdict::Revoked(Box::new(e.clone()));
            }
            continue;
        }
        if same {
            return Verdict::Known;
        }
        if other.is_none() {
            other = Some(e.clone());
        }
    }
    match other {
        Some(e) => Verdict::Changed(Box::new(e)),
        None => Verdict::Unknown,
    }
}

/// The line to append for `host` and `key`.
pub fn line_for(host: &str, key: &PublicKey) -> String {
    let mut k = key.clone();
    k.set_comment("");
    let text = k
        .to_openssh()
        .unwrap_or_else(|_| format!("{} ?", algorithm(key)));
    format!("{host} {}", text.trim())
}

/// Appends `host key` to `file` (creating it and its folder, mode 600 for a new file).
pub fn append(file: &Path, host: &str, key: &PublicKey) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = file.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)?;
        }
    }
    let needs_newline = std::fs::read(file)
        .map(|b| !b.is_empty() && !b.ends_with(b"\n"))
        .unwrap_or(false);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(file)?;
    let mut line = String::new();
    if needs_newline {
        line.push('\n');
    }
    line.push_str(&line_for(host, key));
    line.push('\n');
    f.write_all(line.as_bytes())?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED_A: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKlh/j3pOQEQ6HF7ZXAYtenH0RXL5DC6Fr/wInAwJnOQ";
    const ED_B: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGJq0qD9IFUEJs1VoqYBlPpvVli90fYsJ+cJ/nsyKTkC";

    fn key(s: &str) -> PublicKey {
        PublicKey::from_openssh(s).unwrap()
    }

    /// `|1|salt|hash` as `ssh-keygen -H` writes it.
    fn hashed(host: &str, salt: &[u8]) -> String {
        let mut mac = Hmac::<Sha1>::new_from_slice(salt).unwrap();
        mac.update(host.as_bytes());
        let b64 = base64::engine::general_purpose::STANDARD;
        format!(
            "|1|{}|{}",
            b64.encode(salt),
            b64.encode(mac.finalize().into_bytes())
        )
    }

    #[test]
    fn plain_hashed_and_port_entries() {
        let text = format!(
            "# comment\n\
             10.0.0.1,cs1 {ED_A}\n\
             {} {ED_B} root@x\n\
             [10.0.0.3]:2222 {ED_A}\n\
             @cert-authority *.example.com {ED_B}\n\
             garbage line\n",
            hashed("10.0.0.2", b"0123456789abcdefghij")
        );
        let e = parse(Path::new("/k"), &text);
        assert_eq!(e.len(), 3);
        assert_eq!(e[0].line, 2);
        assert!(matches!(check(&e, "10.0.0.1", &key(ED_A)), Verdict::Known));
        assert!(matches!(check(&e, "cs1", &key(ED_A)), Verdict::Known));
        assert!(matches!(check(&e, "10.0.0.2", &key(ED_B)), Verdict::Known));
        match check(&e, "10.0.0.2", &key(ED_A)) {
            Verdict::Changed(x) => assert_eq!((x.file.as_path(), x.line), (Path::new("/k"), 3)),
            v => panic!("{v:?}"),
        }
        // The same address on another port is another host.
        assert!(matches!(
            check(&e, "10.0.0.3", &key(ED_A)),
            Verdict::Unknown
        ));
        assert!(matches!(
            check(&e, &host_pattern("10.0.0.3", 2222), &key(ED_A)),
            Verdict::Known
        ));
        assert!(matches!(
            check(&e, "10.0.0.9", &key(ED_A)),
            Verdict::Unknown
        ));
    }

    #[test]
    fn wildcards_negation_and_revocation() {
        let text = format!(
            "10.0.0.*,!10.0.0.7 {ED_A}\n\
             @revoked 10.1.* {ED_B}\n\
             10.1.0.? {ED_A}\n"
        );
        let e = parse(Path::new("/k"), &text);
        assert!(matches!(check(&e, "10.0.0.5", &key(ED_A)), Verdict::Known));
        assert!(matches!(
            check(&e, "10.0.0.7", &key(ED_A)),
            Verdict::Unknown
        ));
        assert!(matches!(
            check(&e, "10.1.0.4", &key(ED_B)),
            Verdict::Revoked(_)
        ));
        assert!(matches!(check(&e, "10.1.0.4", &key(ED_A)), Verdict::Known));
        assert!(matches!(
            check(&e, "10.1.0.44", &key(ED_A)),
            Verdict::Unknown
        ));
        assert!(wildcard(b"*.EXAMPLE.com", b"a.b.example.com"));
        assert!(!wildcard(b"a*b", b"acbd"));
    }

    #[test]
    fn append_then_known() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("ssh/known_hosts");
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(&f, format!("other {ED_B}")).unwrap();
        let host = host_pattern("10.0.0.4", 2222);
        append(&f, &host, &key(ED_A)).unwrap();
        let e = load(std::slice::from_ref(&f));
        assert_eq!(e.len(), 2);
        assert!(matches!(check(&e, &host, &key(ED_A)), Verdict::Known));
        assert!(fingerprint(&key(ED_A)).starts_with("SHA256:"));
        assert_eq!(
            line_for("h", &key(ED_A)),
            format!("h {ED_A}"),
            "no comment, one line"
        );
    }
}
