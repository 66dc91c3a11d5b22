//! Drawing: `draw(&App, &mut Frame)` only renders the state, it changes nothing.

mod dialog;
mod disks;
mod doctor;
mod exports;
mod header;
mod help;
mod logs;
mod overview;
mod quotas;
mod replication;
mod servers;

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Wrap};
use ratatui::Frame;

use crate::tui::app::{App, Level, Mode, Pane};

/// Smallest usable terminal.
pub const MIN_WIDTH: u16 = 80;
pub const MIN_HEIGHT: u16 = 20;

/// Colours, or none (`NO_COLOR`): every meaning also has a text or a modifier.
#[derive(Debug, Clone, Copy)]
pub struct Theme {
    mono: bool,
}

impl Theme {
    pub fn of(app: &App) -> Theme {
        Theme { mono: app.mono }
    }

    fn fg(&self, c: Color) -> Style {
        if self.mono {
            Style::default()
        } else {
            Style::default().fg(c)
        }
    }

    pub fn ok(&self) -> Style {
        self.fg(Color::Green)
    }

    pub fn warn(&self) -> Style {
        self.fg(Color::Yellow)
    }

    pub fn bad(&self) -> Style {
        self.fg(Color::Red).add_modifier(Modifier::BOLD)
    }

    pub fn dim(&self) -> Style {
        if self.mono {
            Style::default().add_modifier(Modifier::DIM)
        } else {
            Style::default().fg(Color::DarkGray)
        }
    }

    pub fn accent(&self) -> Style {
        self.fg(Color::Cyan).add_modifier(Modifier::BOLD)
    }

    pub fn bold(&self) -> Style {
        Style::default().add_modifier(Modifier::BOLD)
    }

    pub fn selected(&self) -> Style {
        Style::default().add_modifier(Modifier::REVERSED)
    }

    pub fn level(&self, l: Level) -> Style {
        match l {
            Level::Info => self.ok(),
            Level::Warn => self.warn(),
            Level::Error => self.bad(),
        }
    }

    /// The colour of a count that is bad when not zero.
    pub fn count(&self, n: u64, bad: Level) -> Style {
        if n == 0 {
            self.ok()
        } else {
            self.level(bad)
        }
    }
}

/// Draws the whole screen.
pub fn draw(app: &App, frame: &mut Frame) {
    let area = frame.area();
    let theme = Theme::of(app);
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        too_small(frame, area, &theme);
        return;
    }
    let op_height = if app.show_operation {
        app.operation
            .as_ref()
            .map_or(0, |op| dialog::operation_height(op, area.height))
    } else {
        0
    };
    let [head, tabs, body, op, foot] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(5),
        Constraint::Length(op_height),
        Constraint::Length(1),
    ])
    .areas(area);
    header::draw(app, frame, head, &theme);
    header::tabs(app, frame, tabs, &theme);
    match app.pane {
        Pane::Overview => overview::draw(app, frame, body, &theme),
        Pane::Servers => servers::draw(app, frame, body, &theme),
        Pane::Disks => disks::draw(app, frame, body, &theme),
        Pane::Replication => replication::draw(app, frame, body, &theme),
        Pane::Logs => logs::draw(app, frame, body, &theme),
        Pane::Exports => exports::draw(app, frame, body, &theme),
        Pane::Doctor => doctor::draw(app, frame, body, &theme),
        Pane::Quotas => quotas::draw(app, frame, body, &theme),
    }
    if let Some(o) = app.operation.as_ref().filter(|_| op_height > 0) {
        dialog::operation(app, o, frame, op, &theme);
    }
    footer(app, frame, foot, &theme);
    match &app.mode {
        Mode::Help => help::draw(frame, area, &theme),
        Mode::Confirm(d) => dialog::confirm(d, frame, area, &theme),
        _ => {}
    }
}

