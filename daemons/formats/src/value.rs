//! The types a config key can have: how each reads its text and writes itself back, so that
//! rendering a value and parsing the text gives the same value.

use std::path::PathBuf;

use crate::units;

/// One config value type.
pub trait CfgValue: Sized + Clone {
    /// How the key table's docs name the type.
    const KIND: &'static str;
    /// The unit range messages name (`at least 1 second`).
    const UNIT: &'static str = "";
    /// An empty value is refused (a host to connect to, a secret).
    const NON_EMPTY: bool = false;

    /// Reads a value; the error says what was expected.
    fn parse(text: &str) -> Result<Self, String>;
    /// Writes the value as a config file holds it.
    fn render(&self) -> String;
    /// The number a key's range is checked against; none for text.
    fn magnitude(&self) -> Option<f64> {
        None
    }
}

impl CfgValue for u64 {
    const KIND: &'static str = "number";
    fn parse(text: &str) -> Result<u64, String> {
        text.parse().map_err(|_| "expected a whole number".into())
    }
    fn render(&self) -> String {
        self.to_string()
    }
    fn magnitude(&self) -> Option<f64> {
        Some(*self as f64)
    }
}

/// A TCP port.
impl CfgValue for u16 {
    const KIND: &'static str = "port";
    fn parse(text: &str) -> Result<u16, String> {
        match text.parse::<u16>() {
            Ok(p) if p > 0 => Ok(p),
            _ => Err("expected a port number from 1 to 65535".into()),
        }
    }
    fn render(&self) -> String {
        self.to_string()
    }
}

/// A decimal number (never NaN or infinite).
impl CfgValue for f64 {
    const KIND: &'static str = "decimal";
    fn parse(text: &str) -> Result<f64, String> {
        text.parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| "expected a number such as 2.5".into())
    }
    fn render(&self) -> String {
        // Rust prints the shortest text that reads back as the same f64.
        self.to_string()
    }
    fn magnitude(&self) -> Option<f64> {
        Some(*self)
    }
}

/// Text as written (host names, user names, labels).
impl CfgValue for String {
    const KIND: &'static str = "text";
    fn parse(text: &str) -> Result<String, String> {
        Ok(text.to_string())
    }
    fn render(&self) -> String {
        self.clone()
    }
}

/// A path as written; a relative one is taken relative to the config file's folder when used
/// ([`crate::Config::resolve`]).
impl CfgValue for PathBuf {
    const KIND: &'static str = "path";
    fn parse(text: &str) -> Result<PathBuf, String> {
        Ok(PathBuf::from(text))
    }
    fn render(&self) -> String {
        self.display().to_string()
    }
}

/// Text that must not be empty: a host to connect to, the cluster secret.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Name(pub String);

impl CfgValue for Name {
    const KIND: &'static str = "text";
    const NON_EMPTY: bool = true;
    fn parse(text: &str) -> Result<Name, String> {
        Ok(Name(text.to_string()))
    }
    fn render(&self) -> String {
        self.0.clone()
    }
}

/// A duration in seconds; written as `30`, `1.5h` or `1d12h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Seconds(pub u64);

impl CfgValue for Seconds {
    const KIND: &'static str = "duration";
    const UNIT: &'static str = "second";
    fn parse(text: &str) -> Result<Seconds, String> {
        units::parse_duration_secs(text).map(Seconds)
    }
    fn render(&self) -> String {
        self.0.to_string()
    }
    fn magnitude(&self) -> Option<f64> {
        Some(self.0 as f64)
    }
}

/// A size in bytes; written as `4096`, `256MiB` or `1.5TB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Bytes(pub u64);

impl CfgValue for Bytes {
    const KIND: &'static str = "size";
    const UNIT: &'static str = "byte";
    fn parse(text: &str) -> Result<Bytes, String> {
        units::parse_size(text).map(Bytes)
    }
    fn render(&self) -> String {
        units::format_size_exact(self.0)
    }
    fn magnitude(&self) -> Option<f64> {
        Some(self.0 as f64)
    }
}

/// `FILE_UMASK`: octal permission bits to clear, `027`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Umask(pub u32);

impl CfgValue for Umask {
    const KIND: &'static str = "octal mask";
    fn parse(text: &str) -> Result<Umask, String> {
        u32::from_str_radix(text, 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .map(Umask)
            .ok_or_else(|| "expected octal permission bits from 000 to 777, e.g. 027".into())
    }
    fn render(&self) -> String {
        format!("{:03o}", self.0)
    }
}

/// A stock MooseFS per-storage-class list like `2,1,1,4`; only the first number is used.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClassLimits(pub Vec<u64>);

impl ClassLimits {
    /// The number that applies (the first class's).
    pub fn first(&self) -> u64 {
        self.0.first().copied().unwrap_or(0)
    }
}

impl CfgValue for ClassLimits {
    const KIND: &'static str = "number list";
    fn parse(text: &str) -> Result<ClassLimits, String> {
        text.split(',')
            .map(|n| n.trim().parse::<u64>())
            .collect::<Result<Vec<_>, _>>()
            .map(ClassLimits)
            .map_err(|_| "expected whole numbers separated by commas, e.g. 4 or 2,1,1,4".into())
    }
    fn render(&self) -> String {
        self.0
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }
    fn magnitude(&self) -> Option<f64> {
        Some(self.first() as f64)
    }
}

/// The values a key admits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Range {
    Any,
    AtLeast(f64),
    Above(f64),
    Within(f64, f64),
}

impl Range {
    pub fn admits(self, x: f64) -> bool {
        match self {
            Range::Any => true,
            Range::AtLeast(min) => x >= min,
            Range::Above(min) => x > min,
            Range::Within(min, max) => (min..=max).contains(&x),
        }
    }

    /// `at least 1 second`, `from 1 to 9`; empty for [`Range::Any`].
    pub fn describe(self, unit: &str) -> String {
        let with_unit = |n: f64| match unit {
            "" => n.to_string(),
            u if n == 1.0 => format!("{n} {u}"),
            u => format!("{n} {u}s"),
        };
        match self {
            Range::Any => String::new(),
            Range::AtLeast(min) => format!("at least {}", with_unit(min)),
            Range::Above(min) => format!("above {}", with_unit(min)),
            Range::Within(min, max) => format!("from {min} to {}", with_unit(max)),
        }
    }
}
