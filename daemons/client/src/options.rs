//! `-o` mount options: the standard FUSE/mount ones and ours (`mfs…`).

use std::time::Duration;

/// Default `mfswritecachesize`, in MiB.
pub const DEFAULT_WRITE_CACHE_MIB: u64 = 128;
/// Default `mfsioretries` (stock's): tries of a chunk's read or write before it fails.
pub const DEFAULT_IO_RETRIES: u32 = 30;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionError {
    #[error("unknown mount option '{0}'")]
    Unknown(String),
    #[error("mount option '{0}' needs a value ({0}=…)")]
    MissingValue(String),
    #[error("mount option '{name}' does not take a value")]
    UnexpectedValue { name: String },
    #[error("bad value '{value}' for mount option '{name}': {why}")]
    BadValue {
        name: String,
        value: String,
        why: &'static str,
    },
}

/// A mount flag passed to the kernel as is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelFlag {
    Suid,
    NoSuid,
    Dev,
    NoDev,
    Exec,
    NoExec,
    Atime,
    NoAtime,
    Sync,
    Async,
    DirSync,
}

/// Everything `-o` can set.
#[derive(Debug, Clone, PartialEq)]
pub struct MountOptions {
    pub read_only: bool,
    pub allow_other: bool,
    pub allow_root: bool,
    pub auto_unmount: bool,
    pub attr_cache: Duration,
    pub entry_cache: Duration,
    /// How long the kernel keeps a "no such name" answer (stock's `mfsnegentrycacheto`, 0:
    /// not at all, so names made by other mounts show at once).
    pub neg_entry_cache: Duration,
    /// Write-behind buffer of the whole mount, in bytes.
    pub write_cache_bytes: u64,
    /// Tries of a chunk's read or write, with growing pauses, before the call fails: how long
    /// a mount waits out chunkservers that are down (stock's `mfsioretries`).
    pub io_retries: u32,
    pub password: Option<String>,
    pub flags: Vec<KernelFlag>,
    /// Mount the meta file system (the trash) instead of files: `-m` or `mfsmeta`.
    pub meta: bool,
    /// Meta mount: list every file of the trash in `trash/` rather than in the 4096
    /// `trash/XXX` buckets (stock's `mfsflattrash`).
    pub flat_trash: bool,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            read_only: false,
            allow_other: false,
            allow_root: false,
            auto_unmount: false,
            attr_cache: Duration::from_secs(1),
            entry_cache: Duration::from_secs(1),
            neg_entry_cache: Duration::ZERO,
            write_cache_bytes: DEFAULT_WRITE_CACHE_MIB << 20,
            io_retries: DEFAULT_IO_RETRIES,
            password: None,
            flags: Vec::new(),
            meta: false,
            flat_trash: false,
        }
    }
}

impl MountOptions {
    /// Every change waits for the master's answer (`sync`, `dirsync`): none is answered
    /// ahead by the mount.
    pub fn changes_wait(&self) -> bool {
        self.flags
            .iter()
            .any(|f| matches!(f, KernelFlag::Sync | KernelFlag::DirSync))
    }

    /// Parses every `-o` argument in order (later ones win).
    pub fn parse<S: AsRef<str>>(args: &[S]) -> Result<MountOptions, OptionError> {
        let mut opts = MountOptions::default();
        for arg in args {
            for item in split_options(arg.as_ref()) {
                opts.apply(&item)?;
            }
        }
        Ok(opts)
    }

    fn apply(&mut self, item: &str) -> Result<(), OptionError> {
        let (name, value) = match item.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (item, None),
        };
        let flag = |f: KernelFlag, me: &mut MountOptions| -> Result<(), OptionError> {
            no_value(name, value)?;
            me.flags.retain(|x| !opposite(*x, f));
            me.flags.push(f);
            Ok(())
        };
        match name {
            "ro" => {
                no_value(name, value)?;
                self.read_only = true;
            }
            "rw" => {
                no_value(name, value)?;
                self.read_only = false;
            }
            "allow_other" => {
                no_value(name, value)?;
                self.allow_other = true;
            }
            "allow_root" => {
                no_value(name, value)?;
                self.allow_root = true;
            }
            "auto_unmount" => {
                no_value(name, value)?;
                self.auto_unmount = true;
            }
            // Always on, or accepted for compatibility with fstab and fuse2 habits.
            "default_permissions"
            | "nonempty"
            | "defaults"
            | "_netdev"
            | "nofail"
            | "auto"
            | "noauto"
            | "user"
            | "nouser"
            | "users"
            | "big_writes" => no_value(name, value)?,
            "suid" => flag(KernelFlag::Suid, self)?,
            "nosuid" => flag(KernelFlag::NoSuid, self)?,
            "dev" => flag(KernelFlag::Dev, self)?,
            "nodev" => flag(KernelFlag::NoDev, self)?,
            "exec" => flag(KernelFlag::Exec, self)?,
            "noexec" => flag(KernelFlag::NoExec, self)?,
            "atime" => flag(KernelFlag::Atime, self)?,
            "noatime" => flag(KernelFlag::NoAtime, self)?,
            "sync" => flag(KernelFlag::Sync, self)?,
            "async" => flag(KernelFlag::Async, self)?,
            "dirsync" => flag(KernelFlag::DirSync, self)?,
            "mfsattrcacheto" => self.attr_cache = seconds(name, need_value(name, value)?)?,
            "mfsentrycacheto" => self.entry_cache = seconds(name, need_value(name, value)?)?,
            "mfsnegentrycacheto" => self.neg_entry_cache = seconds(name, need_value(name, value)?)?,
            "mfswritecachesize" => {
                let v = need_value(name, value)?;
                let mib: u64 = v.trim().parse().map_err(|_| bad(name, v, "not a number"))?;
                if mib == 0 {
                    return Err(bad(name, v, "must be at least 1 (MiB)"));
                }
                if mib > 1 << 20 {
                    return Err(bad(name, v, "too large (MiB)"));
                }
                self.write_cache_bytes = mib << 20;
            }
            "mfsioretries" => {
                let v = need_value(name, value)?;
                let tries: u32 = v.trim().parse().map_err(|_| bad(name, v, "not a number"))?;
                if !(1..=1000).contains(&tries) {
                    return Err(bad(name, v, "must be 1 to 1000 tries"));
                }
                self.io_retries = tries;
            }
            "mfsmeta" => {
                no_value(name, value)?;
                self.meta = true;
            }
            "mfsflattrash" => {
                no_value(name, value)?;
                self.flat_trash = true;
            }
            "mfspassword" => self.password = Some(need_value(name, value)?.to_string()),
            _ => return Err(OptionError::Unknown(item.to_string())),
        }
        Ok(())
    }
}

