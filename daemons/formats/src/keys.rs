//! The key table: every key a daemon reads, declared once with its type, default, range and
//! one-line doc. [`key_set!`] turns one declaration into the typed struct, the table the
//! docs and the unknown-key check use, the reader and the writer.

use crate::cfg::{CfgError, Config};
use crate::value::Range;

/// One row of a key table.
#[derive(Debug, Clone, Copy)]
pub struct KeySpec {
    pub name: &'static str,
    /// The value type, as the docs name it.
    pub kind: &'static str,
    /// The default, as a config file would write it.
    pub default: fn() -> String,
    pub range: Range,
    pub doc: &'static str,
}

/// The keys of one file section, typed: each field is `None` when the file does not set it.
pub trait KeySet: Default + Clone + PartialEq + std::fmt::Debug {
    const KEYS: &'static [KeySpec];
    const NAMES: &'static [&'static str];
    /// Reads the keys of the table from a parsed file.
    fn from_config(cfg: &Config) -> Result<Self, CfgError>;
    /// Appends `KEY = VALUE` for every key that is set, in table order.
    fn render_into(&self, out: &mut String);
}

/// Declares a [`KeySet`]:
/// `field: Type = "KEY", default EXPR, range RANGE, "doc";` per key. Every field is an
/// `Option<Type>` (set in the file or not) with an accessor of the same name that gives the
/// default when it is not set.
#[macro_export]
macro_rules! key_set {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $field:ident: $ty:ty = $key:literal, default $default:expr, range $range:expr,
               $doc:literal; )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Default)]
        pub struct $name {
            $( #[doc = $doc] pub $field: Option<$ty>, )*
        }

        impl $name {
            $(
                #[doc = $doc]
                pub fn $field(&self) -> $ty {
                    self.$field.clone().unwrap_or_else(|| $default)
                }
            )*
        }

        impl $crate::keys::KeySet for $name {
            const KEYS: &'static [$crate::keys::KeySpec] = &[
                $( $crate::keys::KeySpec {
                    name: $key,
                    kind: <$ty as $crate::value::CfgValue>::KIND,
                    default: || $crate::value::CfgValue::render(&{ let d: $ty = $default; d }),
                    range: $range,
                    doc: $doc,
                }, )*
            ];
            const NAMES: &'static [&'static str] = &[$($key),*];

            fn from_config(cfg: &$crate::cfg::Config) -> Result<Self, $crate::cfg::CfgError> {
                Ok($name {
                    $( $field: cfg.typed::<$ty>($key, $range, $doc)?, )*
                })
            }

            fn render_into(&self, out: &mut String) {
                $(
                    if let Some(v) = &self.$field {
                        out.push_str(&format!(
                            "{} = {}\n",
                            $key,
                            $crate::value::CfgValue::render(v)
                        ));
                    }
                )*
            }
        }
    };
}

/// A whole daemon config file: the keys every daemon reads, this daemon's own keys, and the
/// stock MooseFS keys it ignores (kept so that the file renders back whole).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DaemonCfg<K> {
    pub common: crate::daemon_cfg::CommonKeys,
    pub keys: K,
    pub stock: Vec<(String, String)>,
}

/// Which daemon reads a [`KeySet`]: names the stock keys it tolerates.
pub trait DaemonKeys: KeySet {
    /// The program, e.g. `moose-master`.
    const PROGRAM: &'static str;
}

impl<K: DaemonKeys> DaemonCfg<K> {
    /// Every key this daemon reads: the common ones first.
    pub fn key_names() -> Vec<&'static str> {
        let common = <crate::daemon_cfg::CommonKeys as KeySet>::NAMES;
        common.iter().chain(K::NAMES).copied().collect()
    }

    /// Every row of this daemon's key table.
    pub fn key_table() -> Vec<KeySpec> {
        let common = <crate::daemon_cfg::CommonKeys as KeySet>::KEYS;
        common.iter().chain(K::KEYS).copied().collect()
    }

    /// Reads a file already parsed and checked for unknown keys
    /// ([`Config::check_unknown_keys`]).
    pub fn from_config(cfg: &Config) -> Result<Self, CfgError> {
        Ok(DaemonCfg {
            common: crate::daemon_cfg::CommonKeys::from_config(cfg)?,
            keys: K::from_config(cfg)?,
            stock: cfg.unknown_values(),
        })
    }

    /// Parses config text as the daemon does; `path` names the file in errors.
    pub fn parse(path: &std::path::Path, text: &str) -> Result<Self, CfgError> {
        let mut cfg = Config::parse(path, text, &Self::key_names());
        cfg.check_unknown_keys(&crate::stock_keys::for_daemon(K::PROGRAM))?;
        Self::from_config(&cfg)
    }

    /// The file's text: `header` (comment lines), then every key that is set.
    pub fn render(&self, header: &str) -> String {
        let mut out = header.to_string();
        self.common.render_into(&mut out);
        self.keys.render_into(&mut out);
        for (key, value) in &self.stock {
            out.push_str(&format!("{key} = {value}\n"));
        }
        out
    }
}

/// The markdown table of one daemon's keys, as docs/operations.md shows it.
pub fn markdown_table(program: &str, keys: &[KeySpec]) -> String {
    let mut out = format!(
        "**{program}**\n\n| key | type | default | values | what |\n|---|---|---|---|---|\n"
    );
    for k in keys {
        let default = (k.default)();
        let unit = match k.kind {
            "duration" => "second",
            _ => "",
        };
        out.push_str(&format!(
            "| `{}` | {} | {} | {} | {} |\n",
            k.name,
            k.kind,
            if default.is_empty() {
                "none".to_string()
            } else {
                format!("`{default}`")
            },
            k.range.describe(unit),
            k.doc
        ));
    }
    out
}
