//! `update(&mut App, Event) -> Vec<Effect>`: every change of the console state, and the only
//! place where actions are allowed or refused (read-only mode, one operation at a time).

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use tui_input::backend::crossterm::EventHandler;
use tui_input::Input;

use crate::cli::args::Verb;
use crate::engine::exec::Progress;
use crate::engine::host::FollowEvent;
use crate::engine::model::Target;
use crate::engine::plan::{self, Action, Plan};
use crate::tui::app::{App, Confirmed, Dialog, Level, Mode, Operation, Pane};
use crate::tui::event::{Effect, Event};
use crate::tui::keys::{self, Intent};
use crate::tui::palette::{self, PaletteCmd};
use crate::tui::view;

pub fn update(app: &mut App, event: Event) -> Vec<Effect> {
    match event {
        Event::Key(key) => {
            if key.kind == KeyEventKind::Release {
                return vec![];
            }
            app.dirty = true;
            key_event(app, key)
        }
        Event::Resize(w, h) => {
            app.size = (w, h);
            app.dirty = true;
            vec![]
        }
        Event::Tick(now) => {
            app.now = now;
            if app.flash.as_ref().is_some_and(|f| f.until <= now) {
                app.flash = None;
                app.dirty = true;
            }
            if app.operation_running() {
                app.dirty = true;
            }
            vec![]
        }
        Event::Monitor(snap) => {
            app.now = app.now.max(snap.at);
            if let Ok(info) = &snap.master {
                app.ops.sample(snap.at, info.ops_total);
                app.replication
                    .sample(snap.at, info.health.replicated_total);
            }
            app.snapshot = Some(*snap);
            app.dirty = true;
            vec![]
        }
        Event::DeployPreview { plan, diff } => deploy_preview(app, *plan, diff),
        Event::Doctor(report, failed) => {
            app.doctor = Some(*report);
            app.doctor_running = false;
            if let Some(why) = failed {
                app.flash(Level::Error, why);
            }
            let rows = app.doctor.as_ref().map_or(0, |r| r.results.len());
            let sel = &mut app.selected[Pane::Doctor.index()];
            *sel = (*sel).min(rows.saturating_sub(1));
            app.dirty = true;
            vec![]
        }
        Event::Error(text) => {
            app.flash(Level::Error, text);
            vec![]
        }
        Event::UnknownHostKey(k) => {
            // Asked when nothing else is: the host asks again at its next attempt.
            if matches!(app.mode, Mode::Normal) {
                app.mode = Mode::Confirm(Dialog {
                    title: format!("Trust the host key of {}?", k.host),
                    body: vec![
                        format!("{} offers {}.", k.pattern, k.fingerprint),
                        "No known_hosts entry names it. Compare it with \
                         ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub on the host."
                            .to_string(),
                        format!("Trust adds it to {}.", k.file.display()),
                        String::new(),
                        "Tab moves to the button, Enter presses it, Esc cancels.".to_string(),
                    ],
                    yes: "Trust".to_string(),
                    focus_yes: false,
                    then: Confirmed::TrustHostKey(k),
                });
            }
            vec![]
        }
        Event::Log(ev) => {
            let shown = app.log_source.is_none_or(|s| s == ev.source);
            match ev.event {
                FollowEvent::Lines(lines) => {
                    if !app.log_follow && shown {
                        let f = app.log_filter();
                        app.log_scroll += lines.iter().filter(|l| f.matches(l)).count();
                    }
                    app.logs.push(ev.source, lines);
                }
                FollowEvent::Notice(text) => {
                    if !app.log_follow && shown {
                        app.log_scroll += 1;
                    }
                    app.logs.notice(ev.source, text);
                }
            }
            if app.pane == Pane::Logs && shown {
                app.dirty = true;
            }
            vec![]
        }
        Event::Progress(p) => {
            let mut out = vec![];
            if let Some(op) = app.operation.as_mut() {
                op.apply(&p);
                match &p {
                    Progress::Finished { ok, message, .. } => {
                        let level = if *ok { Level::Info } else { Level::Error };
                        app.flash(level, message.clone());
                        out.push(Effect::Refresh);
                    }
                    Progress::Stage { .. } => out.push(Effect::Refresh),
                    Progress::Step { .. } => {}
                }
            }
            app.dirty = true;
            out
        }
    }
}

