//! The confirmation dialog and the operation panel (the running or last plan).

use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Wrap};
use ratatui::Frame;

use super::Theme;
use crate::engine::exec::StepState;
use crate::fmt;
use crate::tui::app::{App, Dialog, Operation};

/// A centred rectangle of at most `w` x `h` inside `area`.
pub fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let [v] = Layout::vertical([Constraint::Length(h.min(area.height))])
        .flex(Flex::Center)
        .areas(area);
    let [r] = Layout::horizontal([Constraint::Length(w.min(area.width))])
        .flex(Flex::Center)
        .areas(v);
    r
}

pub fn confirm(d: &Dialog, frame: &mut Frame, area: Rect, t: &Theme) {
    let width = area.width.saturating_sub(8).min(110);
    let inner_width = width.saturating_sub(4).max(1) as usize;
    let body_height: usize = d
        .body
        .iter()
        .map(|l| l.chars().count().max(1).div_ceil(inner_width))
        .sum();
    let height = (body_height + 5) as u16;
    let r = centered(area, width, height);
    frame.render_widget(Clear, r);
    let block = Block::bordered()
        .title(Span::styled(format!(" {} ", d.title), t.bold()))
        .border_style(t.warn());
    let inner = block.inner(r);
    frame.render_widget(block, r);
    let [text, buttons] = Layout::vertical([Constraint::Min(1), Constraint::Length(2)])
        .areas(inner.inner(ratatui::layout::Margin::new(1, 0)));
    let lines: Vec<Line> = d.body.iter().map(|l| Line::raw(l.clone())).collect();
    frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), text);
    let button = |label: &str, focused: bool| {
        if focused {
            Span::styled(
                format!("[>{label}<]"),
                t.selected().add_modifier(ratatui::style::Modifier::BOLD),
            )
        } else {
            Span::styled(format!("[ {label} ]"), t.dim())
        }
    };
    let line = Line::from(vec![
        button("Cancel", !d.focus_yes),
        Span::raw("   "),
        button(&d.yes, d.focus_yes),
    ])
    .centered();
    frame.render_widget(Paragraph::new(vec![Line::raw(""), line]), buttons);
}

/// Rows the operation panel wants (borders included), at most a third of the screen.
pub fn operation_height(op: &Operation, screen: u16) -> u16 {
    let lines = op.plan.stages.len() + op.plan.step_count() + 1;
    (lines as u16 + 2).min(screen / 3).max(5)
}

fn mark(s: StepState) -> &'static str {
    match s {
        StepState::Pending => "·",
        StepState::Running | StepState::Waiting => "…",
        StepState::Done => "✓",
        StepState::Skipped => "−",
        StepState::Failed => "✗",
    }
}

pub fn operation(app: &App, op: &Operation, frame: &mut Frame, area: Rect, t: &Theme) {
    let (status, style) = match &op.finished {
        None => (
            format!(
                "running for {}",
                fmt::duration(app.now.saturating_duration_since(op.started))
            ),
            t.accent(),
        ),
        Some((true, _, took)) => (format!("done in {}", fmt::elapsed(*took)), t.ok()),
        Some((false, _, took)) => (format!("failed after {}", fmt::elapsed(*took)), t.bad()),
    };
    let title = format!(
        " {} plan{}: {status} ",
        op.plan.action.as_str(),
        op.plan
            .target
            .as_ref()
            .map(|t| format!(" ({t})"))
            .unwrap_or_default()
    );
    let block = Block::bordered()
        .title(Span::styled(title, style))
        .title_bottom(Span::styled(" o hides this, Esc when finished ", t.dim()));
    let inner = block.inner(area);
    frame.render_widget(block, area);

    let mut lines: Vec<Line> = Vec::new();
    let mut current_line = 0;
    for (si, stage) in op.plan.stages.iter().enumerate() {
        let states = &op.steps[si];
        let stage_state = if states.iter().any(|(s, _)| *s == StepState::Failed) {
            StepState::Failed
        } else if states.iter().all(|(s, _)| s.is_final()) {
            StepState::Done
        } else if op.stage == Some(si) {
            StepState::Running
        } else {
            StepState::Pending
        };
        if op.stage == Some(si) {
            current_line = lines.len();
        }
        lines.push(Line::from(vec![
            Span::styled(
                format!("{} ", mark(stage_state)),
                state_style(stage_state, t),
            ),
            Span::styled(format!("{}. {}", si + 1, stage.title), t.bold()),
        ]));
        for (pi, step) in stage.steps.iter().enumerate() {
            let (s, msg) = &states[pi];
            let text = if msg.is_empty() {
                match &step.gate {
                    Some(g) => format!("then waits until {}", g.describe()),
                    None => step.does.first().cloned().unwrap_or_default(),
                }
            } else {
                msg.clone()
            };
            lines.push(Line::from(vec![
                Span::raw("    "),
                Span::styled(format!("{} ", mark(*s)), state_style(*s, t)),
                Span::raw(format!("{:<26} ", step.name)),
                Span::styled(format!("{:<8} ", s.as_str()), state_style(*s, t)),
                Span::styled(
                    text,
                    if *s == StepState::Failed {
                        t.bad()
                    } else {
                        t.dim()
                    },
                ),
            ]));
        }
    }
    if let Some((ok, msg, _)) = &op.finished {
        lines.push(Line::styled(
            msg.clone(),
            if *ok { t.ok() } else { t.bad() },
        ));
    }
    // Keep the current stage (or the end, once finished) in view.
    let height = inner.height as usize;
    let focus = if op.finished.is_some() {
        lines.len()
    } else {
        current_line + height / 2
    };
    let first = focus
        .saturating_sub(height)
        .min(lines.len().saturating_sub(height));
    frame.render_widget(
        Paragraph::new(lines.into_iter().skip(first).collect::<Vec<_>>()),
        inner,
    );
}

fn state_style(s: StepState, t: &Theme) -> ratatui::style::Style {
    match s {
        StepState::Pending => t.dim(),
        StepState::Running | StepState::Waiting => t.accent(),
        StepState::Done => t.ok(),
        StepState::Skipped => t.warn(),
        StepState::Failed => t.bad(),
    }
}