/// Splits `a,b=c,d` at commas; a backslash escapes the next character (`mfspassword=a\,b`).
pub fn split_options(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            ',' => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn opposite(a: KernelFlag, b: KernelFlag) -> bool {
    use KernelFlag::*;
    a == b
        || matches!(
            (a, b),
            (Suid, NoSuid)
                | (NoSuid, Suid)
                | (Dev, NoDev)
                | (NoDev, Dev)
                | (Exec, NoExec)
                | (NoExec, Exec)
                | (Atime, NoAtime)
                | (NoAtime, Atime)
                | (Sync, Async)
                | (Async, Sync)
        )
}

fn no_value(name: &str, value: Option<&str>) -> Result<(), OptionError> {
    match value {
        None => Ok(()),
        Some(_) => Err(OptionError::UnexpectedValue {
            name: name.to_string(),
        }),
    }
}

fn need_value<'a>(name: &str, value: Option<&'a str>) -> Result<&'a str, OptionError> {
    value.ok_or_else(|| OptionError::MissingValue(name.to_string()))
}

fn bad(name: &str, value: &str, why: &'static str) -> OptionError {
    OptionError::BadValue {
        name: name.to_string(),
        value: value.to_string(),
        why,
    }
}

fn seconds(name: &str, v: &str) -> Result<Duration, OptionError> {
    let f: f64 = v.trim().parse().map_err(|_| bad(name, v, "not a number"))?;
    if !f.is_finite() || f < 0.0 {
        return Err(bad(name, v, "must be zero or more seconds"));
    }
    if f > 1e9 {
        return Err(bad(name, v, "too large"));
    }
    Ok(Duration::from_secs_f64(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let o = MountOptions::parse::<&str>(&[]).unwrap();
        assert_eq!(o.attr_cache, Duration::from_secs(1));
        assert_eq!(o.entry_cache, Duration::from_secs(1));
        assert_eq!(o.neg_entry_cache, Duration::ZERO);
        assert_eq!(o.write_cache_bytes, 128 << 20);
        assert_eq!(o.io_retries, 30);
        assert!(!o.read_only && !o.allow_other && o.password.is_none());
    }

    #[test]
    fn ours_and_standard() {
        let o = MountOptions::parse(&[
            "ro,allow_other,mfsattrcacheto=2.5,mfsentrycacheto=0,mfsnegentrycacheto=30",
            "mfswritecachesize=16,mfspassword=se\\,cret,nosuid,nonempty,default_permissions",
            "mfsioretries=5",
        ])
        .unwrap();
        assert!(o.read_only && o.allow_other);
        assert_eq!(o.attr_cache, Duration::from_millis(2500));
        assert_eq!(o.entry_cache, Duration::ZERO);
        assert_eq!(o.neg_entry_cache, Duration::from_secs(30));
        assert_eq!(o.write_cache_bytes, 16 << 20);
        assert_eq!(o.io_retries, 5);
        assert_eq!(o.password.as_deref(), Some("se,cret"));
        assert_eq!(o.flags, vec![KernelFlag::NoSuid]);
    }

    #[test]
    fn later_flag_wins() {
        let o = MountOptions::parse(&["noexec,exec,ro,rw"]).unwrap();
        assert_eq!(o.flags, vec![KernelFlag::Exec]);
        assert!(!o.read_only);
    }

    #[test]
    fn errors() {
        assert_eq!(
            MountOptions::parse(&["bogus"]),
            Err(OptionError::Unknown("bogus".into()))
        );
        assert_eq!(
            MountOptions::parse(&["mfspassword"]),
            Err(OptionError::MissingValue("mfspassword".into()))
        );
        assert!(matches!(
            MountOptions::parse(&["ro=1"]),
            Err(OptionError::UnexpectedValue { .. })
        ));
        assert!(matches!(
            MountOptions::parse(&["mfsattrcacheto=-1"]),
            Err(OptionError::BadValue { .. })
        ));
        assert!(matches!(
            MountOptions::parse(&["mfsattrcacheto=NaN"]),
            Err(OptionError::BadValue { .. })
        ));
        assert!(matches!(
            MountOptions::parse(&["mfswritecachesize=0"]),
            Err(OptionError::BadValue { .. })
        ));
        assert!(matches!(
            MountOptions::parse(&["mfsioretries=0"]),
            Err(OptionError::BadValue { .. })
        ));
    }

    #[test]
    fn split_skips_empty_items() {
        assert_eq!(split_options(",a,,b,"), vec!["a", "b"]);
        assert_eq!(split_options(""), Vec::<String>::new());
    }
}
