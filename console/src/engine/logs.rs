//! Log lines of the role instances: a bounded ring per source (a chatty daemon cannot push out
//! the lines of a quiet one), merged by their timestamps for display (lines without one
//! keep the time of the line before them), with a filter.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::engine::host::{FollowEvent, Machine};

/// Lines kept per source.
pub const LINES_PER_SOURCE: usize = 5000;
/// Bytes of history read when following starts.
pub const HISTORY_BYTES: u64 = 64 * 1024;

/// One log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// Arrival order across all sources.
    pub seq: u64,
    /// The line's timestamp (RFC 3339, as the daemons write it), or the one before it.
    pub time: String,
    pub text: String,
    /// A remark of the follower (file missing, truncated), not a line of the file.
    pub notice: bool,
}

/// One followed file.
#[derive(Debug, Clone)]
pub struct Source {
    /// Short name shown before each line: `master`, `chunkserver-19422@cs1`.
    pub label: String,
    pub host: String,
    pub path: PathBuf,
    lines: VecDeque<Line>,
    /// Lines pushed out of the ring.
    pub dropped: u64,
    /// Timestamp of the last line that had one.
    last_time: String,
    /// For the shared log of a host's mounts: the tags of the mounts shown (see
    /// [`of_mounts`]); empty: every line.
    mounts: Vec<String>,
}

/// The timestamp a line starts with (`2026-11-27T10:00:00.123Z`), if it starts with one.
fn timestamp(text: &str) -> Option<&str> {
    let first = text.split_whitespace().next()?;
    let b = first.as_bytes();
    let looks = b.len() >= 19
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T';
    looks.then_some(first)
}

/// The name a mount gives itself on each line of the shared mount log: its mount point
/// without a trailing slash, `.` components or doubled slashes.
pub fn mount_tag(mount_point: &Path) -> String {
    mount_point
        .components()
        .collect::<PathBuf>()
        .display()
        .to_string()
}

/// Whether `text`, a line of a host's shared mount log, comes from one of the mounts tagged
/// `tags` (see [`mount_tag`]); every line does for no tags. Its mounts write
/// `TIME LEVEL MOUNTPOINT: message`; a line that names no mount point (a continuation, or a
/// line of an older mount) is kept.
pub fn of_mounts(text: &str, tags: &[String]) -> bool {
    if tags.is_empty() {
        return true;
    }
    let Some(time) = timestamp(text) else {
        return true;
    };
    let Some((_level, rest)) = text[time.len()..].trim_start().split_once(' ') else {
        return true;
    };
    if !rest.starts_with('/') {
        return true;
    }
    let ours = tags.iter().any(|t| {
        rest.strip_prefix(t.as_str())
            .is_some_and(|after| after.starts_with(": "))
    });
    ours || !rest.contains(": ")
}

/// Every source's recent lines.
#[derive(Debug, Clone)]
pub struct LogBuffer {
    pub sources: Vec<Source>,
    per_source: usize,
    next_seq: u64,
}

/// A line filter: case-insensitive substring, `!` in front for lines without it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    needle: String,
    inverse: bool,
}

impl Filter {
    pub fn parse(s: &str) -> Filter {
        match s.strip_prefix('!') {
            Some(rest) => Filter {
                needle: rest.to_lowercase(),
                inverse: true,
            },
            None => Filter {
                needle: s.to_lowercase(),
                inverse: false,
            },
        }
    }

    pub fn is_empty(&self) -> bool {
        self.needle.is_empty()
    }

    pub fn matches(&self, text: &str) -> bool {
        if self.needle.is_empty() {
            return true;
        }
        let found = text.to_lowercase().contains(&self.needle);
        found != self.inverse
    }
}

