//! The key map: one table that key dispatch looks keys up in and the help screen lists, so
//! the two cannot disagree.

use crossterm::event::KeyCode;

/// What a key asks for in the normal mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intent {
    NextPane,
    PreviousPane,
    /// The pane at this index of `Pane::ALL`.
    Pane(usize),
    Up,
    Down,
    PageUp,
    PageDown,
    Top,
    Bottom,
    Start,
    Stop,
    Deploy,
    Restart,
    LogsOfSelection,
    PreviousLogSource,
    NextLogSource,
    ToggleFollow,
    Filter,
    Palette,
    TogglePlan,
    Refresh,
    ApplyFix,
    Escape,
    Help,
    Quit,
}

/// A key as bound: its code, and whether Ctrl is part of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    pub code: KeyCode,
    pub ctrl: bool,
}

const fn key(c: char) -> Key {
    Key {
        code: KeyCode::Char(c),
        ctrl: false,
    }
}

const fn ctrl(c: char) -> Key {
    Key {
        code: KeyCode::Char(c),
        ctrl: true,
    }
}

const fn code(code: KeyCode) -> Key {
    Key { code, ctrl: false }
}

/// One line of the help screen and the bindings it describes.
pub struct KeyRow {
    pub keys: &'static str,
    pub does: &'static str,
    pub bindings: &'static [(Key, Intent)],
}

/// Every binding of the normal mode, in the order `?` shows them.
pub const KEYS: &[KeyRow] = &[
    KeyRow {
        keys: "Tab / Shift-Tab",
        does: "next / previous pane",
        bindings: &[
            (code(KeyCode::Tab), Intent::NextPane),
            (code(KeyCode::BackTab), Intent::PreviousPane),
        ],
    },
    KeyRow {
        keys: "1-8",
        does: "Overview, Servers, Disks, Replication, Logs, Exports, Doctor, Quotas",
        bindings: &[
            (key('1'), Intent::Pane(0)),
            (key('2'), Intent::Pane(1)),
            (key('3'), Intent::Pane(2)),
            (key('4'), Intent::Pane(3)),
            (key('5'), Intent::Pane(4)),
            (key('6'), Intent::Pane(5)),
            (key('7'), Intent::Pane(6)),
            (key('8'), Intent::Pane(7)),
        ],
    },
    KeyRow {
        keys: "↑ ↓ j k PgUp PgDn g G",
        does: "move the selection / scroll the log",
        bindings: &[
            (code(KeyCode::Up), Intent::Up),
            (key('k'), Intent::Up),
            (code(KeyCode::Down), Intent::Down),
            (key('j'), Intent::Down),
            (code(KeyCode::PageUp), Intent::PageUp),
            (code(KeyCode::PageDown), Intent::PageDown),
            (code(KeyCode::Home), Intent::Top),
            (key('g'), Intent::Top),
            (code(KeyCode::End), Intent::Bottom),
            (key('G'), Intent::Bottom),
        ],
    },
    KeyRow {
        keys: "S",
        does: "start the cluster (plan: master → metaloggers → chunkservers → clients)",
        bindings: &[(key('S'), Intent::Start)],
    },
    KeyRow {
        keys: "X",
        does: "stop the cluster (asks first; clients → chunkservers → metaloggers → master)",
        bindings: &[(key('X'), Intent::Stop)],
    },
    KeyRow {
        keys: "D",
        does: "deploy (checks every host, shows the diff, asks first)",
        bindings: &[(key('D'), Intent::Deploy)],
    },
    KeyRow {
        keys: "r",
        does: "restart the selected role (Servers pane; asks first)",
        bindings: &[(key('r'), Intent::Restart)],
    },
    KeyRow {
        keys: "l",
        does: "logs of the selected role (Servers, Disks)",
        bindings: &[(key('l'), Intent::LogsOfSelection)],
    },
    KeyRow {
        keys: "[ ]",
        does: "Logs: previous / next source (all, master, each chunkserver, ...)",
        bindings: &[
            (key('['), Intent::PreviousLogSource),
            (key(']'), Intent::NextLogSource),
        ],
    },
    KeyRow {
        keys: "f",
        does: "Logs: follow the newest line on / off",
        bindings: &[(key('f'), Intent::ToggleFollow)],
    },
    KeyRow {
        keys: "/",
        does: "filter the rows or log lines (text, !text for lines without it); Esc clears",
        bindings: &[(key('/'), Intent::Filter)],
    },
    KeyRow {
        keys: ":",
        does: "command palette (Tab completes; :help lists the commands)",
        bindings: &[(key(':'), Intent::Palette)],
    },
    KeyRow {
        keys: "o",
        does: "show / hide the operation panel (the running or last plan)",
        bindings: &[(key('o'), Intent::TogglePlan)],
    },
    KeyRow {
        keys: "F",
        does: "Doctor: apply the selected safe fix (asks first), then check again",
        bindings: &[(key('F'), Intent::ApplyFix)],
    },
    KeyRow {
        keys: "Ctrl-R",
        does: "poll the cluster now (Doctor: run every check again)",
        bindings: &[(ctrl('r'), Intent::Refresh)],
    },
    KeyRow {
        keys: "Esc",
        does: "close a dialog, clear the filter, hide a finished operation",
        bindings: &[(code(KeyCode::Esc), Intent::Escape)],
    },
    KeyRow {
        keys: "?",
        does: "this help",
        bindings: &[(key('?'), Intent::Help)],
    },
    KeyRow {
        keys: "q / Ctrl-C",
        does: "quit (asks first while an operation runs)",
        bindings: &[(key('q'), Intent::Quit), (ctrl('c'), Intent::Quit)],
    },
];

/// What `code` (with Ctrl held or not) is bound to. A Ctrl binding wins; otherwise Ctrl is
/// ignored, so Ctrl with a plain key does what the key does.
pub fn intent(code: KeyCode, ctrl_held: bool) -> Option<Intent> {
    let find = |want_ctrl: bool| {
        KEYS.iter()
            .flat_map(|row| row.bindings)
            .find(|(k, _)| k.code == code && k.ctrl == want_ctrl)
            .map(|&(_, i)| i)
    };
    if ctrl_held {
        find(true).or_else(|| find(false))
    } else {
        find(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_is_bound_once() {
        let all: Vec<Key> = KEYS
            .iter()
            .flat_map(|row| row.bindings.iter().map(|(k, _)| *k))
            .collect();
        for (n, k) in all.iter().enumerate() {
            assert!(!all[n + 1..].contains(k), "{k:?} is bound twice");
        }
    }

    #[test]
    fn ctrl_bindings_win_and_plain_keys_ignore_ctrl() {
        assert_eq!(intent(KeyCode::Char('r'), true), Some(Intent::Refresh));
        assert_eq!(intent(KeyCode::Char('r'), false), Some(Intent::Restart));
        assert_eq!(intent(KeyCode::Char('c'), true), Some(Intent::Quit));
        assert_eq!(intent(KeyCode::Char('c'), false), None);
        assert_eq!(intent(KeyCode::Char('j'), true), Some(Intent::Down));
        assert_eq!(intent(KeyCode::F(12), false), None);
    }
}
