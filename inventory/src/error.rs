//! Diagnostics (file:line:column messages), the report of a failed load, and the load error.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;

use serde::Serialize;

/// How bad a diagnostic is: errors stop the load, warnings do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One problem in the inventory file, at a line and column (both counted from 1; the column
/// counts characters, not bytes). The message says what is wrong and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    /// The inventory file, as named to the loader.
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// `FILE:LINE:COL: MESSAGE` for errors, `FILE:LINE:COL: warning: MESSAGE` for warnings.
impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if self.severity == Severity::Warning {
            f.write_str("warning: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Everything found wrong with an inventory that could not be loaded, errors and warnings each
/// sorted by position.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub errors: Vec<Diagnostic>,
    pub warnings: Vec<Diagnostic>,
}

/// Errors first, then warnings, one per line.
impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for d in self.errors.iter().chain(&self.warnings) {
            if !first {
                f.write_str("\n")?;
            }
            first = false;
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// Why an inventory could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read the inventory file {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the base folder for relative paths must be absolute, got {}; pass an absolute folder",
        .0.display()
    )]
    RelativeBase(PathBuf),
    /// The file has errors; the report lists all of them (and the warnings).
    #[error("{0}")]
    Invalid(Report),
}

/// Collects diagnostics while loading, turning byte spans into lines and columns.
pub(crate) struct Diags<'a> {
    file: &'a str,
    text: &'a str,
    line_starts: Vec<usize>,
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
}

impl<'a> Diags<'a> {
    pub(crate) fn new(file: &'a str, text: &'a str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Diags {
            file,
            text,
            line_starts,
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// Line and column (from 1) of a byte offset; offsets past the end count as the end.
    pub(crate) fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let idx = match self.line_starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i.saturating_sub(1),
        };
        let start = self.line_starts.get(idx).copied().unwrap_or(0);
        let column = match self.text.get(start..offset) {
            Some(s) => s.chars().count(),
            None => offset - start,
        };
        (idx + 1, column + 1)
    }

    fn make(&self, severity: Severity, span: &Range<usize>, message: String) -> Diagnostic {
        let (line, column) = self.position(span.start);
        Diagnostic {
            severity,
            file: self.file.to_string(),
            line,
            column,
            message,
        }
    }

    pub(crate) fn error(&mut self, span: &Range<usize>, message: impl Into<String>) {
        let d = self.make(Severity::Error, span, message.into());
        self.errors.push(d);
    }

    pub(crate) fn warn(&mut self, span: &Range<usize>, message: impl Into<String>) {
        let d = self.make(Severity::Warning, span, message.into());
        self.warnings.push(d);
    }

    pub(crate) fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }

    pub(crate) fn error_count(&self) -> usize {
        self.errors.len()
    }

    /// The file name given to the loader.
    pub(crate) fn file(&self) -> &str {
        self.file
    }

    /// Errors and warnings, each sorted by position (stable: same position keeps its order).
    pub(crate) fn finish(self) -> Report {
        let mut errors = self.errors;
        let mut warnings = self.warnings;
        errors.sort_by_key(|d| (d.line, d.column));
        warnings.sort_by_key(|d| (d.line, d.column));
        Report { errors, warnings }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_lines_and_characters() {
        let text = "ab\nçd = 1\n\nx";
        let d = Diags::new("f.toml", text);
        assert_eq!(d.position(0), (1, 1));
        assert_eq!(d.position(2), (1, 3));
        assert_eq!(d.position(3), (2, 1));
        // 'ç' is two bytes but one column.
        assert_eq!(d.position(5), (2, 2));
        assert_eq!(d.position(text.len()), (4, 2));
        assert_eq!(d.position(10_000), (4, 2));
        // Inside a multi-byte character: no panic.
        assert_eq!(d.position(4).0, 2);
    }

    #[test]
    fn display_forms() {
        let mut d = Diags::new("c.toml", "a\nb\n");
        d.warn(&(2..3), "careful");
        d.error(&(0..1), "broken");
        let r = d.finish();
        assert_eq!(
            r.to_string(),
            "c.toml:1:1: broken\nc.toml:2:1: warning: careful"
        );
    }
}
