//! `KEY = VALUE` config files, as MooseFS writes them.
//!
//! A line whose first non-blank character is `#` is a comment; ` #` after a value starts an
//! inline comment (stock MooseFS would silently keep it as part of the value). Repeated keys
//! and malformed lines are reported as warnings with their line number; unknown keys are
//! kept apart (see [`Config::unknown_keys`]) so that the daemon can refuse them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::value::{CfgValue, Range};

#[derive(Debug, thiserror::Error)]
pub enum CfgError {
    #[error("cannot read config file {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}: {key} = {value}: {reason}", .path.display())]
    BadValue {
        path: PathBuf,
        line: usize,
        key: String,
        value: String,
        reason: String,
    },
    #[error("{}:{line}: {key} must be {range} (the file says {key} = {value})", .path.display())]
    OutOfRange {
        path: PathBuf,
        line: usize,
        key: String,
        value: String,
        range: String,
    },
    #[error(
        "{}:{line}: {key} is empty; give it a value ({doc}) or remove the line",
        .path.display()
    )]
    Empty {
        path: PathBuf,
        line: usize,
        key: String,
        doc: String,
    },
    /// Keys neither this daemon nor stock MooseFS knows, one line each.
    #[error("{}", unknown_key_lines(.path, .keys))]
    UnknownKeys {
        path: PathBuf,
        keys: Vec<UnknownKey>,
    },
}

#[derive(Debug, Clone)]
struct Entry {
    value: String,
    line: usize,
}

/// A parsed config file.
#[derive(Debug, Clone, Default)]
pub struct Config {
    path: PathBuf,
    entries: BTreeMap<String, Entry>,
    warnings: Vec<String>,
    unknown: Vec<UnknownKey>,
}

/// A key the daemon does not read, where it is and the known key it most resembles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownKey {
    pub key: String,
    pub line: usize,
    pub suggestion: Option<String>,
}

impl Config {
    /// Reads and parses `path`. `known_keys` lists the keys this daemon understands; others
    /// are listed by [`Config::unknown_keys`].
    pub fn load(path: &Path, known_keys: &[&str]) -> Result<Config, CfgError> {
        let text = std::fs::read_to_string(path).map_err(|source| CfgError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Config::parse(path, &text, known_keys))
    }

    /// Parses config text; `path` is only used in messages.
    pub fn parse(path: &Path, text: &str, known_keys: &[&str]) -> Config {
        let mut cfg = Config {
            path: path.to_path_buf(),
            ..Default::default()
        };
        let where_ = |line: usize| format!("{}:{}", path.display(), line);
        for (idx, raw) in text.lines().enumerate() {
            let line = idx + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let Some((key, value)) = trimmed.split_once('=') else {
                cfg.warnings.push(format!(
                    "{}: bad definition '{trimmed}' (expected KEY = VALUE); line ignored",
                    where_(line)
                ));
                continue;
            };
            let key = key.trim();
            // Trimmed first: a value may start with '#' (`WORKING_USER = #1000`).
            let value = strip_inline_comment(value.trim()).trim();
            if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                cfg.warnings.push(format!(
                    "{}: bad key name '{key}'; line ignored",
                    where_(line)
                ));
                continue;
            }
            if !known_keys.contains(&key) {
                cfg.unknown.push(UnknownKey {
                    key: key.to_string(),
                    line,
                    suggestion: crate::suggest::suggest(key, known_keys).map(str::to_string),
                });
            }
            if let Some(prev) = cfg.entries.get(key) {
                cfg.warnings.push(format!(
                    "{}: {key} is set again (first at line {}); the last value wins",
                    where_(line),
                    prev.line
                ));
            }
            cfg.entries.insert(
                key.to_string(),
                Entry {
                    value: value.to_string(),
                    line,
                },
            );
        }
        cfg
    }

    /// A config with no file behind it (every key at its default).
    pub fn empty(path: &Path) -> Config {
        Config {
            path: path.to_path_buf(),
            ..Default::default()
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Problems found while parsing, each naming file and line.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Keys of the file that the daemon does not read, in file order.
    pub fn unknown_keys(&self) -> &[UnknownKey] {
        &self.unknown
    }

    /// Sorts the unknown keys: a key stock MooseFS knows (`stock_keys`) is ignored with a
    /// warning; any other one is an error naming file, line and the nearest known key.
    pub fn check_unknown_keys(&mut self, stock_keys: &[&str]) -> Result<(), CfgError> {
        let (stock, unknown): (Vec<&UnknownKey>, Vec<&UnknownKey>) = self
            .unknown
            .iter()
            .partition(|u| stock_keys.contains(&u.key.as_str()));
        for u in stock {
            self.warnings.push(format!(
                "{}:{}: {} is a stock MooseFS key that this daemon does not use; it is ignored",
                self.path.display(),
                u.line,
                u.key
            ));
        }
        if unknown.is_empty() {
            Ok(())
        } else {
            Err(CfgError::UnknownKeys {
                path: self.path.clone(),
                keys: unknown.into_iter().cloned().collect(),
            })
        }
    }

    /// The value of a key of the key table, when the file sets it: typed, range-checked.
    pub fn typed<T: CfgValue>(
        &self,
        key: &str,
        range: Range,
        doc: &str,
    ) -> Result<Option<T>, CfgError> {
        let Some(entry) = self.entries.get(key) else {
            return Ok(None);
        };
        if T::NON_EMPTY && entry.value.is_empty() {
            return Err(CfgError::Empty {
                path: self.path.clone(),
                line: entry.line,
                key: key.to_string(),
                doc: doc.to_string(),
            });
        }
        let value = T::parse(&entry.value).map_err(|reason| self.bad(key, reason))?;
        match value.magnitude() {
            Some(x) if !range.admits(x) => Err(CfgError::OutOfRange {
                path: self.path.clone(),
                line: entry.line,
                key: key.to_string(),
                value: entry.value.clone(),
                range: range.describe(T::UNIT),
            }),
            _ => Ok(Some(value)),
        }
    }

    /// A path from the file: relative paths are taken relative to the config file's folder.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.path.parent().map(|d| d.join(p)).unwrap_or(p.into())
        }
    }

    /// Values of the keys listed by [`Config::unknown_keys`], in file order, each once.
    pub fn unknown_values(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for u in &self.unknown {
            if out.iter().all(|(k, _)| *k != u.key) {
                out.push((u.key.clone(), self.get(&u.key).unwrap_or("").to_string()));
            }
        }
        out
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.get(key).map(|e| e.value.as_str())
    }

    fn bad(&self, key: &str, reason: String) -> CfgError {
        let e = &self.entries[key];
        CfgError::BadValue {
            path: self.path.clone(),
            line: e.line,
            key: key.to_string(),
            value: e.value.clone(),
            reason,
        }
    }
}

