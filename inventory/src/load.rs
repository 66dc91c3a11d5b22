//! Reading an inventory: TOML syntax (every syntax error), unknown keys (every one, with a
//! suggestion), then each table on its own through serde (a wrong type in one host does not hide
//! the problems of the others), then the semantic checks (validate.rs).

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::{DeserializeOwned, IntoDeserializer, Visitor};
use serde::Deserialize;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::error::{Diagnostic, Diags, LoadError, Report};
use crate::model::{
    ChunkserverDoc, ClientDoc, ClusterDoc, DiskDoc, ExportDoc, HostDoc, Inventory, InventoryDoc,
    PortsDoc, SshDoc, TopologyDoc,
};
use crate::validate::{self, suggest};

/// How to load an inventory.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Folder that relative paths (install_dir, data_dir, config_dir, log_dir, disk paths,
    /// mount points) are resolved against; must be absolute. Without it relative paths are
    /// errors.
    pub base: Option<PathBuf>,
    /// Addresses and host names of the machine the console runs on (loopback is always
    /// included). A host with `transport = "local"` whose address is none of these gets a
    /// warning.
    pub this_machine: Vec<String>,
}

/// A valid inventory and the warnings found on the way.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub inventory: Inventory,
    pub warnings: Vec<Diagnostic>,
}

/// Reads and loads an inventory file; messages name it as `path` is written.
pub fn load_file(path: &Path, options: &LoadOptions) -> Result<Loaded, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    load_str(&text, &path.display().to_string(), options)
}

/// Loads inventory text; `source` names the file in messages and in rendered file headers.
pub fn load_str(text: &str, source: &str, options: &LoadOptions) -> Result<Loaded, LoadError> {
    if let Some(base) = &options.base {
        if !base.is_absolute() {
            return Err(LoadError::RelativeBase(base.clone()));
        }
    }
    let mut diags = Diags::new(source, text);
    let inventory = parse_doc(text, &mut diags)
        .map(|(doc, complete)| validate::validate(&doc, complete, options, &mut diags));
    let errors_found = diags.has_errors();
    let Report { errors, warnings } = diags.finish();
    match inventory {
        Some(inventory) if !errors_found => Ok(Loaded {
            inventory,
            warnings,
        }),
        _ => Err(LoadError::Invalid(Report { errors, warnings })),
    }
}

/// The embedded local default ([`crate::LOCAL_DEFAULT`]) with relative paths under `base`.
pub fn load_local_default(base: &Path) -> Result<Loaded, LoadError> {
    let options = LoadOptions {
        base: Some(base.to_path_buf()),
        this_machine: Vec::new(),
    };
    load_str(crate::LOCAL_DEFAULT, "local.toml", &options)
}

/// Parses the text into the document, reporting syntax errors, unknown keys and wrong types.
/// `None` after syntax errors; otherwise the document and whether every table could be read.
fn parse_doc(text: &str, diags: &mut Diags) -> Option<(InventoryDoc, bool)> {
    let (root, syntax_errors) = DeTable::parse_recoverable(text);
    if !syntax_errors.is_empty() {
        for e in &syntax_errors {
            let span = e.span().unwrap_or(0..0);
            diags.error(
                &span,
                format!("TOML syntax: {}; fix the syntax first", e.message()),
            );
        }
        return None;
    }
    let mut root = root.into_inner();
    let mut misspelled = Vec::new();
    strip_unknown(&mut root, Node::Root, None, diags, &mut misspelled);
    let tree = root.clone();
    let mut reader = Reader {
        tree: &tree,
        misspelled: &misspelled,
        diags,
        complete: true,
    };
    let cluster = match root.remove("cluster") {
        None => {
            reader.diags.error(
                &(0..0),
                "no [cluster] table; add one with at least name = \"...\" (see the example \
                 inventories)",
            );
            None
        }
        Some(v) => reader.one::<ClusterDoc>(v, Node::Cluster),
    };
    let doc = InventoryDoc {
        cluster,
        hosts: reader.many::<HostDoc>(root.remove("hosts"), Node::Host),
        exports: reader.many::<ExportDoc>(root.remove("exports"), Node::Export),
        topology: reader.many::<TopologyDoc>(root.remove("topology"), Node::Topology),
    };
    let complete = reader.complete;
    Some((doc, complete))
}