fn key_event(app: &mut App, key: KeyEvent) -> Vec<Effect> {
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    match std::mem::take(&mut app.mode) {
        Mode::Normal => normal_key(app, key, ctrl),
        Mode::Help => {
            // Any key closes the help; the key itself does nothing else.
            vec![]
        }
        Mode::Filter(mut input) => {
            match key.code {
                KeyCode::Esc => set_filter(app, String::new()),
                KeyCode::Enter => {}
                _ => {
                    input.handle_event(&crossterm::event::Event::Key(key));
                    set_filter(app, input.value().to_string());
                    app.mode = Mode::Filter(input);
                }
            }
            vec![]
        }
        Mode::Palette(mut input) => match key.code {
            KeyCode::Esc => vec![],
            KeyCode::Enter => palette(app, input.value()),
            KeyCode::Tab => {
                let done = palette::complete(input.value());
                app.mode = Mode::Palette(Input::new(done));
                vec![]
            }
            _ => {
                input.handle_event(&crossterm::event::Event::Key(key));
                app.mode = Mode::Palette(input);
                vec![]
            }
        },
        Mode::Confirm(mut d) => match key.code {
            KeyCode::Tab
            | KeyCode::BackTab
            | KeyCode::Left
            | KeyCode::Right
            | KeyCode::Char('h')
            | KeyCode::Char('l') => {
                d.focus_yes = !d.focus_yes;
                app.mode = Mode::Confirm(d);
                vec![]
            }
            KeyCode::Enter if d.focus_yes => confirmed(app, d.then),
            KeyCode::Enter | KeyCode::Esc | KeyCode::Char('n') | KeyCode::Char('q') => {
                app.flash(Level::Info, "cancelled");
                vec![]
            }
            _ => {
                app.mode = Mode::Confirm(d);
                vec![]
            }
        },
    }
}

fn set_filter(app: &mut App, text: String) {
    let pane = app.pane;
    app.filters[pane.index()] = text;
    app.selected[pane.index()] = 0;
    if pane == Pane::Logs {
        app.log_scroll = 0;
    }
}

fn normal_key(app: &mut App, key: KeyEvent, ctrl: bool) -> Vec<Effect> {
    match keys::intent(key.code, ctrl) {
        Some(intent) => act(app, intent),
        None => unbound(app),
    }
}

/// A key that means nothing here changes nothing, not even the screen.
fn unbound(app: &mut App) -> Vec<Effect> {
    app.dirty = false;
    vec![]
}

fn act(app: &mut App, intent: Intent) -> Vec<Effect> {
    match intent {
        Intent::Quit => quit(app),
        Intent::Refresh if app.pane == Pane::Doctor => run_doctor(app),
        Intent::Refresh => vec![Effect::Refresh],
        Intent::NextPane => open_pane(app, Pane::ALL[(app.pane.index() + 1) % Pane::ALL.len()]),
        Intent::PreviousPane => open_pane(
            app,
            Pane::ALL[(app.pane.index() + Pane::ALL.len() - 1) % Pane::ALL.len()],
        ),
        Intent::Pane(k) => open_pane(app, Pane::ALL[k]),
        Intent::ApplyFix => ask_fix(app),
        Intent::Palette => {
            app.mode = Mode::Palette(Input::default());
            vec![]
        }
        Intent::Filter => {
            app.mode = Mode::Filter(Input::new(app.filter(app.pane).to_string()));
            vec![]
        }
        Intent::Help => {
            app.mode = Mode::Help;
            vec![]
        }
        Intent::Start => run_action(app, Action::Start, None),
        Intent::Stop => run_action(app, Action::Stop, None),
        Intent::Deploy => run_action(app, Action::Deploy, None),
        Intent::Restart => match selected_instance(app) {
            Some(idx) => {
                let t = Target::of(&app.model.instances[idx]);
                run_action(app, Action::Restart, Some(t))
            }
            None => {
                app.flash(
                    Level::Warn,
                    "select a role in the Servers pane (2) to restart it",
                );
                vec![]
            }
        },
        Intent::LogsOfSelection => {
            match selected_instance(app) {
                Some(idx) => {
                    app.log_source = app.log_source_of.get(idx).copied();
                    app.pane = Pane::Logs;
                    app.log_follow = true;
                    app.log_scroll = 0;
                }
                None => app.flash(
                    Level::Warn,
                    "select a role (Servers) or a disk (Disks) to see its logs",
                ),
            }
            vec![]
        }
        Intent::PreviousLogSource | Intent::NextLogSource | Intent::ToggleFollow
            if app.pane != Pane::Logs =>
        {
            unbound(app)
        }
        Intent::PreviousLogSource => {
            cycle_log_source(app, false);
            vec![]
        }
        Intent::NextLogSource => {
            cycle_log_source(app, true);
            vec![]
        }
        Intent::ToggleFollow => {
            app.log_follow = !app.log_follow;
            app.log_scroll = 0;
            vec![]
        }
        Intent::TogglePlan => {
            if app.operation.is_some() {
                app.show_operation = !app.show_operation;
            } else {
                app.flash(
                    Level::Info,
                    "no operation yet: S starts the cluster, X stops it",
                );
            }
            vec![]
        }
        Intent::Escape => {
            if !app.filter(app.pane).is_empty() {
                set_filter(app, String::new());
            } else if app.operation.as_ref().is_some_and(|o| !o.running()) {
                app.show_operation = false;
            }
            vec![]
        }
        Intent::Up => {
            move_selection(app, -1);
            vec![]
        }
        Intent::Down => {
            move_selection(app, 1);
            vec![]
        }
        Intent::PageUp => {
            move_selection(app, -(page(app) as isize));
            vec![]
        }
        Intent::PageDown => {
            move_selection(app, page(app) as isize);
            vec![]
        }
        Intent::Top => {
            move_selection(app, isize::MIN / 2);
            vec![]
        }
        Intent::Bottom => {
            move_selection(app, isize::MAX / 2);
            vec![]
        }
    }
}

