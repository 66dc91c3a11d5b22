//! The hdd file: one data folder per line.
//!
//! Line syntax: `[PREFIX]PATH [SPACE-OPTION]`, `#` starts a comment. Prefix `*` marks the
//! folder for removal (it keeps serving reads, gets no new chunks); `<`, `>` and `~` are
//! accepted with a warning. Space option: `1.5TiB` / `60%` = use at most this, `-5GiB` /
//! `-10%` = keep this much free.

use std::path::{Path, PathBuf};

use crate::units::{format_size_exact, parse_size};

/// An amount of space: bytes, or a share of the file system's size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Amount {
    Bytes(u64),
    Percent(f64),
}

impl Amount {
    /// The bytes this amount stands for on a file system of `fs_total` bytes.
    pub fn of(self, fs_total: u64) -> u64 {
        match self {
            Amount::Bytes(b) => b,
            Amount::Percent(p) => (fs_total as f64 * p / 100.0) as u64,
        }
    }
}

/// The space option of an hdd line.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum SpaceLimit {
    /// Whole file system minus HDD_LEAVE_SPACE_DEFAULT.
    #[default]
    Default,
    /// `1.5TiB`, `60%`: use at most this much for chunks.
    UseAtMost(Amount),
    /// `-5GiB`, `-10%`: keep this much of the file system free.
    KeepFree(Amount),
}

/// One line of the hdd file.
#[derive(Debug, Clone, PartialEq)]
pub struct HddEntry {
    pub path: PathBuf,
    pub line: usize,
    pub marked_for_removal: bool,
    pub limit: SpaceLimit,
}

/// A parsed hdd file.
#[derive(Debug, Clone, Default)]
pub struct HddFile {
    pub entries: Vec<HddEntry>,
    /// Accepted but unsupported things, each naming file and line.
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum HddError {
    #[error(
        "cannot read hdd file {} (HDD_CONF_FILENAME): {source}; create it with one data folder \
         per line, e.g. /mnt/hdd1",
        .path.display()
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}: {error}", .path.display())]
    Line {
        path: PathBuf,
        line: usize,
        error: HddLineError,
    },
    #[error(
        "hdd file {} lists no data folders; add one folder per line, e.g. /mnt/hdd1",
        .path.display()
    )]
    Empty { path: PathBuf },
}

/// What is wrong with one line of the hdd file.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HddLineError {
    #[error(
        "bad space option '{option}': {error} (examples: 1.5TiB or 60% = use at most this, \
         -5GiB or -10% = keep this much free)"
    )]
    SpaceOption { option: String, error: LimitError },
    #[error("the data folder path is missing")]
    NoFolder,
    #[error("folder {} is listed twice (first at line {first})", .folder.display())]
    Twice { folder: PathBuf, first: usize },
}

/// Reads and parses the hdd file.
pub fn load(path: &Path) -> Result<HddFile, HddError> {
    let text = std::fs::read_to_string(path).map_err(|source| HddError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &text)
}