/// Deserializes tables one by one, reporting each failure.
struct Reader<'t, 'd, 'a> {
    /// The whole (unknown-key-free) document, to name the key a serde error points at.
    tree: &'t DeTable<'t>,
    /// Required keys reported as misspelled, by table span: their "missing" error is redundant.
    misspelled: &'t [(Range<usize>, &'static str)],
    diags: &'d mut Diags<'a>,
    complete: bool,
}

impl Reader<'_, '_, '_> {
    fn one<T: DeserializeOwned>(
        &mut self,
        value: Spanned<DeValue>,
        node: Node,
    ) -> Option<Spanned<T>> {
        let span = value.span();
        if !matches!(value.get_ref(), DeValue::Table(_)) {
            self.complete = false;
            self.diags.error(
                &span,
                format!(
                    "{} must be a table, not {}; write it as {}",
                    node.title(),
                    value.get_ref().type_str(),
                    node.header()
                ),
            );
            return None;
        }
        match Spanned::<T>::deserialize(value.into_deserializer()) {
            Ok(v) => Some(v),
            Err(e) => {
                self.complete = false;
                let at = e.span().unwrap_or_else(|| span.clone());
                let redundant = self.misspelled.iter().any(|(table, key)| {
                    *table == at && e.message() == format!("missing field `{key}`")
                });
                if redundant {
                    return None;
                }
                let message = serde_message(e.message(), node, &at, self.tree);
                self.diags.error(&at, message);
                None
            }
        }
    }

    fn many<T: DeserializeOwned>(
        &mut self,
        value: Option<Spanned<DeValue>>,
        node: Node,
    ) -> Vec<Spanned<T>> {
        let Some(value) = value else {
            return Vec::new();
        };
        let span = value.span();
        match value.into_inner() {
            DeValue::Array(items) => items
                .into_iter()
                .filter_map(|item| self.one::<T>(item, node))
                .collect(),
            other => {
                self.complete = false;
                self.diags.error(
                    &span,
                    format!(
                        "{} must be an array of tables, not {}; write each entry as a {} table",
                        node.key(),
                        other.type_str(),
                        node.header()
                    ),
                );
                Vec::new()
            }
        }
    }
}

/// The kinds of tables in an inventory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Node {
    Root,
    Cluster,
    Ports,
    Host,
    Ssh,
    Chunkserver,
    Disk,
    Client,
    Export,
    Topology,
}

