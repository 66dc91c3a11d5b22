//! The exports file as written: `ADDRESS PATH [OPTIONS]` lines (MooseFS syntax). User and
//! group names stay names here; the master resolves them on its own host.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// Options that take no value.
pub const FLAGS: [&str; 9] = [
    "ro",
    "readonly",
    "rw",
    "readwrite",
    "alldirs",
    "ignoregid",
    "admin",
    "dynamicip",
    "canchangequota",
];
/// Options that take a value.
pub const VALUED: [&str; 5] = ["maproot", "mapall", "password", "mingoal", "maxgoal"];
/// Stock MooseFS options moose-master refuses.
pub const UNSUPPORTED: [&str; 9] = [
    "minversion",
    "mintrashtime",
    "maxtrashtime",
    "umask",
    "mintrashretention",
    "maxtrashretention",
    "md5pass",
    "disable",
    "sclassgroups",
];

/// What every address error ends with.
pub const ADDRESS_FORMS: &str =
    "addresses are *, A.B.C.D, A.B.C.D/BITS, A.B.C.D/NETMASK or A.B.C.D-E.F.G.H";

/// `USER[:GROUP]` of maproot and mapall, names or numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdSpec {
    pub user: String,
    pub group: Option<String>,
}

/// One option of an exports line, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportOption {
    /// One of [`FLAGS`], spelt as written.
    Flag(&'static str),
    MapRoot(IdSpec),
    MapAll(IdSpec),
    Password(String),
    MinGoal(u8),
    MaxGoal(u8),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionError {
    #[error("option {key} takes no value")]
    TakesNoValue { key: String },
    #[error("option {key} needs a value ({key}=...)")]
    NeedsValue { key: String },
    #[error("{key}={value}: expected USER or USER:GROUP (names or numbers), e.g. {key}=0")]
    BadIds { key: String, value: String },
    #[error("an exports password cannot contain spaces, commas or '#'; choose another")]
    BadPassword,
    #[error("{key} takes a goal from 1 to 9")]
    BadGoal { key: String, value: String },
    #[error("option {key} is not supported by moose-master")]
    Unsupported { key: String },
    #[error("unknown option '{key}'")]
    Unknown { key: String },
    #[error("mingoal {min} is above maxgoal {max}")]
    GoalsCross { min: u8, max: u8 },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("the address is empty")]
    Empty,
    #[error("'{0}' is not an IPv4 address")]
    NotIpv4(String),
    #[error("the range runs backwards ({0} is after {1})")]
    Backwards(String, String),
    #[error("/{0} is too long, a prefix has at most 32 bits")]
    PrefixTooLong(u32),
    #[error("'{0}' is neither a prefix length nor a netmask")]
    NotMask(String),
    #[error("{0} is not a valid netmask")]
    BadNetmask(String),
}

impl ExportOption {
    /// Reads one option (`rw`, `maproot=0`).
    pub fn parse(text: &str) -> Result<ExportOption, OptionError> {
        let (key, value) = match text.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim())),
            None => (text.trim(), None),
        };
        if let Some(flag) = FLAGS.iter().find(|f| **f == key) {
            return match value {
                Some(_) => Err(OptionError::TakesNoValue { key: key.into() }),
                None => Ok(ExportOption::Flag(flag)),
            };
        }
        if UNSUPPORTED.contains(&key) {
            return Err(OptionError::Unsupported { key: key.into() });
        }
        if !VALUED.contains(&key) {
            return Err(OptionError::Unknown { key: key.into() });
        }
        let Some(value) = value.filter(|v| !v.is_empty()) else {
            return Err(OptionError::NeedsValue { key: key.into() });
        };
        let goal = || {
            value
                .parse::<u8>()
                .ok()
                .filter(|g| (1..=9).contains(g))
                .ok_or_else(|| OptionError::BadGoal {
                    key: key.into(),
                    value: value.into(),
                })
        };
        Ok(match key {
            "maproot" => ExportOption::MapRoot(IdSpec::parse(key, value)?),
            "mapall" => ExportOption::MapAll(IdSpec::parse(key, value)?),
            "password" => {
                if value
                    .chars()
                    .any(|c| c.is_whitespace() || c == ',' || c == '#' || c.is_control())
                {
                    return Err(OptionError::BadPassword);
                }
                ExportOption::Password(value.into())
            }
            "mingoal" => ExportOption::MinGoal(goal()?),
            _ => ExportOption::MaxGoal(goal()?),
        })
    }

    pub fn render(&self) -> String {
        match self {
            ExportOption::Flag(f) => f.to_string(),
            ExportOption::MapRoot(ids) => format!("maproot={}", ids.render()),
            ExportOption::MapAll(ids) => format!("mapall={}", ids.render()),
            ExportOption::Password(p) => format!("password={p}"),
            ExportOption::MinGoal(g) => format!("mingoal={g}"),
            ExportOption::MaxGoal(g) => format!("maxgoal={g}"),
        }
    }
}