/// Parses hdd file text; relative folders are taken relative to the file's folder.
pub fn parse(path: &Path, text: &str) -> Result<HddFile, HddError> {
    let base = path.parent().unwrap_or(Path::new(""));
    let mut out = HddFile::default();
    for (idx, raw) in text.lines().enumerate() {
        let line = idx + 1;
        let err = |error: HddLineError| HddError::Line {
            path: path.to_path_buf(),
            line,
            error,
        };
        let content = strip_comment(raw).trim();
        if content.is_empty() {
            continue;
        }
        let mut marked = false;
        let mut rest = content;
        while let Some(c) = rest.chars().next() {
            match c {
                '*' => marked = true,
                '<' | '>' | '~' => out.warnings.push(format!(
                    "{}:{line}: prefix '{c}' ({}) is not supported yet; the folder is used as a \
                     normal disk",
                    path.display(),
                    prefix_meaning(c)
                )),
                _ => break,
            }
            rest = &rest[c.len_utf8()..];
        }
        let rest = rest.trim_start();
        let (folder, limit) = match rest.rsplit_once([' ', '\t']) {
            Some((folder, option)) => {
                let limit = SpaceLimit::parse(option).map_err(|error| {
                    err(HddLineError::SpaceOption {
                        option: option.to_string(),
                        error,
                    })
                })?;
                (folder.trim_end(), limit)
            }
            None => (rest, SpaceLimit::Default),
        };
        if folder.is_empty() {
            return Err(err(HddLineError::NoFolder));
        }
        let folder = Path::new(folder);
        // Rebuilding from components drops trailing slashes and `.` parts.
        let full: PathBuf = if folder.is_absolute() {
            folder.components().collect()
        } else {
            base.join(folder).components().collect()
        };
        if let Some(prev) = out.entries.iter().find(|e| e.path == full) {
            return Err(err(HddLineError::Twice {
                folder: full,
                first: prev.line,
            }));
        }
        out.entries.push(HddEntry {
            path: full,
            line,
            marked_for_removal: marked,
            limit,
        });
    }
    if out.entries.is_empty() {
        return Err(HddError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(out)
}

fn prefix_meaning(c: char) -> &'static str {
    match c {
        '<' => "move chunks to the other disks",
        '>' => "pull chunks from the other disks",
        _ => "compressed file system",
    }
}

/// Drops a comment: the whole line if it starts with `#`, else from a `#` after a blank.
fn strip_comment(line: &str) -> &str {
    if line.trim_start().starts_with('#') {
        return "";
    }
    let bytes = line.as_bytes();
    for i in 1..bytes.len() {
        if bytes[i] == b'#' && (bytes[i - 1] == b' ' || bytes[i - 1] == b'\t') {
            return &line[..i];
        }
    }
    line
}

/// What is wrong with a space option.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("'=' options (disk shared with other data) are not supported")]
    SharedDisk,
    #[error("'{0}' is not a percentage")]
    NotPercentage(String),
    #[error("a percentage must be above 0 and at most 100")]
    PercentOutOfRange,
    #[error("{0}")]
    NotSize(String),
    #[error("a limit of 0 bytes leaves no room for chunks")]
    Zero,
}

impl SpaceLimit {
    /// Reads a space option: `1.5TiB` or `60%` (use at most), `-5GiB` or `-10%` (keep free).
    pub fn parse(option: &str) -> Result<SpaceLimit, LimitError> {
        if option.starts_with('=') {
            return Err(LimitError::SharedDisk);
        }
        let (keep_free, body) = match option.strip_prefix('-') {
            Some(b) => (true, b),
            None => (false, option),
        };
        let amount = match body.strip_suffix('%') {
            Some(num) => {
                let p: f64 = num
                    .parse()
                    .map_err(|_| LimitError::NotPercentage(body.into()))?;
                if !(p > 0.0 && p <= 100.0) {
                    return Err(LimitError::PercentOutOfRange);
                }
                Amount::Percent(p)
            }
            None => Amount::Bytes(parse_size(body).map_err(LimitError::NotSize)?),
        };
        if keep_free {
            Ok(SpaceLimit::KeepFree(amount))
        } else if amount == Amount::Bytes(0) {
            Err(LimitError::Zero)
        } else {
            Ok(SpaceLimit::UseAtMost(amount))
        }
    }

    /// The option as an hdd line writes it; empty for [`SpaceLimit::Default`].
    pub fn render(&self) -> String {
        let amount = |a: &Amount| match a {
            Amount::Bytes(b) => format_size_exact(*b),
            Amount::Percent(p) => format!("{p}%"),
        };
        match self {
            SpaceLimit::Default => String::new(),
            SpaceLimit::UseAtMost(a) => amount(a),
            SpaceLimit::KeepFree(a) => format!("-{}", amount(a)),
        }
    }
}