fn unknown_key_lines(path: &Path, keys: &[UnknownKey]) -> String {
    let line = |u: &UnknownKey| {
        let hint = u
            .suggestion
            .as_ref()
            .map(|k| format!(" (did you mean {k}?)"))
            .unwrap_or_default();
        format!(
            "{}:{}: unknown key {}{hint}; fix or remove the line",
            path.display(),
            u.line,
            u.key
        )
    };
    keys.iter().map(line).collect::<Vec<_>>().join("\n")
}

fn strip_inline_comment(value: &str) -> &str {
    let bytes = value.as_bytes();
    for i in 1..bytes.len() {
        if bytes[i] == b'#' && (bytes[i - 1] == b' ' || bytes[i - 1] == b'\t') {
            return &value[..i];
        }
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: &[&str] = &["DATA_PATH", "MASTER_PORT", "WORKING_USER"];

    #[test]
    fn parses_moosefs_syntax() {
        let text = "# comment\n  DATA_PATH = /var/lib/mfs  \nMASTER_PORT=9420 # inline\n\n";
        let cfg = Config::parse(Path::new("x.cfg"), text, KEYS);
        assert_eq!(cfg.get("DATA_PATH"), Some("/var/lib/mfs"));
        let port = cfg.typed::<u16>("MASTER_PORT", Range::Any, "port");
        assert_eq!(port.unwrap(), Some(9420));
        assert!(cfg.warnings().is_empty(), "{:?}", cfg.warnings());
    }

    #[test]
    fn warns_with_line_numbers() {
        let text = "DATA_PAHT = /x\nnonsense\nDATA_PATH = /a\nDATA_PATH = /b\n";
        let cfg = Config::parse(Path::new("m.cfg"), text, KEYS);
        let w = cfg.warnings().join("\n");
        assert!(w.contains("m.cfg:2: bad definition"), "{w}");
        assert!(
            w.contains("m.cfg:4: DATA_PATH is set again (first at line 3)"),
            "{w}"
        );
        assert_eq!(cfg.get("DATA_PATH"), Some("/b"));
    }

    #[test]
    fn a_typo_is_an_error_and_a_stock_key_a_warning() {
        let text = "DATA_PAHT = /x\nNICE_LEVEL = -19\nMASTER_PORT = 1\n";
        let mut cfg = Config::parse(Path::new("m.cfg"), text, KEYS);
        let err = cfg.check_unknown_keys(&["NICE_LEVEL"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "m.cfg:1: unknown key DATA_PAHT (did you mean DATA_PATH?); fix or remove the line"
        );
        let w = cfg.warnings().join("\n");
        assert!(
            w.contains("m.cfg:2: NICE_LEVEL is a stock MooseFS key"),
            "{w}"
        );
        let mut clean = Config::parse(Path::new("m.cfg"), "NICE_LEVEL = 1\n", KEYS);
        assert!(clean.check_unknown_keys(&["NICE_LEVEL"]).is_ok());
    }

    #[test]
    fn bad_values_name_file_and_line() {
        let cfg = Config::parse(Path::new("c.cfg"), "\nMASTER_PORT = abc\n", KEYS);
        let err = cfg
            .typed::<u16>("MASTER_PORT", Range::Any, "port")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("c.cfg:2: MASTER_PORT = abc:"), "{err}");
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics(text in "(?s).{0,400}") {
            let cfg = Config::parse(Path::new("f.cfg"), &text, KEYS);
            let _ = cfg.typed::<u16>("MASTER_PORT", Range::Any, "");
            let _ = cfg.typed::<crate::value::Bytes>("DATA_PATH", Range::AtLeast(1.0), "");
        }
    }
}