impl Node {
    /// The keys this table accepts (taken from the serde types, so they cannot drift).
    fn keys(self) -> &'static [&'static str] {
        match self {
            Node::Root => &["cluster", "hosts", "exports", "topology"],
            Node::Cluster => fields_of::<ClusterDoc>(),
            Node::Ports => fields_of::<PortsDoc>(),
            Node::Host => fields_of::<HostDoc>(),
            Node::Ssh => fields_of::<SshDoc>(),
            Node::Chunkserver => fields_of::<ChunkserverDoc>(),
            Node::Disk => fields_of::<DiskDoc>(),
            Node::Client => fields_of::<ClientDoc>(),
            Node::Export => fields_of::<ExportDoc>(),
            Node::Topology => fields_of::<TopologyDoc>(),
        }
    }

    /// The kind of table found under `key` of this one.
    fn child(self, key: &str) -> Option<Node> {
        Some(match (self, key) {
            (Node::Root, "cluster") => Node::Cluster,
            (Node::Root, "hosts") => Node::Host,
            (Node::Root, "exports") => Node::Export,
            (Node::Root, "topology") => Node::Topology,
            (Node::Cluster, "ports") => Node::Ports,
            (Node::Host, "ssh") => Node::Ssh,
            (Node::Host, "chunkservers") => Node::Chunkserver,
            (Node::Host, "client") => Node::Client,
            (Node::Chunkserver, "disks") => Node::Disk,
            _ => return None,
        })
    }

    /// The key path of the table, as TOML writes it.
    fn key(self) -> &'static str {
        match self {
            Node::Root => "",
            Node::Cluster => "cluster",
            Node::Ports => "cluster.ports",
            Node::Host => "hosts",
            Node::Ssh => "hosts.ssh",
            Node::Chunkserver => "hosts.chunkservers",
            Node::Disk => "hosts.chunkservers.disks",
            Node::Client => "hosts.client",
            Node::Export => "exports",
            Node::Topology => "topology",
        }
    }

    /// How the table is usually written.
    fn header(self) -> &'static str {
        match self {
            Node::Root => "the top level",
            Node::Cluster => "[cluster]",
            Node::Ports => "[cluster.ports]",
            Node::Host => "[[hosts]]",
            Node::Ssh => "ssh = { user = \"root\", port = 22 }",
            Node::Chunkserver => "[[hosts.chunkservers]]",
            Node::Disk => "{ path = \"/srv/moosefs/d1\" }",
            Node::Client => "[hosts.client]",
            Node::Export => "[[exports]]",
            Node::Topology => "[[topology]]",
        }
    }

    /// How messages name the table.
    fn title(self) -> &'static str {
        match self {
            Node::Root => "the top level",
            Node::Cluster => "[cluster]",
            Node::Ports => "[cluster.ports]",
            Node::Host => "[[hosts]]",
            Node::Ssh => "the ssh table",
            Node::Chunkserver => "[[hosts.chunkservers]]",
            Node::Disk => "a disk",
            Node::Client => "[hosts.client]",
            Node::Export => "[[exports]]",
            Node::Topology => "[[topology]]",
        }
    }

    /// An example value for a required key, shown when it is missing.
    fn example(self, key: &str) -> &'static str {
        match (self, key) {
            (Node::Cluster, "name") => "\"demo\"",
            (Node::Host, "name") => "\"cs1\"",
            (Node::Host, "address") => "\"10.0.0.2\"",
            (Node::Disk, "path") => "\"/srv/moosefs/d1\"",
            (Node::Export, "address") | (Node::Topology, "address") => "\"10.0.0.0/24\"",
            (Node::Export, "path") => "\"/\"",
            (Node::Topology, "location") => "\"rack1\"",
            _ => "...",
        }
    }
}

