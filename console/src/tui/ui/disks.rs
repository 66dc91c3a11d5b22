//! Disks: every chunkserver disk as the master reports it.

use ratatui::layout::{Constraint, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Row, Table, TableState};
use ratatui::Frame;

use super::Theme;
use crate::fmt;
use crate::tui::app::{App, Pane};
use crate::tui::view;

pub fn draw(app: &App, frame: &mut Frame, area: Rect, t: &Theme) {
    let Some(info) = app.info() else {
        let block = super::pane_block(app, "Disks".to_string(), t);
        let why = app.master_problem().unwrap_or_default();
        super::empty(
            frame,
            area,
            block,
            vec![
                Line::styled(why, t.warn()),
                Line::styled("the disks are listed by the master", t.dim()),
            ],
        );
        return;
    };
    let rows = view::visible_disks(app);
    let total: usize = info.chunkservers.iter().map(|c| c.disks.len()).sum();
    let block = super::pane_block(app, format!("Disks ({} of {total})", rows.len()), t);
    if rows.is_empty() {
        let msg = if total == 0 {
            "the master lists no chunkserver disk yet (S starts the chunkservers)"
        } else {
            "no disk matches the filter; Esc clears it"
        };
        super::empty(frame, area, block, vec![Line::raw(msg)]);
        return;
    }
    let header = Row::new(
        [
            "CHUNKSERVER",
            "PATH",
            "CHUNKS",
            "USED / TOTAL",
            "",
            "ERRORS",
            "STATE",
        ]
        .map(|h| Cell::from(Span::styled(h, t.dim()))),
    );
    let body: Vec<Row> = rows
        .iter()
        .map(|d| {
            Row::new(vec![
                Cell::from(d.instance.clone().unwrap_or_else(|| d.server.clone())),
                Cell::from(d.path.clone()),
                Cell::from(fmt::count(d.chunks)),
                Cell::from(format!("{} / {}", fmt::bytes(d.used), fmt::bytes(d.total))),
                Cell::from(Span::styled(super::bar(d.used, d.total, 12), t.accent())),
                Cell::from(Span::styled(
                    d.errors.to_string(),
                    t.count(d.errors, crate::tui::app::Level::Warn),
                )),
                Cell::from(Span::styled(d.state.clone(), t.level(d.level))),
            ])
        })
        .collect();
    let table = Table::new(
        body,
        [
            Constraint::Length(24),
            Constraint::Fill(1),
            Constraint::Length(8),
            Constraint::Length(21),
            Constraint::Length(17),
            Constraint::Length(6),
            Constraint::Length(22),
        ],
    )
    .header(header)
    .block(block)
    .row_highlight_style(t.selected())
    .highlight_symbol("▶ ");
    let mut state = TableState::default()
        .with_selected(Some(app.selected[Pane::Disks.index()].min(rows.len() - 1)));
    frame.render_stateful_widget(table, area, &mut state);
}
