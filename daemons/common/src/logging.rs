//! Logging through `tracing` to a file in DATA_PATH, and to stderr in the foreground.

use std::fmt;
use std::fs::OpenOptions;
use std::path::Path;
use std::sync::Mutex;

use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::writer::MakeWriterExt;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// Sets up the global subscriber. `RUST_LOG` overrides the default level (info).
pub fn init(log_file: Option<&Path>, to_stderr: bool) -> Result<(), String> {
    init_tagged(log_file, to_stderr, None)
}

/// As [`init`], for a process that shares its log file with others of its kind (every mount
/// of a host writes one log): each line names `tag` after its level.
pub fn init_tagged(
    log_file: Option<&Path>,
    to_stderr: bool,
    tag: Option<&str>,
) -> Result<(), String> {
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
        .with_ansi(false)
        .event_format(Line {
            tag: tag.map(str::to_owned),
        });
    let result = match (file, to_stderr) {
        (Some(f), true) => builder
            .with_writer(Mutex::new(f).and(std::io::stderr))
            .try_init(),
        (Some(f), false) => builder.with_writer(Mutex::new(f)).try_init(),
        (None, _) => builder.with_writer(std::io::stderr).try_init(),
    };
    result.map_err(|e| format!("cannot set up logging: {e}"))
}

/// One log line: `TIME LEVEL message`, or `TIME LEVEL TAG: message`.
struct Line {
    tag: Option<String>,
}

impl<S, N> FormatEvent<S, N> for Line
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        SystemTime.format_time(&mut w)?;
        write!(w, " {:>5} ", event.metadata().level())?;
        if let Some(tag) = &self.tag {
            write!(w, "{tag}: ")?;
        }
        ctx.format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::Arc;

    /// Collects what a subscriber writes.
    #[derive(Clone, Default)]
    struct Collected(Arc<Mutex<Vec<u8>>>);

    impl Write for Collected {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn lines_of(tag: Option<&str>, log: impl FnOnce()) -> String {
        let out = Collected::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .event_format(Line {
                tag: tag.map(str::to_owned),
            })
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, log);
        let bytes = out.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn a_line_has_time_level_and_message_and_the_tag_when_given() {
        let plain = lines_of(None, || tracing::warn!(disk = 3, "disk slow"));
        let (time, rest) = plain.split_once(' ').unwrap();
        assert!(time.ends_with('Z') && time.contains('T'), "{plain}");
        assert_eq!(rest, " WARN disk slow disk=3\n");
        let tagged = lines_of(Some("/mnt/mfs"), || tracing::info!("mounted"));
        let (_, rest) = tagged.split_once(' ').unwrap();
        assert_eq!(rest, " INFO /mnt/mfs: mounted\n");
    }
}
