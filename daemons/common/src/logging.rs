//! Logging through `tracing` to a file in DATA_PATH, and to stderr in the foreground.

use std::fs::OpenOptions;
use std::path::Path;
use std::sync::Mutex;

use tracing_subscriber::fmt::writer::MakeWriterExt;
use tracing_subscriber::EnvFilter;

/// Sets up the global subscriber. `RUST_LOG` overrides the default level (info).
pub fn init(log_file: Option<&Path>, to_stderr: bool) -> Result<(), String> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let file = match log_file {
        Some(path) => Some(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| {
                    let hint = match e.kind() {
                        std::io::ErrorKind::PermissionDenied => format!(
                            "; {}",
                            crate::user::access_hint(path, path.parent().unwrap_or(Path::new("/")))
                        ),
                        _ => String::new(),
                    };
                    format!("cannot open log file {}: {e}{hint}", path.display())
                })?,
        ),
        None => None,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(false);
    let result = match (file, to_stderr) {
        (Some(f), true) => builder
            .with_writer(Mutex::new(f).and(std::io::stderr))
            .try_init(),
        (Some(f), false) => builder.with_writer(Mutex::new(f)).try_init(),
        (None, _) => builder.with_writer(std::io::stderr).try_init(),
    };
    result.map_err(|e| format!("cannot set up logging: {e}"))
}
