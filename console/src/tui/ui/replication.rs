//! Replication: the goal × valid-copies matrix, the health counts, the replication rate.

use std::time::Duration;

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Paragraph, Row, Table};
use ratatui::Frame;

use super::Theme;
use crate::fmt;
use crate::tui::app::{App, Level};

/// Columns of the matrix: 0..=9 copies and "10+".
const COPIES: usize = 11;

pub fn draw(app: &App, frame: &mut Frame, area: Rect, t: &Theme) {
    let block = super::pane_block(app, "Replication".to_string(), t);
    let Some(info) = app.info() else {
        let why = app.master_problem().unwrap_or_default();
        super::empty(
            frame,
            area,
            block,
            vec![
                Line::styled(why, t.warn()),
                Line::styled("the chunk matrix comes from the master", t.dim()),
            ],
        );
        return;
    };
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let h = &info.health;
    let goals: Vec<usize> = (0..h.matrix.len())
        .filter(|&g| h.matrix[g].iter().any(|&n| n > 0))
        .collect();
    let [matrix_area, counts_area] = Layout::vertical([
        Constraint::Length(goals.len().max(1) as u16 + 3),
        Constraint::Min(6),
    ])
    .areas(inner);

    if goals.is_empty() {
        frame.render_widget(
            Paragraph::new(vec![
                Line::styled("Chunks by goal (rows) and valid copies (columns)", t.bold()),
                Line::raw("no chunks yet: write files through a mount to see them here"),
            ]),
            matrix_area,
        );
    } else {
        let mut header = vec![Cell::from(Span::styled("goal \\ copies", t.dim()))];
        header.extend((0..COPIES).map(|c| {
            let label = if c == COPIES - 1 {
                "10+".to_string()
            } else {
                c.to_string()
            };
            Cell::from(Span::styled(format!("{label:>7}"), t.dim()))
        }));
        header.push(Cell::from(Span::styled(format!("{:>9}", "all"), t.dim())));
        let rows: Vec<Row> = goals
            .iter()
            .map(|&g| {
                let counts = &h.matrix[g];
                let mut cells = vec![Cell::from(format!("{g:>4}"))];
                cells.extend((0..COPIES).map(|c| {
                    let n = counts.get(c).copied().unwrap_or(0);
                    let style = if n == 0 {
                        t.dim()
                    } else if c == 0 {
                        t.bad()
                    } else if c == 1 && g > 1 {
                        t.level(Level::Error)
                    } else if c < g {
                        t.warn()
                    } else if c == g {
                        t.ok()
                    } else {
                        t.accent()
                    };
                    let text = if n == 0 {
                        "-".to_string()
                    } else {
                        fmt::count(n)
                    };
                    Cell::from(Span::styled(format!("{text:>7}"), style))
                }));
                cells.push(Cell::from(format!(
                    "{:>9}",
                    fmt::count(counts.iter().sum())
                )));
                Row::new(cells)
            })
            .collect();
        let mut widths = vec![Constraint::Length(13)];
        widths.extend(std::iter::repeat_n(Constraint::Length(7), COPIES));
        widths.push(Constraint::Length(9));
        frame.render_widget(
            Table::new(rows, widths)
                .header(Row::new(header))
                .block(Block::new().title(Span::styled(
                    match h.swept_secs_ago {
                        Some(secs) => format!(
                        "Chunks by goal (rows) and valid copies (columns), last sweep {secs} s ago"
                    ),
                        None => "Chunks by goal (rows) and valid copies (columns)".to_string(),
                    },
                    t.bold(),
                ))),
            matrix_area,
        );
    }

    let to_copy = h.undergoal + h.endangered;
    let rate = app.replication.smoothed();
    let count = |k: &str, n: u64, bad: Level| {
        Line::from(vec![
            Span::styled(format!("{k:<24}"), t.dim()),
            Span::styled(fmt::count(n), t.count(n, bad)),
        ])
    };
    let plain = |k: &str, v: String| {
        Line::from(vec![
            Span::styled(format!("{k:<24}"), t.dim()),
            Span::raw(v),
        ])
    };
    let mut lines = vec![
        Line::styled("Counts", t.bold()),
        count("missing (no copy)", h.missing, Level::Error),
        count("endangered (1 copy)", h.endangered, Level::Error),
        count("undergoal", h.undergoal, Level::Warn),
        plain("stable", fmt::count(h.stable)),
        plain("overgoal", fmt::count(h.overgoal)),
        plain("pending deletion", fmt::count(h.pending_deletion)),
        plain("replicating now", fmt::count(h.replicating)),
        plain("replicated in total", fmt::count(h.replicated_total)),
    ];
    if h.moved_total > 0 {
        lines.push(plain("moved (rebalancing)", fmt::count(h.moved_total)));
    }
    if h.to_repair > 0 {
        lines.push(count("needing repair", h.to_repair, Level::Error));
    }
    lines.push(plain(
        "replication rate",
        match rate {
            Some(r) => format!("{r:.1} copies/s"),
            None => "measured from the second status poll on".to_string(),
        },
    ));
    let eta = match (to_copy, rate) {
        (0, _) => "nothing to copy: every chunk has its goal".to_string(),
        (n, Some(r)) if r > 0.0 => format!(
            "{} chunk(s) to copy, about {} at this rate",
            fmt::count(n),
            fmt::duration(Duration::from_secs_f64((n as f64 / r).ceil()))
        ),
        (n, _) => format!("{} chunk(s) to copy, no copying seen yet", fmt::count(n)),
    };
    lines.push(plain("until every goal is met", eta));
    frame.render_widget(Paragraph::new(lines), counts_area);
}