fn quit(app: &mut App) -> Vec<Effect> {
    if let Some(op) = app.operation.as_ref().filter(|o| o.running()) {
        app.mode = Mode::Confirm(Dialog {
            title: "Quit while an operation runs?".to_string(),
            body: vec![
                format!(
                    "The {} plan is still running; quitting abandons it where it is.",
                    op.plan.action.as_str()
                ),
                "Daemons already started or stopped stay so.".to_string(),
            ],
            yes: "Quit".to_string(),
            focus_yes: false,
            then: Confirmed::Quit,
        });
    } else {
        app.quit = true;
    }
    vec![]
}

fn confirmed(app: &mut App, then: Confirmed) -> Vec<Effect> {
    match then {
        Confirmed::Quit => {
            app.quit = true;
            vec![]
        }
        Confirmed::RunPlan(plan) => launch(app, plan),
        Confirmed::TrustHostKey(k) => vec![Effect::TrustHostKey(k)],
        Confirmed::ApplyFix(f) => {
            app.doctor_running = true;
            vec![Effect::ApplyFix(*f)]
        }
    }
}

/// Shows `pane`; opening the Doctor pane runs every check.
fn open_pane(app: &mut App, pane: Pane) -> Vec<Effect> {
    app.pane = pane;
    if pane == Pane::Doctor {
        run_doctor(app)
    } else {
        vec![]
    }
}

/// Runs the doctor unless a run is under way.
fn run_doctor(app: &mut App) -> Vec<Effect> {
    if app.doctor_running {
        return vec![];
    }
    app.doctor_running = true;
    vec![Effect::RunDoctor]
}

/// `F` on the Doctor pane: the selected finding's safe fix, after a dialog with Cancel focused.
fn ask_fix(app: &mut App) -> Vec<Effect> {
    if app.pane != Pane::Doctor {
        return unbound(app);
    }
    let selected = app.selected[Pane::Doctor.index()];
    let Some(f) = app
        .doctor
        .as_ref()
        .and_then(|r| r.results.get(selected))
        .cloned()
    else {
        return vec![];
    };
    if !f.safe_fix {
        let why = match &f.fix {
            Some(fix) => format!("this fix is only shown, not applied by moosectl: {fix}"),
            None => "this finding has no fix to apply".to_string(),
        };
        app.flash(Level::Warn, why);
        return vec![];
    }
    if app.readonly {
        app.flash(Level::Error, "--readonly: fixes are refused");
        return vec![];
    }
    app.mode = Mode::Confirm(Dialog {
        title: format!("Apply the fix on {}?", f.host),
        body: vec![
            f.summary.clone(),
            String::new(),
            format!("$ {}", f.fix.clone().unwrap_or_default()),
            String::new(),
            "Every check runs again after it.".to_string(),
        ],
        yes: "Apply".to_string(),
        focus_yes: false,
        then: Confirmed::ApplyFix(Box::new(f)),
    });
    vec![]
}

/// Most diff lines a deploy dialog shows.
const DEPLOY_DIALOG_LINES: usize = 40;

/// The preflight came back: the diff in a dialog (Cancel focused), or the failing hosts.
fn deploy_preview(
    app: &mut App,
    plan: Plan,
    diff: Result<Vec<String>, Vec<String>>,
) -> Vec<Effect> {
    match diff {
        Err(errors) => {
            app.flash(
                Level::Error,
                format!("deploy refused, nothing changed: {}", errors.join("; ")),
            );
            vec![]
        }
        Ok(lines) => {
            let mut body: Vec<String> = lines.iter().take(DEPLOY_DIALOG_LINES).cloned().collect();
            if lines.len() > DEPLOY_DIALOG_LINES {
                body.push(format!(
                    "… {} more lines (moosectl deploy --dry-run shows them all)",
                    lines.len() - DEPLOY_DIALOG_LINES
                ));
            }
            body.push(String::new());
            body.push(
                "Everything is staged on every host first, then put in place with a backup; \
                 nothing is restarted."
                    .to_string(),
            );
            body.push("Tab moves to the button, Enter presses it, Esc cancels.".to_string());
            app.mode = Mode::Confirm(Dialog {
                title: format!("Deploy cluster \"{}\"?", plan.cluster),
                body,
                yes: "Deploy".to_string(),
                focus_yes: false,
                then: Confirmed::RunPlan(plan),
            });
            vec![]
        }
    }
}

