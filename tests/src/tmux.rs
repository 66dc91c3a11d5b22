//! A real terminal for the console's tests: a tmux session, its keys and its screen.

use std::process::Command;
use std::time::{Duration, Instant};

/// A tmux session that is killed when the test ends.
pub struct Tmux {
    name: String,
}

impl Tmux {
    /// Runs `command` in a new detached session `PREFIX-PID`, `width` columns by 48 rows.
    pub fn start(prefix: &str, width: u16, command: &str) -> Tmux {
        let name = format!("{prefix}-{}", std::process::id());
        let width = width.to_string();
        let out = Command::new("tmux")
            .args([
                "new-session",
                "-d",
                "-s",
                &name,
                "-x",
                &width,
                "-y",
                "48",
                command,
            ])
            .output()
            .unwrap_or_else(|e| panic!("cannot run tmux ({e}); install it: apt-get install tmux"));
        assert!(
            out.status.success(),
            "tmux new-session failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmux { name }
    }

    pub fn keys(&self, keys: &[&str]) {
        for k in keys {
            let out = Command::new("tmux")
                .args(["send-keys", "-t", &self.name, k])
                .output()
                .expect("tmux send-keys");
            assert!(
                out.status.success(),
                "tmux send-keys {k}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.name])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn wait(&self, limit: Duration, what: &str, mut cond: impl FnMut(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let s = self.screen();
            if cond(&s) {
                return s;
            }
            assert!(
                start.elapsed() < limit,
                "timed out after {limit:?} waiting for {what}; the screen:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    pub fn alive(&self) -> bool {
        Command::new("tmux")
            .args(["has-session", "-t", &self.name])
            .output()
            .is_ok_and(|o| o.status.success())
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.name])
            .output();
    }
}
