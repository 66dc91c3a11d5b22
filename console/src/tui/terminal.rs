//! The terminal UI loop. It runs on its own thread (drawing writes to the terminal, which
//! blocks): events come in from the key reader thread and from tokio tasks (ticks, monitor
//! snapshots, log lines, plan progress) through one bounded channel; each is given to
//! `update`, the effects it returns are started on the runtime, and the screen is drawn
//! when something visible changed, after every queued event has been handled.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use crossterm::event::Event as TermEvent;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, Notify};

use crate::doctor;
use crate::engine::exec;
use crate::engine::logs;
use crate::engine::model::Fleet;
use crate::engine::monitor;
use crate::tui::app::App;
use crate::tui::event::{Effect, Event};
use crate::tui::ui;
use crate::tui::update::update;

/// Room in the event queue; senders wait when it is full.
const QUEUE: usize = 1024;
/// Most events handled between two draws.
const BATCH: usize = 512;

/// Runs the console until the user quits.
pub fn run(rt: &Handle, cluster: Fleet, readonly: bool) -> Result<()> {
    let mono = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let mut terminal = ratatui::try_init().context("cannot set up the terminal")?;
    let result = event_loop(rt, &mut terminal, cluster, readonly, mono);
    ratatui::restore();
    result
}

fn event_loop(
    rt: &Handle,
    terminal: &mut ratatui::DefaultTerminal,
    cluster: Fleet,
    readonly: bool,
    mono: bool,
) -> Result<()> {
    let (tx, mut rx) = mpsc::channel::<Event>(QUEUE);
    let mut app = App::new(cluster.model.clone(), readonly, mono, Instant::now());
    let size = terminal.size().context("cannot read the terminal size")?;
    app.size = (size.width, size.height);

    // Keys and resizes, from a thread of their own (crossterm reads block).
    {
        let tx = tx.clone();
        std::thread::Builder::new()
            .name("keys".into())
            .spawn(move || loop {
                let ev = match crossterm::event::read() {
                    Ok(TermEvent::Key(k)) => Event::Key(k),
                    Ok(TermEvent::Resize(w, h)) => Event::Resize(w, h),
                    Ok(_) => continue,
                    Err(_) => return,
                };
                if tx.blocking_send(ev).is_err() {
                    return;
                }
            })
            .context("cannot start the key reader")?;
    }
    // Ticks.
    {
        let tx = tx.clone();
        rt.spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                if tx.send(Event::Tick(Instant::now())).await.is_err() {
                    return;
                }
            }
        });
    }
    // Status monitor.
    let refresh = Arc::new(Notify::new());
    {
        let (stx, mut srx) = mpsc::channel(2);
        rt.spawn(monitor::run(cluster.clone(), stx, refresh.clone()));
        let tx = tx.clone();
        let unknown_keys = cluster.unknown_keys.clone();
        rt.spawn(async move {
            while let Some(s) = srx.recv().await {
                if tx.send(Event::Monitor(Box::new(s))).await.is_err() {
                    return;
                }
                // Host keys refused since the last poll: the console asks about them.
                let keys = std::mem::take(&mut *unknown_keys.lock());
                for k in keys {
                    if tx.send(Event::UnknownHostKey(k)).await.is_err() {
                        return;
                    }
                }
            }
        });
    }
    // Log followers.
    {
        let (ltx, mut lrx) = mpsc::channel(256);
        for (k, s) in app.logs.sources.iter().enumerate() {
            rt.spawn(logs::follow(
                cluster.host(&s.host),
                k,
                s.path.clone(),
                ltx.clone(),
            ));
        }
        let tx = tx.clone();
        rt.spawn(async move {
            while let Some(l) = lrx.recv().await {
                if tx.send(Event::Log(l)).await.is_err() {
                    return;
                }
            }
        });
    }

    loop {
        if app.dirty {
            terminal
                .draw(|f| ui::draw(&app, f))
                .context("cannot draw on the terminal")?;
            app.dirty = false;
        }
        if app.quit {
            return Ok(());
        }
        let Some(first) = rx.blocking_recv() else {
            return Ok(());
        };
        let mut next = Some(first);
        let mut handled = 0;
        while let Some(ev) = next.take() {
            for cmd in update(&mut app, ev) {
                start(rt, &cluster, &tx, &refresh, cmd);
            }
            handled += 1;
            if handled < BATCH && !app.quit {
                next = rx.try_recv().ok();
            }
        }
    }
}

/// Starts a command on the runtime; its results come back as events.
fn start(
    rt: &Handle,
    cluster: &Fleet,
    tx: &mpsc::Sender<Event>,
    refresh: &Arc<Notify>,
    cmd: Effect,
) {
    match cmd {
        Effect::Refresh => refresh.notify_one(),
        Effect::TrustHostKey(k) => {
            if let Err(e) = k.trust() {
                let _ = tx.try_send(Event::Error(format!(
                    "cannot add the host key of {} to {}: {e}",
                    k.host,
                    k.file.display()
                )));
            }
            refresh.notify_one();
        }
        Effect::PreviewDeploy(plan) => {
            let cluster = cluster.clone();
            let tx = tx.clone();
            rt.spawn(async move {
                let diff = crate::engine::deploy::preview(&cluster, &plan).await;
                let _ = tx
                    .send(Event::DeployPreview {
                        plan: Box::new(plan),
                        diff,
                    })
                    .await;
            });
        }
        Effect::RunDoctor => {
            let (cluster, tx) = (cluster.clone(), tx.clone());
            rt.spawn(async move {
                let report = doctor::run(&cluster, doctor::Scope::default(), false).await;
                let _ = tx.send(Event::Doctor(Box::new(report), None)).await;
            });
        }
        Effect::ApplyFix(f) => {
            let (cluster, tx) = (cluster.clone(), tx.clone());
            rt.spawn(async move {
                let failed = match (f.action.clone(), f.fix.clone()) {
                    (Some(action), Some(shown)) => {
                        let plan = [(f.host.clone(), shown, f.check, action)];
                        doctor::fix::apply(&cluster, &plan)
                            .await
                            .into_iter()
                            .find_map(|o| {
                                o.message.map(|m| format!("{} on {}: {m}", o.fix, o.host))
                            })
                    }
                    _ => None,
                };
                let report = doctor::run(&cluster, doctor::Scope::default(), false).await;
                let _ = tx.send(Event::Doctor(Box::new(report), failed)).await;
            });
        }
        Effect::RunPlan(plan) => {
            let (ptx, mut prx) = mpsc::channel(256);
            let cluster = cluster.clone();
            rt.spawn(async move { exec::run(&cluster, &plan, ptx).await });
            let tx = tx.clone();
            rt.spawn(async move {
                while let Some(p) = prx.recv().await {
                    if tx.send(Event::Progress(p)).await.is_err() {
                        return;
                    }
                }
            });
        }
    }
}