/// The one check for changes: refused in read-only mode and while another plan runs.
fn allowed(app: &mut App, action: Action) -> bool {
    if app.readonly {
        app.flash(
            Level::Error,
            format!(
                "read-only console (--readonly): {} is not allowed",
                action.as_str()
            ),
        );
        return false;
    }
    if let Some(op) = app.operation.as_ref().filter(|o| o.running()) {
        let running = op.plan.action.as_str();
        app.flash(
            Level::Warn,
            format!("the {running} plan is still running; wait for it (o shows it)"),
        );
        return false;
    }
    true
}

/// Starts carrying out `plan`: the only place a [`Effect::RunPlan`] is made.
fn launch(app: &mut App, plan: Plan) -> Vec<Effect> {
    if !allowed(app, plan.action) {
        return vec![];
    }
    app.operation = Some(Operation::new(plan.clone(), app.now));
    app.show_operation = true;
    vec![Effect::RunPlan(plan)]
}

/// Builds the plan of `action`; start runs at once (the plan shows in the operation panel
/// as it runs), stop and restart ask first with the plan in the dialog.
fn run_action(app: &mut App, action: Action, target: Option<Target>) -> Vec<Effect> {
    if !allowed(app, action) {
        return vec![];
    }
    let plan = match plan::build(&app.model, action, target.as_ref()) {
        Ok(p) => p,
        Err(e) => {
            app.flash(Level::Error, e);
            return vec![];
        }
    };
    if action == Action::Start {
        return launch(app, plan);
    }
    if action == Action::Deploy {
        app.flash(
            Level::Info,
            "deploy: checking every host (the diff follows)".to_string(),
        );
        return vec![Effect::PreviewDeploy(plan)];
    }
    let what = match &target {
        Some(t) => t.to_string(),
        None => format!("cluster \"{}\"", plan.cluster),
    };
    let (title, yes) = match action {
        Action::Stop => (format!("Stop {what}?"), "Stop"),
        _ => (format!("Restart {what}?"), "Restart"),
    };
    let mut body = plan_lines(&plan);
    body.push(String::new());
    if action == Action::Stop {
        body.push(
            "Clients are unmounted first (a busy mount stops the plan and names who holds it); \
             the master stops last and writes its metadata dump."
                .to_string(),
        );
    }
    body.push("Tab moves to the button, Enter presses it, Esc cancels.".to_string());
    app.mode = Mode::Confirm(Dialog {
        title,
        body,
        yes: yes.to_string(),
        focus_yes: false,
        then: Confirmed::RunPlan(plan),
    });
    vec![]
}

/// A plan as short lines: one per stage with its steps and what it waits for.
pub fn plan_lines(plan: &Plan) -> Vec<String> {
    plan.stages
        .iter()
        .enumerate()
        .map(|(k, s)| {
            let names: Vec<&str> = s.steps.iter().map(|st| st.name.as_str()).collect();
            let until = s
                .steps
                .first()
                .and_then(|st| st.gate.as_ref())
                .map(|g| format!(" → until {}", g.summary()))
                .unwrap_or_default();
            format!("{}. {}: {}{until}", k + 1, s.title, names.join(", "))
        })
        .collect()
}

/// The model index of the selected row, in panes whose rows are roles or disks.
fn selected_instance(app: &App) -> Option<usize> {
    match app.pane {
        Pane::Servers => view::visible_servers(app)
            .get(app.selected[Pane::Servers.index()])
            .map(|(k, _)| *k),
        Pane::Disks => view::visible_disks(app)
            .get(app.selected[Pane::Disks.index()])
            .and_then(|d| d.instance_index),
        _ => None,
    }
}

fn cycle_log_source(app: &mut App, forward: bool) {
    let n = app.logs.sources.len();
    // Positions: 0 = every source, 1..=n = one source.
    let pos = app.log_source.map_or(0, |s| s + 1);
    let next = if forward {
        (pos + 1) % (n + 1)
    } else {
        (pos + n) % (n + 1)
    };
    app.log_source = next.checked_sub(1);
    app.log_scroll = 0;
}

/// Rows a page moves.
fn page(app: &App) -> usize {
    (app.size.1 as usize).saturating_sub(10).max(1)
}

fn move_selection(app: &mut App, delta: isize) {
    if app.pane == Pane::Logs {
        let total = app.logs.select(app.log_source, &app.log_filter()).len();
        let scroll = (app.log_scroll as isize - delta).clamp(0, total as isize) as usize;
        app.log_scroll = scroll;
        app.log_follow = scroll == 0;
        return;
    }
    let rows = match app.pane {
        Pane::Servers => view::visible_servers(app).len(),
        Pane::Disks => view::visible_disks(app).len(),
        Pane::Exports => view::visible_exports(app).len(),
        Pane::Doctor => app.doctor.as_ref().map_or(0, |r| r.results.len()),
        Pane::Quotas => app.info().map_or(0, |i| i.quotas.len()),
        _ => 0,
    };
    let i = app.pane.index();
    app.selected[i] =
        (app.selected[i] as isize + delta).clamp(0, rows.saturating_sub(1) as isize) as usize;
}

