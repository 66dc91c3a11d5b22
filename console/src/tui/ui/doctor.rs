//! Doctor: every setup check's findings, worst first, and the evidence and fix of the
//! selected one. Opening the pane and `Ctrl-R` run the checks; `F` applies a safe fix.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table, TableState, Wrap};
use ratatui::Frame;

use super::Theme;
use crate::doctor::Status;
use crate::tui::app::{App, Pane};

fn style(s: Status, t: &Theme) -> Style {
    match s {
        Status::Error => t.bad(),
        Status::Warning => t.warn(),
        Status::Ok => t.ok(),
        Status::Info | Status::Skipped => t.dim(),
    }
}

pub fn draw(app: &App, frame: &mut Frame, area: Rect, t: &Theme) {
    let running = if app.doctor_running {
        ", checking…"
    } else {
        ""
    };
    let Some(report) = &app.doctor else {
        let block = super::pane_block(app, format!("Doctor{running}"), t);
        super::empty(
            frame,
            area,
            block,
            vec![Line::raw("every check runs from the host where its traffic starts; the first run is under way")],
        );
        return;
    };
    let c = &report.counts;
    let block = super::pane_block(
        app,
        format!(
            "Doctor ({} errors, {} warnings, {} info, {} ok, {} skipped; {} ms{running})",
            c.error, c.warning, c.info, c.ok, c.skipped, report.elapsed_ms
        ),
        t,
    );
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let selected = app.selected[Pane::Doctor.index()].min(report.results.len().saturating_sub(1));
    let chosen = report.results.get(selected);
    let detail_lines = chosen.map_or(0, |f| {
        f.evidence.len() + f.fix.as_ref().map_or(0, |x| x.lines().count()) + 2
    });
    let [table_area, detail_area] = Layout::vertical([
        Constraint::Min(3),
        Constraint::Length((detail_lines as u16).min(inner.height / 2)),
    ])
    .areas(inner);
    let header = Row::new(
        ["STATUS", "CHECK", "HOST", "SUMMARY"].map(|h| Cell::from(Span::styled(h, t.dim()))),
    );
    let body: Vec<Row> = report
        .results
        .iter()
        .map(|f| {
            Row::new(vec![
                Cell::from(Span::styled(f.status.as_str(), style(f.status, t))),
                Cell::from(f.check),
                Cell::from(f.host.clone()),
                Cell::from(f.summary.clone()),
            ])
        })
        .collect();
    let table = Table::new(
        body,
        [
            Constraint::Length(8),
            Constraint::Length(16),
            Constraint::Length(12),
            Constraint::Min(30),
        ],
    )
    .header(header)
    .row_highlight_style(t.selected())
    .highlight_symbol("▶ ");
    let mut state = TableState::default().with_selected(Some(selected));
    frame.render_stateful_widget(table, table_area, &mut state);
    if let Some(f) = chosen {
        let mut lines: Vec<Line> = f
            .evidence
            .iter()
            .map(|e| Line::styled(e.clone(), t.dim()))
            .collect();
        match &f.fix {
            Some(fix) => {
                let label = if f.safe_fix {
                    "fix (F applies it): "
                } else {
                    "fix: "
                };
                for (k, l) in fix.lines().enumerate() {
                    let head = if k == 0 { label } else { "" };
                    lines.push(Line::from(vec![
                        Span::styled(format!("{head:>20}"), t.dim()),
                        Span::raw(l.to_string()),
                    ]));
                }
            }
            None if f.status != Status::Ok => {
                lines.push(Line::styled("no fix to run: see the evidence", t.dim()))
            }
            None => {}
        }
        frame.render_widget(
            Paragraph::new(lines).wrap(Wrap { trim: false }),
            detail_area,
        );
    }
}