impl HddFile {
    /// The file's text: `header` (comment lines), then one line per folder.
    pub fn render(&self, header: &str) -> String {
        let mut out = header.to_string();
        for e in &self.entries {
            if e.marked_for_removal {
                out.push('*');
            }
            out.push_str(&e.path.display().to_string());
            let limit = e.limit.render();
            if !limit.is_empty() {
                out.push(' ');
                out.push_str(&limit);
            }
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn parse_ok(text: &str) -> HddFile {
        parse(Path::new("/etc/moosefs/hdd.cfg"), text).unwrap()
    }

    fn parse_err(text: &str) -> String {
        parse(Path::new("/etc/moosefs/hdd.cfg"), text)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn all_line_forms() {
        let f = parse_ok(
            "# data folders\n\
             /mnt/hdd1\n\
             \n\
             */mnt/hdd2   # leaving soon\n\
             /mnt/hdd3 1.5TiB\n\
             /mnt/hdd4\t60%\n\
             /mnt/hdd5 -5GiB\n\
             /mnt/hdd6 -10%\n\
             relative/hdd7\n\
             <~/mnt/hdd8\n",
        );
        let got: Vec<(&str, bool, SpaceLimit, usize)> = f
            .entries
            .iter()
            .map(|e| {
                (
                    e.path.to_str().unwrap(),
                    e.marked_for_removal,
                    e.limit,
                    e.line,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("/mnt/hdd1", false, SpaceLimit::Default, 2),
                ("/mnt/hdd2", true, SpaceLimit::Default, 4),
                (
                    "/mnt/hdd3",
                    false,
                    SpaceLimit::UseAtMost(Amount::Bytes(3 << 39)),
                    5
                ),
                (
                    "/mnt/hdd4",
                    false,
                    SpaceLimit::UseAtMost(Amount::Percent(60.0)),
                    6
                ),
                (
                    "/mnt/hdd5",
                    false,
                    SpaceLimit::KeepFree(Amount::Bytes(5 << 30)),
                    7
                ),
                (
                    "/mnt/hdd6",
                    false,
                    SpaceLimit::KeepFree(Amount::Percent(10.0)),
                    8
                ),
                ("/etc/moosefs/relative/hdd7", false, SpaceLimit::Default, 9),
                ("/mnt/hdd8", false, SpaceLimit::Default, 10),
            ]
        );
        assert_eq!(f.warnings.len(), 2, "{:?}", f.warnings);
        assert!(f.warnings[0].starts_with("/etc/moosefs/hdd.cfg:10: prefix '<'"));
        assert!(
            f.warnings[1].contains("prefix '~'") && f.warnings[1].contains("not supported yet")
        );
    }

    #[test]
    fn errors_name_file_and_line() {
        let e = parse_err("/mnt/a\n/mnt/b 12X\n");
        assert!(
            e.starts_with("/etc/moosefs/hdd.cfg:2: bad space option '12X'"),
            "{e}"
        );
        let e = parse_err("/mnt/a\n/mnt/b 150%\n");
        assert!(
            e.starts_with("/etc/moosefs/hdd.cfg:2:") && e.contains("at most 100"),
            "{e}"
        );
        let e = parse_err("/mnt/a =50GiB\n");
        assert!(
            e.starts_with("/etc/moosefs/hdd.cfg:1:") && e.contains("'='"),
            "{e}"
        );
        let e = parse_err("/mnt/a 0\n");
        assert!(e.contains("leaves no room"), "{e}");
        let e = parse_err("/mnt/a\n# x\n/mnt/a/\n");
        assert!(
            e.starts_with(
                "/etc/moosefs/hdd.cfg:3: folder /mnt/a is listed twice (first at line 1)"
            ),
            "{e}"
        );
        let e = parse_err("/mnt/a\n*\n");
        assert!(
            e.starts_with("/etc/moosefs/hdd.cfg:2: the data folder path is missing"),
            "{e}"
        );
        let e = parse_err("# nothing\n\n");
        assert!(e.contains("lists no data folders"), "{e}");
    }

    #[test]
    fn missing_file_is_explained() {
        let e = load(Path::new("/nonexistent/moose-hdd.cfg"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cannot read hdd file /nonexistent/moose-hdd.cfg"),
            "{e}"
        );
        assert!(e.contains("one data folder per line"), "{e}");
    }

    fn amount() -> impl Strategy<Value = Amount> {
        prop_oneof![
            (1u64..).prop_map(Amount::Bytes),
            (0.001f64..=100.0).prop_map(Amount::Percent),
        ]
    }

    fn entry() -> impl Strategy<Value = HddEntry> {
        let limit = prop_oneof![
            Just(SpaceLimit::Default),
            amount().prop_map(SpaceLimit::UseAtMost),
            amount().prop_map(SpaceLimit::KeepFree),
        ];
        ("(/[a-z0-9._-]{1,8}){1,3}", any::<bool>(), limit).prop_map(|(path, marked, limit)| {
            HddEntry {
                path: PathBuf::from(path),
                line: 0,
                marked_for_removal: marked,
                limit,
            }
        })
    }

    proptest! {
        #[test]
        fn hdd_file_round_trips(entries in proptest::collection::vec(entry(), 1..5)) {
            // Unique folders: a folder listed twice is an error.
            let mut entries = entries;
            let mut seen = std::collections::HashSet::new();
            entries.retain(|e| seen.insert(e.path.clone()));
            let file = HddFile { entries, warnings: vec![] };
            let mut again = parse(Path::new("/h.cfg"), &file.render("# generated\n")).unwrap();
            for e in &mut again.entries {
                e.line = 0;
            }
            prop_assert_eq!(again.entries, file.entries);
        }
    }
}