impl LogBuffer {
    /// Sources as (label, host, path).
    pub fn new(sources: Vec<(String, String, PathBuf)>, per_source: usize) -> LogBuffer {
        LogBuffer {
            sources: sources
                .into_iter()
                .map(|(label, host, path)| Source {
                    label,
                    host,
                    path,
                    lines: VecDeque::new(),
                    dropped: 0,
                    last_time: String::new(),
                    mounts: Vec::new(),
                })
                .collect(),
            per_source: per_source.max(1),
            next_seq: 0,
        }
    }

    /// Keeps only the lines of the mounts tagged `tags` from `source`, a shared mount log
    /// (see [`of_mounts`]; no tags: every line).
    pub fn keep_only_mounts(&mut self, source: usize, tags: Vec<String>) {
        if let Some(s) = self.sources.get_mut(source) {
            s.mounts = tags;
        }
    }

    fn add(&mut self, source: usize, text: String, notice: bool) {
        let Some(s) = self.sources.get_mut(source) else {
            return;
        };
        if !notice && !of_mounts(&text, &s.mounts) {
            return;
        }
        if s.lines.len() == self.per_source {
            s.lines.pop_front();
            s.dropped += 1;
        }
        if let Some(t) = timestamp(&text).filter(|_| !notice) {
            if t != s.last_time {
                s.last_time = t.to_string();
            }
        }
        s.lines.push_back(Line {
            seq: self.next_seq,
            time: s.last_time.clone(),
            text,
            notice,
        });
        self.next_seq += 1;
    }

    pub fn push(&mut self, source: usize, lines: Vec<String>) {
        for l in lines {
            self.add(source, l, false);
        }
    }

    pub fn notice(&mut self, source: usize, text: String) {
        self.add(source, text, true);
    }

