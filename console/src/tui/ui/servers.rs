//! Servers: every role instance on every host: state, pid, version, uptime, registered.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Table, TableState, Wrap};
use ratatui::Frame;

use super::Theme;
use crate::fmt;
use crate::tui::app::{App, Pane};
use crate::tui::view;

pub fn draw(app: &App, frame: &mut Frame, area: Rect, t: &Theme) {
    let rows = view::visible_servers(app);
    let title = format!("Servers ({} of {})", rows.len(), app.model.instances.len());
    let block = super::pane_block(app, title, t);
    if rows.is_empty() {
        super::empty(
            frame,
            area,
            block,
            vec![Line::raw("no role matches the filter; Esc clears it")],
        );
        return;
    }
    const HEADER: [&str; 9] = [
        "HOST",
        "ROLE",
        "INSTANCE",
        "STATE",
        "PID",
        "VERSION",
        "UPTIME",
        "REGISTERED",
        "NOTE",
    ];
    let cells: Vec<[String; 9]> = rows
        .iter()
        .map(|(_, r)| {
            [
                r.host.clone(),
                r.role.as_str().to_string(),
                r.instance.clone(),
                r.state.clone(),
                r.pid.map_or_else(|| "-".into(), |p| p.to_string()),
                if r.version.is_empty() {
                    "-".to_string()
                } else {
                    r.version.clone()
                },
                r.uptime.map_or_else(|| "-".into(), fmt::duration),
                r.registered.clone(),
                r.note.clone(),
            ]
        })
        .collect();
    // Each column as wide as its widest cell (REGISTERED at most 24); NOTE takes the rest.
    let mut widths: Vec<Constraint> = (0..8)
        .map(|c| {
            let w = cells
                .iter()
                .map(|row| row[c].chars().count())
                .chain([HEADER[c].len()])
                .max()
                .unwrap_or(0);
            Constraint::Length(if c == 7 { w.min(24) } else { w } as u16)
        })
        .collect();
    widths.push(Constraint::Fill(1));
    let header = Row::new(HEADER.map(|h| Cell::from(Span::styled(h, t.dim()))));
    let body: Vec<Row> = rows
        .iter()
        .zip(cells)
        .map(|((_, r), c)| {
            Row::new(c.into_iter().enumerate().map(|(k, text)| match k {
                3 | 8 => Cell::from(Span::styled(text, t.level(r.level))),
                _ => Cell::from(text),
            }))
        })
        .collect();
    let table = Table::new(body, widths)
        .column_spacing(2)
        .header(header)
        .block(block)
        .row_highlight_style(t.selected())
        .highlight_symbol("▶ ");
    let selected = app.selected[Pane::Servers.index()].min(rows.len() - 1);
    let [list, details] = Layout::vertical([Constraint::Min(4), Constraint::Length(5)]).areas(area);
    let mut state = TableState::default().with_selected(Some(selected));
    frame.render_stateful_widget(table, list, &mut state);
    let (idx, row) = &rows[selected];
    let i = &app.model.instances[*idx];
    let mut lines = vec![Line::from(vec![
        Span::styled(format!("{}/{}", i.host, i.name), t.bold()),
        Span::styled(
            match (&i.mount_point, &i.config_path) {
                (Some(m), _) => format!("  mount {}  ", m.display()),
                (None, Some(c)) => format!("  config {}  ", c.display()),
                (None, None) => "  ".to_string(),
            },
            t.dim(),
        ),
        Span::styled(format!("log {}", app.model.log_of(i).display()), t.dim()),
    ])];
    if !row.note.is_empty() {
        lines.push(Line::styled(row.note.clone(), t.level(row.level)));
    }
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: true })
            .block(Block::new().borders(Borders::LEFT | Borders::RIGHT | Borders::BOTTOM)),
        details,
    );
}