/// Carries out a palette line.
fn palette(app: &mut App, line: &str) -> Vec<Effect> {
    let cmd = match palette::parse(line) {
        Ok(Some(cmd)) => cmd,
        Ok(None) => return vec![],
        Err(e) => {
            app.flash(Level::Error, e);
            return vec![];
        }
    };
    let pane = match cmd {
        PaletteCmd::Quit => return quit(app),
        PaletteCmd::Help => {
            app.mode = Mode::Help;
            return vec![];
        }
        PaletteCmd::Refresh => return vec![Effect::Refresh],
        PaletteCmd::Logs { target } => return show_logs(app, target.as_deref()),
        PaletteCmd::Verb(verb) => return palette_verb(app, verb),
        PaletteCmd::Overview => Pane::Overview,
        PaletteCmd::Servers => Pane::Servers,
        PaletteCmd::Disks => Pane::Disks,
        PaletteCmd::Replication => Pane::Replication,
        PaletteCmd::Exports => Pane::Exports,
        PaletteCmd::Doctor => Pane::Doctor,
        PaletteCmd::Quotas => Pane::Quotas,
    };
    open_pane(app, pane)
}

/// `ROLE[@HOST]` as typed in the palette; a bad one is flashed.
fn palette_target(app: &mut App, text: Option<&str>) -> Result<Option<Target>, ()> {
    match text.map(Target::parse).transpose() {
        Ok(t) => Ok(t),
        Err(e) => {
            app.flash(Level::Error, e);
            Err(())
        }
    }
}

/// `:logs [ROLE[@HOST]]`: the Logs pane, following that source (or all of them).
fn show_logs(app: &mut App, target: Option<&str>) -> Vec<Effect> {
    app.pane = Pane::Logs;
    match palette_target(app, target) {
        Ok(Some(t)) => match app.model.select(Some(&t)) {
            Ok(found) => {
                app.log_source = found
                    .first()
                    .and_then(|&k| app.log_source_of.get(k).copied());
            }
            Err(e) => app.flash(Level::Error, e),
        },
        Ok(None) => app.log_source = None,
        Err(()) => {}
    }
    app.log_follow = true;
    app.log_scroll = 0;
    vec![]
}