impl IdSpec {
    fn parse(key: &str, value: &str) -> Result<IdSpec, OptionError> {
        let word = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        };
        let (user, group) = match value.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (value, None),
        };
        if word(user) && group.is_none_or(word) {
            Ok(IdSpec {
                user: user.into(),
                group: group.map(str::to_string),
            })
        } else {
            Err(OptionError::BadIds {
                key: key.into(),
                value: value.into(),
            })
        }
    }

    fn render(&self) -> String {
        match &self.group {
            Some(g) => format!("{}:{g}", self.user),
            None => self.user.clone(),
        }
    }
}

/// Reads a comma-separated option list (empty parts are skipped) and checks mingoal against
/// maxgoal.
pub fn parse_options(text: &str) -> Result<Vec<ExportOption>, OptionError> {
    let options = text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(ExportOption::parse)
        .collect::<Result<Vec<_>, _>>()?;
    let last = |pick: fn(&ExportOption) -> Option<u8>| options.iter().rev().find_map(pick);
    let min = last(|o| match o {
        ExportOption::MinGoal(g) => Some(*g),
        _ => None,
    });
    let max = last(|o| match o {
        ExportOption::MaxGoal(g) => Some(*g),
        _ => None,
    });
    match (min.unwrap_or(1), max.unwrap_or(9)) {
        (min, max) if min > max => Err(OptionError::GoalsCross { min, max }),
        _ => Ok(options),
    }
}

fn ipv4(s: &str) -> Option<u32> {
    s.parse::<Ipv4Addr>().ok().map(u32::from)
}

/// The address forms of exports (and topology) lines, as an inclusive range of IPv4 addresses.
pub fn parse_address(s: &str) -> Result<(u32, u32), AddressError> {
    let ip = |t: &str| ipv4(t.trim()).ok_or_else(|| AddressError::NotIpv4(t.into()));
    if s.is_empty() {
        return Err(AddressError::Empty);
    }
    if s == "*" {
        return Ok((0, u32::MAX));
    }
    if let Some((a, b)) = s.split_once('-') {
        let (lo, hi) = (ip(a)?, ip(b)?);
        if lo > hi {
            return Err(AddressError::Backwards(a.into(), b.into()));
        }
        return Ok((lo, hi));
    }
    if let Some((a, m)) = s.split_once('/') {
        let base = ip(a)?;
        let mask = if let Ok(bits) = m.parse::<u32>() {
            if bits > 32 {
                return Err(AddressError::PrefixTooLong(bits));
            }
            u32::MAX.checked_shl(32 - bits).unwrap_or(0)
        } else {
            let mask = ipv4(m).ok_or_else(|| AddressError::NotMask(m.into()))?;
            if mask.leading_ones() + mask.trailing_zeros() != 32 {
                return Err(AddressError::BadNetmask(m.into()));
            }
            mask
        };
        return Ok((base & mask, (base & mask) | !mask));
    }
    let one = ip(s)?;
    Ok((one, one))
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

/// Whether an exports line for (normalized) `path` admits the (normalized) `subdir`.
pub fn admits_path(path: &str, alldirs: bool, subdir: &str) -> bool {
    subdir == path || (alldirs && (path == "/" || subdir.starts_with(&format!("{path}/"))))
}

/// One line of the exports file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportsLine {
    /// Line number in the file (0 for a line built in code).
    pub line: usize,
    pub address: String,
    /// As written; "." is the meta file system.
    pub path: String,
    pub options: Vec<ExportOption>,
}

/// What is wrong with one line of the exports file.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    #[error("'{0}' has no path; the form is ADDRESS PATH [OPTIONS]")]
    NoPath(String),
    #[error("{0}; {ADDRESS_FORMS}")]
    Address(#[from] AddressError),
    #[error(transparent)]
    Option(#[from] OptionError),
}

#[derive(Debug, thiserror::Error)]
pub enum ExportsError {
    #[error(
        "{}:0: cannot read the exports file: {source}; create it (e.g. a line '* / \
         rw,alldirs,maproot=0') or set EXPORTS_FILENAME",
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
        error: LineError,
    },
}

/// The exports file, line by line as written.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExportsFile {
    pub lines: Vec<ExportsLine>,
}

impl ExportsLine {
    /// Reads one line without its comment; `None` for a blank one.
    pub fn parse(text: &str) -> Result<Option<ExportsLine>, LineError> {
        let content = text.split('#').next().unwrap_or("").trim();
        let mut words = content.split_whitespace();
        let Some(address) = words.next() else {
            return Ok(None);
        };
        let Some(path) = words.next() else {
            return Err(LineError::NoPath(content.into()));
        };
        parse_address(address)?;
        let options = parse_options(&words.collect::<String>())?;
        Ok(Some(ExportsLine {
            line: 0,
            address: address.into(),
            path: path.into(),
            options,
        }))
    }

