//! Overview: space, files, chunks, health counts, operations per second.

use std::time::Duration;

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Gauge, Paragraph, Sparkline};
use ratatui::Frame;

use moose_inventory::Role;

use super::Theme;
use crate::doctor::checks::space::fullness;
use crate::doctor::Status;
use crate::fmt;
use crate::tui::app::{App, Level};
use crate::tui::view;

pub fn draw(app: &App, frame: &mut Frame, area: Rect, t: &Theme) {
    let block = super::pane_block(app, "Overview".to_string(), t);
    let Some(info) = app.info() else {
        let why = app.master_problem().unwrap_or_default();
        let mut lines = vec![
            Line::styled(why, t.warn()),
            Line::raw(""),
            Line::raw(format!(
                "inventory: {} ({} hosts, {} role instances)",
                app.model.inventory.source,
                app.model.inventory.hosts.len(),
                app.model.instances.len()
            )),
            Line::styled("S starts the cluster; 2 shows every role", t.dim()),
        ];
        lines.extend(warnings(app, t));
        super::empty(frame, area, block, lines);
        return;
    };
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let [top, gauge, _, roles, _, spark, _] = Layout::vertical([
        Constraint::Length(10),
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Max(10),
        Constraint::Min(0),
    ])
    .areas(inner);
    frame.render_widget(Paragraph::new(roles_line(app, t)), roles);
    let [left, right] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)])
            .spacing(2)
            .areas(top);

    let kv = |k: &str, v: String| {
        Line::from(vec![
            Span::styled(format!("{k:<18}"), t.dim()),
            Span::raw(v),
        ])
    };
    let used = info.total_space.saturating_sub(info.avail_space);
    let mut l = vec![
        kv("cluster id", format!("{:016X}", info.cluster_id)),
        kv(
            "master",
            format!(
                "{}:{} v{}, up {}",
                app.model.master_address(),
                app.model.master_client_port(),
                info.version,
                fmt::duration(Duration::from_secs(info.uptime_secs))
            ),
        ),
        kv("metadata version", fmt::count(info.metadata_version)),
        kv(
            "space",
            format!(
                "{} used of {} ({} free)",
                fmt::bytes(used),
                fmt::bytes(info.total_space),
                fmt::bytes(info.avail_space)
            ),
        ),
        kv(
            "files",
            format!(
                "{} · in the trash {} ({})",
                fmt::count(info.files),
                fmt::count(info.trash_files),
                fmt::bytes(info.trash_bytes)
            ),
        ),
        kv("folders", fmt::count(info.dirs)),
        kv("chunks", fmt::count(info.chunks)),
        kv("sessions", fmt::count(info.sessions)),
        kv("metaloggers", info.metaloggers.len().to_string()),
    ];
    l.extend(warnings(app, t));
    frame.render_widget(
        Paragraph::new(l).block(Block::new().title(Span::styled("Cluster", t.bold()))),
        left,
    );

    let h = &info.health;
    let count = |k: &str, n: u64, bad: Level| {
        Line::from(vec![
            Span::styled(format!("{k:<18}"), t.dim()),
            Span::styled(fmt::count(n), t.count(n, bad)),
        ])
    };
    let plain = |k: &str, v: String| {
        Line::from(vec![
            Span::styled(format!("{k:<18}"), t.dim()),
            Span::raw(v),
        ])
    };
    let r = vec![
        count("missing", h.missing, Level::Error),
        count("endangered", h.endangered, Level::Error),
        count("undergoal", h.undergoal, Level::Warn),
        plain("stable", fmt::count(h.stable)),
        plain("overgoal", fmt::count(h.overgoal)),
        plain("pending deletion", fmt::count(h.pending_deletion)),
        plain("replicating now", fmt::count(h.replicating)),
        plain(
            "replicated",
            format!(
                "{} since the master started",
                fmt::count(h.replicated_total)
            ),
        ),
        quota_line(info, t),
    ];
    frame.render_widget(
        Paragraph::new(r).block(Block::new().title(Span::styled("Chunk health", t.bold()))),
        right,
    );

    frame.render_widget(
        Gauge::default()
            .ratio((fmt::percent(used, info.total_space) as f64 / 100.0).clamp(0.0, 1.0))
            .label(format!(
                "space used {}%: {} of {}",
                fmt::percent(used, info.total_space),
                fmt::bytes(used),
                fmt::bytes(info.total_space)
            ))
            .gauge_style(match fullness(info.total_space, info.avail_space) {
                Status::Ok => t.ok(),
                Status::Warning => t.warn(),
                _ => t.bad(),
            }),
        gauge,
    );

    let history: Vec<u64> = app.ops.history.iter().copied().collect();
    let shown = &history[history.len().saturating_sub(spark.width as usize)..];
    let title = match app.ops.now() {
        Some(now) => format!(
            "operations per second: {now} now, {} at most in the last {}",
            shown.iter().max().copied().unwrap_or(0),
            fmt::duration(Duration::from_secs(shown.len() as u64))
        ),
        None => "operations per second: measured from the second status poll on".to_string(),
    };
    frame.render_widget(
        Sparkline::default()
            .block(Block::new().title(Span::styled(title, t.bold())))
            .data(shown)
            .style(t.accent()),
        spark,
    );
}

/// `quotas  3: 1 over a soft limit, 0 past the grace period`.
fn quota_line<'a>(info: &moose_proto::msg::ClusterInfo, t: &Theme) -> Line<'a> {
    let over = info
        .quotas
        .iter()
        .filter(|q| q.grace_left().is_some())
        .count() as u64;
    let hard = info
        .quotas
        .iter()
        .filter(|q| q.grace_left() == Some(0))
        .count() as u64;
    Line::from(vec![
        Span::styled(format!("{:<18}", "quotas"), t.dim()),
        Span::raw(format!("{}: ", fmt::count(info.quotas.len() as u64))),
        Span::styled(fmt::count(over), t.count(over, Level::Warn)),
        Span::raw(" over soft, "),
        Span::styled(fmt::count(hard), t.count(hard, Level::Error)),
        Span::raw(" past grace"),
    ])
}

/// `roles  master running · metaloggers 1/1 · chunkservers 3/3 · clients 1/1 mounted`.
fn roles_line<'a>(app: &App, t: &Theme) -> Line<'a> {
    let rows = view::server_rows(&app.model, app.snapshot.as_ref());
    let mut spans = vec![Span::styled(format!("{:<18}", "roles"), t.dim())];
    for (k, role) in Role::ALL.iter().enumerate() {
        let of_role: Vec<_> = rows.iter().filter(|r| r.role == *role).collect();
        if of_role.is_empty() {
            continue;
        }
        let up = of_role
            .iter()
            .filter(|r| r.state == "running" || r.state == "mounted")
            .count();
        let word = if *role == Role::Client {
            "mounted"
        } else {
            "running"
        };
        if k > 0 {
            spans.push(Span::styled(" · ", t.dim()));
        }
        let name = match role {
            Role::Master => "master",
            Role::Metalogger => "metaloggers",
            Role::Chunkserver => "chunkservers",
            Role::Client => "clients",
        };
        spans.push(Span::raw(format!("{name} ")));
        let style = if up == of_role.len() {
            t.ok()
        } else {
            t.warn()
        };
        spans.push(Span::styled(
            format!("{up}/{} {word}", of_role.len()),
            style,
        ));
    }
    Line::from(spans)
}

fn warnings<'a>(app: &App, t: &Theme) -> Vec<Line<'a>> {
    app.model
        .warnings
        .iter()
        .map(|w| Line::styled(w.clone(), t.warn()))
        .collect()
}
