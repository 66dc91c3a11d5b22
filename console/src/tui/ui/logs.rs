//! Logs: the followed log files, one source or all merged, filtered, following the newest
//! line or scrolled back.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use super::Theme;
use crate::tui::app::App;

pub fn draw(app: &App, frame: &mut Frame, area: Rect, t: &Theme) {
    let source_name = match app.log_source.and_then(|s| app.logs.sources.get(s)) {
        Some(s) => format!("{} ({})", s.label, s.path.display()),
        None => "all sources".to_string(),
    };
    let block =
        super::pane_block(app, format!("Logs: {source_name}"), t).title_bottom(Span::styled(
            " [ ] source  f follow  / filter  ↑↓ PgUp PgDn scroll  G newest ",
            t.dim(),
        ));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let [bar, body] = Layout::vertical([Constraint::Length(1), Constraint::Min(1)]).areas(inner);

    let mut sources = vec![Span::styled("source ", t.dim())];
    let all = [(None, "all".to_string())];
    let each = app
        .logs
        .sources
        .iter()
        .enumerate()
        .map(|(k, s)| (Some(k), s.label.clone()));
    for (k, label) in all.into_iter().chain(each) {
        let style = if k == app.log_source {
            t.selected()
        } else {
            t.dim()
        };
        sources.push(Span::styled(format!(" {label} "), style));
    }
    let lines = app.logs.select(app.log_source, &app.log_filter());
    let dropped: u64 = app
        .logs
        .sources
        .iter()
        .enumerate()
        .filter(|(k, _)| app.log_source.is_none_or(|s| s == *k))
        .map(|(_, s)| s.dropped)
        .sum();
    sources.push(Span::styled(
        format!(
            "   {} line(s){} · {}",
            lines.len(),
            if dropped > 0 {
                format!(" ({dropped} older dropped)")
            } else {
                String::new()
            },
            if app.log_follow {
                "following".to_string()
            } else {
                format!("scrolled back {} lines", app.log_scroll)
            }
        ),
        t.dim(),
    ));
    frame.render_widget(Paragraph::new(Line::from(sources)), bar);

    let height = body.height as usize;
    if lines.is_empty() {
        let msg = if app.logs.is_empty() {
            "no log lines yet: the daemons write here once started"
        } else {
            "no line matches (source or filter); Esc clears the filter"
        };
        frame.render_widget(Paragraph::new(Line::styled(msg, t.dim())), body);
        return;
    }
    let end = lines.len().saturating_sub(app.log_scroll);
    let start = end.saturating_sub(height);
    let label_width = app
        .logs
        .sources
        .iter()
        .map(|s| s.label.chars().count())
        .max()
        .unwrap_or(0);
    let shown: Vec<Line> = lines[start..end]
        .iter()
        .map(|(src, l)| {
            let mut spans = Vec::new();
            if app.log_source.is_none() {
                let label = &app.logs.sources[*src].label;
                spans.push(Span::styled(format!("{label:<label_width$} │ "), t.dim()));
            }
            let style = if l.notice {
                t.dim()
            } else if l.text.contains(" ERROR ") {
                t.bad()
            } else if l.text.contains(" WARN ") {
                t.warn()
            } else {
                ratatui::style::Style::default()
            };
            spans.push(Span::styled(l.text.clone(), style));
            Line::from(spans)
        })
        .collect();
    frame.render_widget(Paragraph::new(shown), body);
}