/// Reports and removes keys a table does not know, everywhere in the document. A misspelled
/// key whose suggestion is missing from its table is noted in `misspelled` (table span, key).
fn strip_unknown(
    table: &mut DeTable,
    node: Node,
    span: Option<Range<usize>>,
    diags: &mut Diags,
    misspelled: &mut Vec<(Range<usize>, &'static str)>,
) {
    let known = node.keys();
    let unknown: Vec<(String, Range<usize>)> = table
        .keys()
        .filter(|k| !known.contains(&k.get_ref().as_ref()))
        .map(|k| (k.get_ref().to_string(), k.span()))
        .collect();
    for (key, key_span) in unknown {
        let suggestion = suggest(&key, known);
        if let (Some(s), Some(table_span)) = (suggestion, &span) {
            if !table.contains_key(s) {
                misspelled.push((table_span.clone(), s));
            }
        }
        let hint = suggestion
            .map(|s| format!(" (did you mean \"{s}\"?)"))
            .unwrap_or_default();
        let place = match node {
            Node::Root => "at the top level".to_string(),
            other => format!("in {}", other.title()),
        };
        diags.error(
            &key_span,
            format!(
                "unknown key \"{key}\" {place}; keys there are {}{hint}",
                known.join(", ")
            ),
        );
        table.remove(key.as_str());
    }
    for (key, value) in table.iter_mut() {
        if let Some(child) = node.child(key.get_ref()) {
            let value_span = value.span();
            match value.get_mut() {
                DeValue::Table(t) => strip_unknown(t, child, Some(value_span), diags, misspelled),
                DeValue::Array(items) => {
                    for item in items.iter_mut() {
                        let item_span = item.span();
                        if let DeValue::Table(t) = item.get_mut() {
                            strip_unknown(t, child, Some(item_span), diags, misspelled);
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

/// Turns a serde message into one that says where and what to do.
fn serde_message(message: &str, node: Node, span: &Range<usize>, tree: &DeTable) -> String {
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|s| s.strip_suffix('`'))
    {
        return format!(
            "{} has no \"{field}\"; add {field} = {}",
            node.title(),
            node.example(field)
        );
    }
    let tidy = tidy_serde(message);
    match key_path(tree, span) {
        Some(path) => format!("{path}: {tidy}"),
        None => tidy,
    }
}

/// Serde's Rust-flavoured type names in TOML words.
fn tidy_serde(message: &str) -> String {
    let mut out = message
        .replace("expected i64", "expected a whole number")
        .replace("expected a sequence", "expected an array")
        .replace("expected a boolean", "expected true or false")
        .replace("invalid type: sequence", "invalid type: array")
        .replace("invalid type: map", "invalid type: table");
    if let Some(at) = out.find("expected struct ") {
        out.replace_range(at.., "expected a table");
    }
    out
}

/// The dotted path (`hosts[1].chunkservers[0].port`) of the key or value at `span`.
fn key_path(tree: &DeTable, span: &Range<usize>) -> Option<String> {
    fn in_value(v: &Spanned<DeValue>, span: &Range<usize>, path: &str) -> Option<String> {
        if v.span() == *span {
            return Some(path.to_string());
        }
        match v.get_ref() {
            DeValue::Table(t) => in_table(t, span, path),
            DeValue::Array(items) => items
                .iter()
                .enumerate()
                .find_map(|(i, item)| in_value(item, span, &format!("{path}[{i}]"))),
            _ => None,
        }
    }
    fn in_table(t: &DeTable, span: &Range<usize>, prefix: &str) -> Option<String> {
        t.iter().find_map(|(k, v)| {
            let path = if prefix.is_empty() {
                k.get_ref().to_string()
            } else {
                format!("{prefix}.{}", k.get_ref())
            };
            if k.span() == *span {
                Some(path)
            } else {
                in_value(v, span, &path)
            }
        })
    }
    in_table(tree, span, "")
}

/// The field names of a serde struct, read from its `Deserialize` impl.
fn fields_of<T: DeserializeOwned>() -> &'static [&'static str] {
    match T::deserialize(FieldProbe) {
        Err(FieldsFound(fields)) => fields,
        Ok(_) => &[],
    }
}

/// A deserializer that only records the field list a struct asks for.
struct FieldProbe;

#[derive(Debug)]
struct FieldsFound(&'static [&'static str]);

impl fmt::Display for FieldsFound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "fields {:?}", self.0)
    }
}

impl std::error::Error for FieldsFound {}

impl serde::de::Error for FieldsFound {
    fn custom<M: fmt::Display>(_msg: M) -> Self {
        FieldsFound(&[])
    }
}

impl<'de> serde::Deserializer<'de> for FieldProbe {
    type Error = FieldsFound;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, FieldsFound> {
        Err(FieldsFound(&[]))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, FieldsFound> {
        Err(FieldsFound(fields))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_lists_come_from_the_serde_types() {
        assert_eq!(
            Node::Host.keys(),
            [
                "name",
                "address",
                "transport",
                "ssh",
                "roles",
                "chunkservers",
                "client"
            ]
        );
        assert_eq!(Node::Disk.keys(), ["path", "limit", "remove"]);
        assert_eq!(
            Node::Ports.keys(),
            [
                "master_metalogger",
                "master_chunkserver",
                "master_client",
                "chunkserver"
            ]
        );
        for node in [
            Node::Cluster,
            Node::Ssh,
            Node::Chunkserver,
            Node::Client,
            Node::Export,
            Node::Topology,
        ] {
            assert!(!node.keys().is_empty(), "{node:?}");
        }
    }

    #[test]
    fn serde_messages_in_toml_words() {
        assert_eq!(
            tidy_serde("invalid type: string \"x\", expected i64"),
            "invalid type: string \"x\", expected a whole number"
        );
        assert_eq!(
            tidy_serde("invalid type: string \"x\", expected struct DiskDoc"),
            "invalid type: string \"x\", expected a table"
        );
        assert_eq!(
            tidy_serde("invalid type: map, expected a string"),
            "invalid type: table, expected a string"
        );
    }
}
