//! Quotas: every folder quota the master holds, with a usage bar per limited figure, its
//! soft/hard state and the grace time left.

use std::time::Duration;

use moose_proto::msg::{DirStats, Limits, QuotaReport};
use ratatui::layout::{Constraint, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Row, Table, TableState};
use ratatui::Frame;

use super::Theme;
use crate::fmt;
use crate::tui::app::{App, Pane};

/// Width of a usage bar, in cells.
const BAR: usize = 10;

/// Where a quota stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaState {
    Ok,
    /// Over a soft limit, within the grace period (seconds left).
    Grace(u64),
    /// Over a soft limit past its grace period: it acts as a hard limit.
    SoftActsHard,
    /// At or over a hard limit.
    AtHard,
}

fn at_or_over(limit: Option<u64>, used: u64) -> bool {
    limit.is_some_and(|l| used >= l)
}

fn figures(l: &Limits, u: &DirStats) -> [(Option<u64>, u64); 4] {
    [
        (l.inodes, u.inodes),
        (l.length, u.length),
        (l.size, u.size),
        (l.realsize, u.realsize),
    ]
}

pub fn state(q: &QuotaReport) -> QuotaState {
    if figures(&q.limits.hard, &q.usage)
        .iter()
        .any(|(l, u)| at_or_over(*l, *u))
    {
        return QuotaState::AtHard;
    }
    match q.grace_left() {
        Some(0) => QuotaState::SoftActsHard,
        Some(left) => QuotaState::Grace(left),
        None => QuotaState::Ok,
    }
}

/// `[#####-----] 52%` of the tighter limit in force (hard, else soft); `-` without limit.
pub fn bar(used: u64, soft: Option<u64>, hard: Option<u64>) -> String {
    let Some(limit) = hard.or(soft) else {
        return "-".to_string();
    };
    let pct = fmt::percent(used, limit);
    let filled = ((pct as usize * BAR) / 100).min(BAR);
    format!(
        "[{}{}] {pct}%",
        "#".repeat(filled),
        "-".repeat(BAR - filled)
    )
}

fn state_cell<'a>(s: QuotaState, t: &Theme) -> (Span<'a>, Span<'a>) {
    match s {
        QuotaState::Ok => (Span::styled("ok", t.ok()), Span::raw("-")),
        QuotaState::Grace(left) => (
            Span::styled("over soft", t.warn()),
            Span::styled(fmt::duration(Duration::from_secs(left)), t.warn()),
        ),
        QuotaState::SoftActsHard => (
            Span::styled("soft acts as hard", t.bad()),
            Span::styled("over", t.bad()),
        ),
        QuotaState::AtHard => (Span::styled("at hard limit", t.bad()), Span::raw("-")),
    }
}

fn usage_cell<'a>(
    used: String,
    soft: Option<u64>,
    hard: Option<u64>,
    raw: u64,
    t: &Theme,
) -> Cell<'a> {
    let style: Style = if at_or_over(hard, raw) {
        t.bad()
    } else if soft.is_some_and(|s| raw > s) {
        t.warn()
    } else {
        Style::default()
    };
    Cell::from(Line::from(vec![
        Span::raw(format!("{used} ")),
        Span::styled(bar(raw, soft, hard), style),
    ]))
}

pub fn draw(app: &App, frame: &mut Frame, area: Rect, t: &Theme) {
    let quotas: &[QuotaReport] = app.info().map_or(&[], |i| i.quotas.as_slice());
    let block = super::pane_block(app, format!("Quotas ({})", quotas.len()), t);
    if app.info().is_none() {
        let why = app.master_problem().unwrap_or_default();
        super::empty(frame, area, block, vec![Line::styled(why, t.warn())]);
        return;
    }
    if quotas.is_empty() {
        super::empty(
            frame,
            area,
            block,
            vec![Line::raw(
                "no folder has a quota; moose-tool setquota -S SIZE DIR sets one",
            )],
        );
        return;
    }
    let header = Row::new(
        [
            "FOLDER",
            "STATE",
            "GRACE LEFT",
            "INODES",
            "LENGTH",
            "SIZE",
            "REALSIZE",
        ]
        .map(|h| Cell::from(Span::styled(h, t.dim()))),
    );
    let rows: Vec<Row> = quotas
        .iter()
        .map(|q| {
            let (s, grace) = state_cell(state(q), t);
            let (soft, hard, u) = (&q.limits.soft, &q.limits.hard, &q.usage);
            Row::new(vec![
                Cell::from(q.path.clone()),
                Cell::from(s),
                Cell::from(grace),
                usage_cell(fmt::count(u.inodes), soft.inodes, hard.inodes, u.inodes, t),
                usage_cell(fmt::bytes(u.length), soft.length, hard.length, u.length, t),
                usage_cell(fmt::bytes(u.size), soft.size, hard.size, u.size, t),
                usage_cell(
                    fmt::bytes(u.realsize),
                    soft.realsize,
                    hard.realsize,
                    u.realsize,
                    t,
                ),
            ])
        })
        .collect();
    let table = Table::new(
        rows,
        [
            Constraint::Min(14),
            Constraint::Length(17),
            Constraint::Length(10),
            Constraint::Length(24),
            Constraint::Length(28),
            Constraint::Length(28),
            Constraint::Length(28),
        ],
    )
    .header(header)
    .block(block)
    .row_highlight_style(t.selected())
    .highlight_symbol("▶ ");
    let mut state = TableState::default().with_selected(Some(
        app.selected[Pane::Quotas.index()].min(quotas.len() - 1),
    ));
    frame.render_stateful_widget(table, area, &mut state);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_show_the_tighter_limit_in_force() {
        assert_eq!(bar(5, None, Some(10)), "[#####-----] 50%");
        assert_eq!(bar(30, Some(10), None), "[##########] 300%");
        assert_eq!(bar(0, Some(10), Some(20)), "[----------] 0%");
        assert_eq!(bar(3, None, None), "-");
    }
}
