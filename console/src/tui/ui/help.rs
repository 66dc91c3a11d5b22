//! `?`: the keys (from the key map) and the palette commands.

use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph};
use ratatui::Frame;

use super::Theme;
use crate::tui::keys::KEYS;
use crate::tui::palette::PALETTE;

pub fn draw(frame: &mut Frame, area: Rect, t: &Theme) {
    let mut lines = vec![Line::styled("Keys", t.bold())];
    for row in KEYS {
        lines.push(Line::from(vec![
            Span::styled(format!("  {:<24}", row.keys), t.accent()),
            Span::raw(row.does),
        ]));
    }
    lines.push(Line::raw(""));
    lines.push(Line::styled("Commands (:)", t.bold()));
    for (c, what) in PALETTE {
        lines.push(Line::from(vec![
            Span::styled(format!("  :{c:<23}"), t.accent()),
            Span::raw(*what),
        ]));
    }
    let width = area.width.saturating_sub(6).min(100);
    let height = (lines.len() as u16 + 2).min(area.height);
    let r = super::dialog::centered(area, width, height);
    frame.render_widget(Clear, r);
    frame.render_widget(
        Paragraph::new(lines).block(
            Block::bordered()
                .title(Span::styled(" Help ", t.bold()))
                .title_bottom(Span::styled(" any key closes ", t.dim())),
        ),
        r,
    );
}