    pub fn render(&self) -> String {
        let mut out = format!("{} {}", self.address, self.path);
        if !self.options.is_empty() {
            let options: Vec<String> = self.options.iter().map(ExportOption::render).collect();
            out.push(' ');
            out.push_str(&options.join(","));
        }
        out
    }
}

impl ExportsFile {
    pub fn load(path: &Path) -> Result<ExportsFile, ExportsError> {
        let text = std::fs::read_to_string(path).map_err(|source| ExportsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        ExportsFile::parse(path, &text)
    }

    /// Parses the file's text; `path` names the file in errors.
    pub fn parse(path: &Path, text: &str) -> Result<ExportsFile, ExportsError> {
        let mut lines = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let parsed = ExportsLine::parse(raw).map_err(|error| ExportsError::Line {
                path: path.to_path_buf(),
                line: i + 1,
                error,
            })?;
            lines.extend(parsed.map(|l| ExportsLine { line: i + 1, ..l }));
        }
        Ok(ExportsFile { lines })
    }

    /// The file's text: `header` (comment lines), then one line each.
    pub fn render(&self, header: &str) -> String {
        let mut out = header.to_string();
        for l in &self.lines {
            out.push_str(&l.render());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn dot_dot_is_resolved_and_never_climbs_above_the_root() {
        assert_eq!(normalize_path("/data/../secret"), "/secret");
        assert_eq!(normalize_path("data/./a//b/"), "/data/a/b");
        assert_eq!(normalize_path("/../../etc"), "/etc");
        assert_eq!(normalize_path("/a/b/../.."), "/");
        assert_eq!(normalize_path(""), "/");
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
    fn option_errors_are_typed() {
        let err = |t: &str| parse_options(t).unwrap_err();
        assert_eq!(err("rw=1"), OptionError::TakesNoValue { key: "rw".into() });
        assert_eq!(
            err("maproot"),
            OptionError::NeedsValue {
                key: "maproot".into()
            }
        );
        assert_eq!(
            err("umask=022"),
            OptionError::Unsupported {
                key: "umask".into()
            }
        );
        assert_eq!(
            err("alldir"),
            OptionError::Unknown {
                key: "alldir".into()
            }
        );
        assert_eq!(
            err("mingoal=3,maxgoal=2"),
            OptionError::GoalsCross { min: 3, max: 2 }
        );
        assert_eq!(
            err("mingoal=0").to_string(),
            "mingoal takes a goal from 1 to 9"
        );
        assert!(matches!(err("mapall=a b"), OptionError::BadIds { .. }));
    }

    fn option() -> impl Strategy<Value = ExportOption> {
        let ids = ("[a-z0-9_.-]{1,8}", proptest::option::of("[a-z0-9_.-]{1,8}"))
            .prop_map(|(user, group)| IdSpec { user, group });
        prop_oneof![
            prop::sample::select(FLAGS.to_vec()).prop_map(ExportOption::Flag),
            ids.clone().prop_map(ExportOption::MapRoot),
            ids.prop_map(ExportOption::MapAll),
            "[!-~&&[^,#=]]{1,12}".prop_map(ExportOption::Password),
            (1u8..=9).prop_map(ExportOption::MinGoal),
            (1u8..=9).prop_map(ExportOption::MaxGoal),
        ]
    }

    fn line() -> impl Strategy<Value = ExportsLine> {
        let address = prop_oneof![
            Just("*".to_string()),
            any::<[u8; 4]>().prop_map(|a| Ipv4Addr::from(a).to_string()),
            (any::<[u8; 4]>(), 0u8..=32)
                .prop_map(|(a, bits)| format!("{}/{bits}", Ipv4Addr::from(a))),
        ];
        let options =
            proptest::collection::vec(option(), 0..5).prop_filter("mingoal above maxgoal", |o| {
                parse_options(
                    &o.iter()
                        .map(ExportOption::render)
                        .collect::<Vec<_>>()
                        .join(","),
                )
                .is_ok()
            });
        (address, "/[a-z0-9/._-]{0,12}|\\.", options).prop_map(|(address, path, options)| {
            ExportsLine {
                line: 0,
                address,
                path,
                options,
            }
        })
    }

    proptest! {
        #[test]
        fn exports_file_round_trips(lines in proptest::collection::vec(line(), 0..6)) {
            let file = ExportsFile { lines };
            let path = Path::new("e.cfg");
            let mut again = ExportsFile::parse(path, &file.render("# generated\n")).unwrap();
            for l in &mut again.lines {
                l.line = 0;
            }
            prop_assert_eq!(again, file);
        }
    }
}
