//! The header line (cluster, master, chunkservers, space, health, RO/RW) and the tabs.

use moose_inventory::Role;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use super::Theme;
use crate::engine::probe::Process;
use crate::fmt;
use crate::tui::app::{App, Level, Pane};

pub fn draw(app: &App, frame: &mut Frame, area: Rect, t: &Theme) {
    let [left, right] =
        Layout::horizontal([Constraint::Min(10), Constraint::Length(5)]).areas(area);
    let mut line = status_line(app, t, true);
    if line.width() > left.width as usize {
        line = status_line(app, t, false);
    }
    let badge = if app.readonly {
        Span::styled(
            " RO ",
            t.warn().add_modifier(ratatui::style::Modifier::REVERSED),
        )
    } else {
        Span::styled(
            " RW ",
            t.ok().add_modifier(ratatui::style::Modifier::REVERSED),
        )
    };
    frame.render_widget(Paragraph::new(line), left);
    frame.render_widget(Paragraph::new(Line::from(badge)).right_aligned(), right);
}

/// The header's facts. `full` adds the program name, the master's uptime and the word
/// "space"; without it the space comes last, so a narrow terminal cuts it first.
fn status_line<'a>(app: &App, t: &Theme, full: bool) -> Line<'a> {
    let sep = || Span::styled(" │ ", t.dim());
    let mut spans = vec![];
    if full {
        spans.push(Span::styled(" moosectl ", t.accent()));
    } else {
        spans.push(Span::raw(" "));
    }
    spans.push(Span::styled(
        app.model.inventory.cluster.name.clone(),
        t.bold(),
    ));
    spans.push(sep());
    let master_idx = app
        .model
        .instances
        .iter()
        .position(|i| i.role == Role::Master);
    let process = master_idx.and_then(|k| {
        app.snapshot
            .as_ref()
            .and_then(|s| s.instances.get(k))
            .map(|s| &s.process)
    });
    match (app.info(), process) {
        (Some(info), _) => {
            spans.push(Span::raw("master "));
            spans.push(Span::styled("running", t.ok()));
            spans.push(Span::raw(format!(" v{}", info.version)));
            if full {
                spans.push(Span::raw(format!(
                    " up {}",
                    fmt::duration(std::time::Duration::from_secs(info.uptime_secs))
                )));
            }
        }
        (None, Some(Process::Running { .. })) => {
            spans.push(Span::raw("master "));
            spans.push(Span::styled("not answering", t.bad()));
        }
        (None, Some(Process::Stopped)) => {
            spans.push(Span::raw("master "));
            spans.push(Span::styled("stopped", t.warn()));
        }
        (None, Some(Process::Unknown { .. })) => {
            spans.push(Span::raw("master "));
            spans.push(Span::styled("unknown", t.bad()));
        }
        (None, None) => {
            spans.push(Span::styled("master …", t.dim()));
        }
    }
    spans.push(sep());
    let want = app.model.chunkserver_count();
    match app.info() {
        Some(info) => {
            let connected = info.chunkservers.iter().filter(|c| c.connected).count();
            let style = if connected >= want && want > 0 {
                t.ok()
            } else {
                t.warn()
            };
            spans.push(Span::raw("chunkservers "));
            spans.push(Span::styled(format!("{connected}/{want}"), style));
            spans.push(sep());
            let used = info.total_space.saturating_sub(info.avail_space);
            let space = Span::raw(format!(
                "{}{} / {}",
                if full { "space " } else { "" },
                fmt::bytes(used),
                fmt::bytes(info.total_space)
            ));
            if full {
                spans.push(space.clone());
                spans.push(sep());
            }
            let h = &info.health;
            spans.push(Span::raw("undergoal "));
            spans.push(Span::styled(
                (h.undergoal + h.endangered).to_string(),
                t.count(h.undergoal + h.endangered, Level::Warn),
            ));
            spans.push(Span::raw("  missing "));
            spans.push(Span::styled(
                h.missing.to_string(),
                t.count(h.missing, Level::Error),
            ));
            if !full {
                spans.push(sep());
                spans.push(space);
            }
        }
        None => {
            spans.push(Span::styled(format!("chunkservers ?/{want}"), t.dim()));
        }
    }
    Line::from(spans)
}

pub fn tabs(app: &App, frame: &mut Frame, area: Rect, t: &Theme) {
    let mut spans = vec![Span::raw(" ")];
    for (k, p) in Pane::ALL.iter().enumerate() {
        let label = format!(" {} {} ", k + 1, p.title());
        if *p == app.pane {
            spans.push(Span::styled(
                label,
                t.selected().add_modifier(ratatui::style::Modifier::BOLD),
            ));
        } else {
            spans.push(Span::styled(label, t.dim()));
        }
        spans.push(Span::raw(" "));
    }
    if let Some(op) = &app.operation {
        let done = op
            .steps
            .iter()
            .flatten()
            .filter(|(s, _)| s.is_final())
            .count();
        let total = op.plan.step_count();
        let (text, style) = match &op.finished {
            None => (
                format!(
                    "{} {done}/{total} steps, {}",
                    op.plan.action.as_str(),
                    fmt::duration(app.now.saturating_duration_since(op.started))
                ),
                t.accent(),
            ),
            Some((true, _, _)) => (format!("{} done", op.plan.action.as_str()), t.ok()),
            Some((false, _, _)) => (format!("{} failed", op.plan.action.as_str()), t.bad()),
        };
        spans.push(Span::styled("  ▶ ", t.dim()));
        spans.push(Span::styled(text, style));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}
