//! Exports: the master's exports lines (from the inventory) and the client hosts each admits.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table, TableState, Wrap};
use ratatui::Frame;

use super::Theme;
use crate::tui::app::{App, Pane};
use crate::tui::view;

pub fn draw(app: &App, frame: &mut Frame, area: Rect, t: &Theme) {
    let rows = view::visible_exports(app);
    let all = view::export_rows(&app.model);
    let block = super::pane_block(
        app,
        format!("Exports ({} of {} lines)", rows.len(), all.len()),
        t,
    );
    let file = app
        .model
        .inventory
        .cluster
        .config_dir
        .join("master-exports.cfg");
    let mut notes = vec![Line::from(vec![
        Span::styled("file ", t.dim()),
        Span::raw(file.display().to_string()),
        Span::styled(
            "  (written from the inventory by deploy; the master reads it at start and reload)",
            t.dim(),
        ),
    ])];
    let left_out = view::unadmitted_clients(&app.model, &all);
    if !left_out.is_empty() {
        notes.push(Line::styled(
            format!(
                "no line admits client host(s) {}: their mounts will be refused",
                left_out.join(", ")
            ),
            t.bad(),
        ));
    }
    let unchecked: Vec<String> = all.first().map(|r| r.unchecked.clone()).unwrap_or_default();
    if !unchecked.is_empty() {
        notes.push(Line::styled(
            format!(
                "client host(s) {} have names for addresses: the master matches the address it sees",
                unchecked.join(", ")
            ),
            t.warn(),
        ));
    }
    if all.is_empty() {
        notes.insert(
            0,
            Line::styled(
                "the inventory has no [[exports]] line: the master admits no client",
                t.bad(),
            ),
        );
        super::empty(frame, area, block, notes);
        return;
    }
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let [table_area, notes_area] = Layout::vertical([
        Constraint::Min(3),
        Constraint::Length(notes.len() as u16 + 1),
    ])
    .areas(inner);
    let header = Row::new(
        ["#", "ADDRESS", "PATH", "OPTIONS", "ADMITS CLIENT HOSTS"]
            .map(|h| Cell::from(Span::styled(h, t.dim()))),
    );
    let body: Vec<Row> = rows
        .iter()
        .map(|r| {
            let number = all.iter().position(|a| a == r).map_or(0, |k| k + 1);
            let admits = if r.path == "." {
                Span::styled("meta mounts (the trash: moose-mount -m)", t.dim())
            } else if r.admits.is_empty() {
                Span::styled("none of the inventory's clients", t.dim())
            } else {
                Span::styled(r.admits.join(", "), t.ok())
            };
            Row::new(vec![
                Cell::from(number.to_string()),
                Cell::from(r.address.clone()),
                Cell::from(r.path.clone()),
                Cell::from(r.options.clone()),
                Cell::from(admits),
            ])
        })
        .collect();
    let table = Table::new(
        body,
        [
            Constraint::Length(3),
            Constraint::Length(28),
            Constraint::Length(16),
            Constraint::Min(24),
            Constraint::Min(30),
        ],
    )
    .header(header)
    .row_highlight_style(t.selected())
    .highlight_symbol("▶ ");
    if rows.is_empty() {
        frame.render_widget(
            Paragraph::new(Line::raw("no line matches the filter; Esc clears it")),
            table_area,
        );
    } else {
        let mut state = TableState::default().with_selected(Some(
            app.selected[Pane::Exports.index()].min(rows.len() - 1),
        ));
        frame.render_stateful_widget(table, table_area, &mut state);
    }
    frame.render_widget(Paragraph::new(notes).wrap(Wrap { trim: true }), notes_area);
}