    /// Lines kept now, over all sources.
    pub fn len(&self) -> usize {
        self.sources.iter().map(|s| s.lines.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The lines of `source` (all sources when `None`) that pass `filter`, oldest first (by
    /// timestamp, then arrival), as (source index, line).
    pub fn select(&self, source: Option<usize>, filter: &Filter) -> Vec<(usize, &Line)> {
        let mut out: Vec<(usize, &Line)> = self
            .sources
            .iter()
            .enumerate()
            .filter(|(i, _)| source.is_none_or(|s| s == *i))
            .flat_map(|(i, s)| s.lines.iter().map(move |l| (i, l)))
            .filter(|(_, l)| filter.matches(&l.text))
            .collect();
        if source.is_none() {
            out.sort_by(|(_, a), (_, b)| a.time.cmp(&b.time).then(a.seq.cmp(&b.seq)));
        }
        out
    }
}

/// A batch for the event loop: what source `source` has new.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEvent {
    pub source: usize,
    pub event: FollowEvent,
}

/// Follows one source's file through its host until `out` is closed.
pub async fn follow(
    host: Arc<dyn Machine>,
    source: usize,
    path: PathBuf,
    out: mpsc::Sender<LogEvent>,
) {
    let (tx, mut rx) = mpsc::channel::<FollowEvent>(64);
    let follower = {
        let host = host.clone();
        let path = path.clone();
        tokio::spawn(async move { host.follow_file(&path, HISTORY_BYTES, tx).await })
    };
    while let Some(event) = rx.recv().await {
        if out.send(LogEvent { source, event }).await.is_err() {
            break;
        }
    }
    drop(rx);
    match follower.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            let _ = out
                .send(LogEvent {
                    source,
                    event: FollowEvent::Notice(format!("stopped following: {e}")),
                })
                .await;
        }
        Err(e) => {
            let _ = out
                .send(LogEvent {
                    source,
                    event: FollowEvent::Notice(format!("stopped following: {e}")),
                })
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buffer() -> LogBuffer {
        LogBuffer::new(
            vec![
                ("master".into(), "h".into(), "/m.log".into()),
                ("cs".into(), "h".into(), "/c.log".into()),
            ],
            3,
        )
    }

    #[test]
    fn rings_are_bounded_per_source() {
        let mut b = buffer();
        b.push(0, (0..10).map(|i| format!("m{i}")).collect());
        b.push(1, vec!["c0".into()]);
        assert_eq!(b.len(), 4);
        assert_eq!(b.sources[0].dropped, 7);
        let all: Vec<&str> = b
            .select(None, &Filter::default())
            .iter()
            .map(|(_, l)| l.text.as_str())
            .collect();
        assert_eq!(all, ["m7", "m8", "m9", "c0"]);
    }

    #[test]
    fn merged_by_timestamp() {
        let mut b = buffer();
        // The chunkserver's history arrives after the master's newer lines.
        b.push(0, vec!["2026-11-27T10:00:05Z  INFO m late".into()]);
        b.push(
            1,
            vec![
                "2026-11-27T10:00:01Z  INFO c early".into(),
                "  continuation of early".into(),
                "2026-11-27T10:00:09Z  INFO c last".into(),
            ],
        );
        let all: Vec<&str> = b
            .select(None, &Filter::default())
            .iter()
            .map(|(_, l)| l.text.as_str())
            .collect();
        assert_eq!(
            all,
            [
                "2026-11-27T10:00:01Z  INFO c early",
                "  continuation of early",
                "2026-11-27T10:00:05Z  INFO m late",
                "2026-11-27T10:00:09Z  INFO c last"
            ]
        );
        assert_eq!(timestamp("2026-11-27 10:00"), None);
    }

    #[test]
    fn merged_in_arrival_order_and_filtered() {
        let mut b = buffer();
        b.push(0, vec!["INFO start".into()]);
        b.push(1, vec!["WARN disk slow".into()]);
        b.notice(0, "waiting for /m.log".into());
        b.push(0, vec!["ERROR broken".into()]);
        let texts = |f: &str, src: Option<usize>| -> Vec<String> {
            b.select(src, &Filter::parse(f))
                .iter()
                .map(|(_, l)| l.text.clone())
                .collect()
        };
        assert_eq!(
            texts("", None),
            [
                "INFO start",
                "WARN disk slow",
                "waiting for /m.log",
                "ERROR broken"
            ]
        );
        assert_eq!(texts("error", None), ["ERROR broken"]);
        assert_eq!(texts("!o", Some(0)), Vec::<String>::new());
        assert_eq!(
            texts("!start", Some(0)),
            ["waiting for /m.log", "ERROR broken"]
        );
        assert!(b.select(Some(0), &Filter::default())[1].1.notice);
    }

    #[test]
    fn a_shared_mount_log_shows_the_lines_of_its_own_mounts() {
        let tags = vec![mount_tag(Path::new("/mnt/moosefs/"))];
        assert_eq!(tags, ["/mnt/moosefs"]);
        let ours =
            "2026-12-07T10:00:01.5Z  INFO /mnt/moosefs: 127.0.0.1:9421:/ mounted on /mnt/moosefs";
        let other = "2026-12-07T10:00:02Z  WARN /mnt/moosefs2: connection to master lost";
        let untagged = "2026-12-07T10:00:03Z ERROR writing the buffered data failed: no space";
        assert!(of_mounts(ours, &tags));
        assert!(!of_mounts(other, &tags), "a mount whose name starts alike");
        assert!(of_mounts(untagged, &tags));
        assert!(of_mounts("  continuation", &tags));

        let mut b = buffer();
        b.keep_only_mounts(1, tags);
        b.push(1, vec![ours.into(), other.into(), untagged.into()]);
        b.notice(1, "truncated".into());
        b.push(0, vec![other.into()]);
        let shown: Vec<&str> = b
            .select(Some(1), &Filter::default())
            .iter()
            .map(|(_, l)| l.text.as_str())
            .collect();
        assert_eq!(shown, [ours, untagged, "truncated"]);
        assert_eq!(b.select(Some(0), &Filter::default()).len(), 1);
    }
}