fn too_small(frame: &mut Frame, area: Rect, theme: &Theme) {
    let text = vec![
        Line::styled("moosectl: the terminal is too small", theme.bad()),
        Line::raw(format!(
            "it is {}x{}; the console needs at least {MIN_WIDTH}x{MIN_HEIGHT}",
            area.width, area.height
        )),
        Line::raw("make the window larger, or use the headless commands (moosectl status)"),
    ];
    let y = area.height.saturating_sub(text.len() as u16) / 2;
    let inner = Rect::new(
        area.x,
        area.y + y,
        area.width,
        area.height.saturating_sub(y),
    );
    frame.render_widget(
        Paragraph::new(text).centered().wrap(Wrap { trim: true }),
        inner,
    );
}

/// The bottom line: what is being typed, a message, or the main keys.
fn footer(app: &App, frame: &mut Frame, area: Rect, theme: &Theme) {
    let (prefix, input) = match &app.mode {
        Mode::Filter(i) => ("/", Some(i)),
        Mode::Palette(i) => (":", Some(i)),
        _ => ("", None),
    };
    if let Some(input) = input {
        let width = area.width.saturating_sub(2) as usize;
        let scroll = input.visual_scroll(width);
        let mut spans = vec![
            Span::styled(prefix, theme.accent()),
            Span::raw(input.value().chars().skip(scroll).collect::<String>()),
        ];
        if prefix == ":" {
            let word = input.value().split(' ').next().unwrap_or("");
            let hints: Vec<&str> = crate::tui::palette::PALETTE
                .iter()
                .map(|(c, _)| *c)
                .filter(|c| !word.is_empty() && c.starts_with(word) && !input.value().contains(' '))
                .collect();
            if !hints.is_empty() {
                spans.push(Span::styled(format!("   {}", hints.join(" ")), theme.dim()));
            }
        } else {
            spans.push(Span::styled(
                "   Enter keeps the filter, Esc clears it; !text shows what lacks text",
                theme.dim(),
            ));
        }
        frame.render_widget(Paragraph::new(Line::from(spans)), area);
        let x = (input.visual_cursor().saturating_sub(scroll) + 1) as u16;
        frame.set_cursor_position((area.x + x.min(area.width.saturating_sub(1)), area.y));
        return;
    }
    if let Some(f) = &app.flash {
        frame.render_widget(
            Paragraph::new(Line::styled(format!(" {}", f.text), theme.level(f.level))),
            area,
        );
        return;
    }
    let keys: &[(&str, &str)] = &[
        ("S", "start"),
        ("X", "stop"),
        ("r", "restart"),
        ("l", "logs"),
        ("/", "filter"),
        (":", "command"),
        ("o", "operation"),
        ("?", "help"),
        ("q", "quit"),
    ];
    let mut spans = Vec::new();
    for (k, what) in keys {
        spans.push(Span::styled(format!(" {k}"), theme.accent()));
        spans.push(Span::styled(format!(" {what} "), theme.dim()));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

/// The standard pane frame: a bordered block with the pane title and its filter.
pub fn pane_block<'a>(app: &App, title: String, theme: &Theme) -> Block<'a> {
    let filter = app.filter(app.pane);
    let mut block = Block::bordered().title(Span::styled(format!(" {title} "), theme.bold()));
    if !filter.is_empty() {
        block = block.title(Span::styled(format!(" /{filter} "), theme.accent()));
    }
    block
}

/// A text bar for a share: `██████░░░░ 60%`.
pub fn bar(used: u64, total: u64, width: usize) -> String {
    let pct = crate::fmt::percent(used, total).min(100) as usize;
    let filled = (pct * width + 50) / 100;
    format!(
        "{}{} {pct:>3}%",
        "█".repeat(filled),
        "░".repeat(width.saturating_sub(filled))
    )
}

/// A message in the middle of a pane that has nothing to show, saying why.
pub fn empty(frame: &mut Frame, area: Rect, block: Block, lines: Vec<Line>) {
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let y = inner.height.saturating_sub(lines.len() as u16) / 2;
    let r = Rect::new(
        inner.x,
        inner.y + y,
        inner.width,
        inner.height.saturating_sub(y),
    );
    frame.render_widget(
        Paragraph::new(lines).centered().wrap(Wrap { trim: true }),
        r,
    );
}

#[cfg(test)]
pub(crate) mod tests;