/// The actions the palette shares with the command line.
fn palette_verb(app: &mut App, verb: Verb) -> Vec<Effect> {
    let (action, target) = match &verb {
        Verb::Start { target } => (Action::Start, target.as_deref()),
        Verb::Stop { target } => (Action::Stop, target.as_deref()),
        Verb::Restart { target } => (Action::Restart, Some(target.as_str())),
        Verb::Plan { action, target } => (Action::from(*action), target.as_deref()),
    };
    let Ok(target) = palette_target(app, target) else {
        return vec![];
    };
    if !matches!(verb, Verb::Plan { .. }) {
        return run_action(app, action, target);
    }
    // A deploy runs only after its preview (D), never straight from a plan dialog.
    if action == Action::Deploy {
        app.flash(Level::Error, "no plan \"deploy\": start, stop or restart");
        return vec![];
    }
    match plan::build(&app.model, action, target.as_ref()) {
        Ok(p) => {
            let mut body = plan_lines(&p);
            body.push(String::new());
            body.push("Tab moves to the button, Enter presses it, Esc closes.".to_string());
            app.mode = Mode::Confirm(Dialog {
                title: format!("{} plan for cluster \"{}\"", p.action.as_str(), p.cluster),
                body,
                yes: format!("Run {}", p.action.as_str()),
                focus_yes: false,
                then: Confirmed::RunPlan(p),
            });
        }
        Err(e) => app.flash(Level::Error, e),
    }
    vec![]
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

    use super::*;
    use crate::engine::exec::tests::info;
    use crate::engine::exec::StepState;
    use crate::tui::ui::tests::{app, snapshot};

    fn press(app: &mut App, code: KeyCode) -> Vec<Effect> {
        update(app, Event::Key(KeyEvent::new(code, KeyModifiers::NONE)))
    }

    fn typed(app: &mut App, text: &str) {
        for c in text.chars() {
            press(app, KeyCode::Char(c));
        }
    }

    fn run_plans(cmds: &[Effect]) -> Vec<(Action, Option<String>)> {
        cmds.iter()
            .filter_map(|c| match c {
                Effect::RunPlan(p) => Some((p.action, p.target.clone())),
                Effect::Refresh
                | Effect::PreviewDeploy(_)
                | Effect::TrustHostKey(_)
                | Effect::RunDoctor
                | Effect::ApplyFix(_) => None,
            })
            .collect()
    }

    #[test]
    fn panes_switch_with_tab_and_digits() {
        let (mut a, _) = app();
        assert_eq!(a.pane, Pane::Overview);
        press(&mut a, KeyCode::Tab);
        assert_eq!(a.pane, Pane::Servers);
        press(&mut a, KeyCode::BackTab);
        press(&mut a, KeyCode::BackTab);
        assert_eq!(a.pane, Pane::Quotas);
        press(&mut a, KeyCode::Char('7'));
        assert_eq!(a.pane, Pane::Doctor);
        press(&mut a, KeyCode::Char('8'));
        assert_eq!(a.pane, Pane::Quotas);
        press(&mut a, KeyCode::Char('6'));
        assert_eq!(a.pane, Pane::Exports);
        press(&mut a, KeyCode::Char('4'));
        assert_eq!(a.pane, Pane::Replication);
    }

    #[test]
    fn start_runs_at_once_and_only_once() {
        let (mut a, _) = app();
        let cmds = press(&mut a, KeyCode::Char('S'));
        assert_eq!(run_plans(&cmds), [(Action::Start, None)]);
        assert!(a.show_operation && a.operation_running());
        assert!(press(&mut a, KeyCode::Char('S')).is_empty());
        assert!(a.flash.as_ref().unwrap().text.contains("still running"));
        update(
            &mut a,
            Event::Progress(Progress::Finished {
                ok: true,
                message: "start done".into(),
                elapsed_ms: 10,
            }),
        );
        assert!(!a.operation_running());
        assert_eq!(a.flash.as_ref().unwrap().text, "start done");
        // Esc hides a finished operation.
        press(&mut a, KeyCode::Esc);
        assert!(!a.show_operation);
    }

    #[test]
    fn stop_asks_and_defaults_to_cancel() {
        let (mut a, _) = app();
        assert!(press(&mut a, KeyCode::Char('X')).is_empty());
        assert!(matches!(&a.mode, Mode::Confirm(d) if !d.focus_yes && d.yes == "Stop"));
        // Enter on the default button cancels.
        assert!(press(&mut a, KeyCode::Enter).is_empty());
        assert!(matches!(a.mode, Mode::Normal));
        assert!(a.operation.is_none());
        // Tab to Stop, then Enter.
        press(&mut a, KeyCode::Char('X'));
        press(&mut a, KeyCode::Tab);
        let cmds = press(&mut a, KeyCode::Enter);
        assert_eq!(run_plans(&cmds), [(Action::Stop, None)]);
        // Esc cancels too; other keys do nothing while asking.
        let (mut b, _) = app();
        press(&mut b, KeyCode::Char('X'));
        press(&mut b, KeyCode::Char('y'));
        assert!(matches!(b.mode, Mode::Confirm(_)));
        press(&mut b, KeyCode::Esc);
        assert!(matches!(b.mode, Mode::Normal));
    }

    #[test]
    fn readonly_refuses_every_change() {
        let (mut a, _) = app();
        a.readonly = true;
        assert!(press(&mut a, KeyCode::Char('S')).is_empty());
        assert!(a
            .flash
            .as_ref()
            .unwrap()
            .text
            .starts_with("read-only console"));
        assert!(press(&mut a, KeyCode::Char('X')).is_empty());
        assert!(matches!(a.mode, Mode::Normal));
        press(&mut a, KeyCode::Char(':'));
        typed(&mut a, "plan stop");
        press(&mut a, KeyCode::Enter);
        press(&mut a, KeyCode::Tab);
        assert!(
            press(&mut a, KeyCode::Enter).is_empty(),
            "the dialog cannot bypass it"
        );
        assert!(a.operation.is_none());
    }

    #[test]
    fn restart_and_logs_of_the_selection() {
        let (mut a, t0) = app();
        update(&mut a, Event::Monitor(Box::new(snapshot(t0, Ok(info(3))))));
        press(&mut a, KeyCode::Char('r'));
        assert!(a.flash.as_ref().unwrap().text.contains("Servers pane"));
        press(&mut a, KeyCode::Char('2'));
        press(&mut a, KeyCode::Down);
        press(&mut a, KeyCode::Down);
        press(&mut a, KeyCode::Char('r'));
        assert!(
            matches!(&a.mode, Mode::Confirm(d) if d.title == "Restart chunkserver-19422@local?")
        );
        press(&mut a, KeyCode::Right);
        let cmds = press(&mut a, KeyCode::Enter);
        assert_eq!(
            run_plans(&cmds),
            [(Action::Restart, Some("chunkserver-19422@local".into()))]
        );
        press(&mut a, KeyCode::Char('l'));
        assert_eq!(a.pane, Pane::Logs);
        assert_eq!(a.log_source, Some(2));
        press(&mut a, KeyCode::Char(']'));
        assert_eq!(a.log_source, Some(3));
        press(&mut a, KeyCode::Char('['));
        press(&mut a, KeyCode::Char('['));
        press(&mut a, KeyCode::Char('['));
        press(&mut a, KeyCode::Char('['));
        assert_eq!(a.log_source, None, "before the first source comes 'all'");
    }

    #[test]
    fn palette_commands() {
        let (mut a, _) = app();
        press(&mut a, KeyCode::Char(':'));
        typed(&mut a, "di");
        press(&mut a, KeyCode::Tab);
        assert!(matches!(&a.mode, Mode::Palette(i) if i.value() == "disks "));
        press(&mut a, KeyCode::Enter);
        assert_eq!(a.pane, Pane::Disks);
        press(&mut a, KeyCode::Char(':'));
        typed(&mut a, "logs master");
        press(&mut a, KeyCode::Enter);
        assert_eq!((a.pane, a.log_source), (Pane::Logs, Some(0)));
        press(&mut a, KeyCode::Char(':'));
        typed(&mut a, "bogus");
        press(&mut a, KeyCode::Enter);
        assert!(a
            .flash
            .as_ref()
            .unwrap()
            .text
            .starts_with("unknown command :bogus"));
        press(&mut a, KeyCode::Char(':'));
        typed(&mut a, "start chunkserver@nowhere");
        press(&mut a, KeyCode::Enter);
        assert!(a
            .flash
            .as_ref()
            .unwrap()
            .text
            .starts_with("nothing matches"));
        press(&mut a, KeyCode::Char(':'));
        typed(&mut a, "q");
        press(&mut a, KeyCode::Enter);
        assert!(a.quit);
    }

    #[test]
    fn quitting_during_an_operation_asks() {
        let (mut a, _) = app();
        press(&mut a, KeyCode::Char('S'));
        press(&mut a, KeyCode::Char('q'));
        assert!(!a.quit);
        assert!(matches!(&a.mode, Mode::Confirm(d) if d.then == Confirmed::Quit && !d.focus_yes));
        press(&mut a, KeyCode::Enter);
        assert!(!a.quit);
        press(&mut a, KeyCode::Char('q'));
        press(&mut a, KeyCode::Tab);
        press(&mut a, KeyCode::Enter);
        assert!(a.quit);
    }

    #[test]
    fn filters_narrow_rows_and_esc_clears() {
        let (mut a, t0) = app();
        update(&mut a, Event::Monitor(Box::new(snapshot(t0, Ok(info(3))))));
        press(&mut a, KeyCode::Char('2'));
        press(&mut a, KeyCode::Char('/'));
        typed(&mut a, "chunk");
        assert_eq!(view::visible_servers(&a).len(), 3);
        press(&mut a, KeyCode::Enter);
        assert!(matches!(a.mode, Mode::Normal));
        assert_eq!(a.filter(Pane::Servers), "chunk");
        press(&mut a, KeyCode::Char('/'));
        update(
            &mut a,
            Event::Key(KeyEvent::new(KeyCode::Char('u'), KeyModifiers::CONTROL)),
        );
        typed(&mut a, "!chunk");
        assert_eq!(a.filter(Pane::Servers), "!chunk");
        assert_eq!(view::visible_servers(&a).len(), 3);
        press(&mut a, KeyCode::Esc);
        assert_eq!(a.filter(Pane::Servers), "");
        press(&mut a, KeyCode::Char('/'));
        typed(&mut a, "x");
        press(&mut a, KeyCode::Enter);
        press(&mut a, KeyCode::Esc);
        assert_eq!(view::visible_servers(&a).len(), 6);
    }

    #[test]
    fn selection_stays_inside_the_rows() {
        let (mut a, t0) = app();
        update(&mut a, Event::Monitor(Box::new(snapshot(t0, Ok(info(3))))));
        press(&mut a, KeyCode::Char('2'));
        press(&mut a, KeyCode::Up);
        assert_eq!(a.selected[Pane::Servers.index()], 0);
        press(&mut a, KeyCode::PageDown);
        assert_eq!(a.selected[Pane::Servers.index()], 5);
        press(&mut a, KeyCode::Char('g'));
        assert_eq!(a.selected[Pane::Servers.index()], 0);
    }

    #[test]
    fn logs_scroll_back_and_follow_again() {
        let (mut a, _) = app();
        press(&mut a, KeyCode::Char('5'));
        let lines: Vec<String> = (0..100).map(|i| format!("line {i}")).collect();
        update(
            &mut a,
            Event::Log(crate::engine::logs::LogEvent {
                source: 0,
                event: FollowEvent::Lines(lines),
            }),
        );
        press(&mut a, KeyCode::Up);
        assert!(!a.log_follow);
        assert_eq!(a.log_scroll, 1);
        update(
            &mut a,
            Event::Log(crate::engine::logs::LogEvent {
                source: 0,
                event: FollowEvent::Lines(vec!["new".into(), "newer".into()]),
            }),
        );
        assert_eq!(a.log_scroll, 3, "the view stays on the same lines");
        press(&mut a, KeyCode::Char('G'));
        assert!(a.log_follow);
        assert_eq!(a.log_scroll, 0);
    }

    #[test]
    fn rates_come_from_counter_deltas() {
        let (mut a, t0) = app();
        let mut i = info(3);
        update(
            &mut a,
            Event::Monitor(Box::new(snapshot(t0, Ok(i.clone())))),
        );
        assert_eq!(a.ops.now(), None);
        i.ops_total += 500;
        update(
            &mut a,
            Event::Monitor(Box::new(snapshot(
                t0 + Duration::from_secs(2),
                Ok(i.clone()),
            ))),
        );
        assert_eq!(a.ops.now(), Some(250));
        // A restarted master starts counting from 0 again: no negative rate.
        i.ops_total = 3;
        update(
            &mut a,
            Event::Monitor(Box::new(snapshot(t0 + Duration::from_secs(3), Ok(i)))),
        );
        assert_eq!(a.ops.now(), Some(250));
    }

    #[test]
    fn the_operation_shows_on_the_servers_rows() {
        let (mut a, t0) = app();
        update(&mut a, Event::Monitor(Box::new(snapshot(t0, Ok(info(3))))));
        press(&mut a, KeyCode::Char('S'));
        update(
            &mut a,
            Event::Progress(Progress::Stage {
                stage: 1,
                title: "start master".into(),
            }),
        );
        update(
            &mut a,
            Event::Progress(Progress::Step {
                stage: 1,
                step: 0,
                name: "local/master".into(),
                state: StepState::Running,
                message: String::new(),
            }),
        );
        assert_eq!(view::visible_servers(&a)[0].1.state, "starting");
        assert_eq!(view::visible_servers(&a)[1].1.state, "running");
    }

    #[test]
    fn ticks_redraw_only_when_something_moves() {
        let (mut a, t0) = app();
        a.dirty = false;
        update(&mut a, Event::Tick(t0 + Duration::from_secs(1)));
        assert!(!a.dirty);
        press(&mut a, KeyCode::Char('S'));
        a.dirty = false;
        update(&mut a, Event::Tick(t0 + Duration::from_secs(2)));
        assert!(a.dirty, "the elapsed time of a running plan is shown");
        a.dirty = false;
        press(&mut a, KeyCode::F(12));
        assert!(!a.dirty, "an unbound key changes nothing");
    }

    #[test]
    fn deploy_checks_first_then_asks_with_cancel_focused() {
        let (mut a, _) = app();
        let cmds = press(&mut a, KeyCode::Char('D'));
        let plan = match cmds.as_slice() {
            [Effect::PreviewDeploy(p)] => p.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(plan.action, Action::Deploy);
        assert_eq!(plan.stages.len(), 1);
        let out = update(
            &mut a,
            Event::DeployPreview {
                plan: Box::new(plan.clone()),
                diff: Err(vec![
                    "cs2: cannot reach 10.0.0.12:22: connection refused".into()
                ]),
            },
        );
        assert!(out.is_empty());
        assert!(matches!(a.mode, Mode::Normal));
        assert!(a.flash.as_ref().unwrap().text.contains("cs2: cannot reach"));
        update(
            &mut a,
            Event::DeployPreview {
                plan: Box::new(plan),
                diff: Ok(vec!["local: nothing to push".into()]),
            },
        );
        match &a.mode {
            Mode::Confirm(d) => {
                assert!(!d.focus_yes, "Cancel has the focus");
                assert_eq!(d.yes, "Deploy");
                assert_eq!(d.body[0], "local: nothing to push");
            }
            m => panic!("{m:?}"),
        }
        // Enter on Cancel runs nothing.
        assert!(press(&mut a, KeyCode::Enter).is_empty());
    }

    #[test]
    fn an_unknown_host_key_is_asked_about_with_cancel_focused() {
        let (mut a, _) = app();
        let k = crate::engine::host::UnknownKey {
            host: "cs2".into(),
            pattern: "10.0.0.12".into(),
            key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKlh/j3pOQEQ6HF7ZXAYtenH0RXL5DC6Fr/wInAwJnOQ"
                .into(),
            fingerprint: "ssh-ed25519 SHA256:x".into(),
            file: "/root/.ssh/known_hosts".into(),
        };
        update(&mut a, Event::UnknownHostKey(k.clone()));
        match &a.mode {
            Mode::Confirm(d) => {
                assert_eq!(d.title, "Trust the host key of cs2?");
                assert!(!d.focus_yes);
                assert_eq!(d.body[0], "10.0.0.12 offers ssh-ed25519 SHA256:x.");
            }
            m => panic!("{m:?}"),
        }
        assert!(
            press(&mut a, KeyCode::Enter).is_empty(),
            "Cancel trusts nothing"
        );
        update(&mut a, Event::UnknownHostKey(k.clone()));
        press(&mut a, KeyCode::Tab);
        assert_eq!(press(&mut a, KeyCode::Enter), [Effect::TrustHostKey(k)]);
    }
}
