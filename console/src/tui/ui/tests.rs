//! Snapshot tests of every pane, drawn with `TestBackend` from a fixed model and snapshot.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use moose_proto::msg::ClusterInfo;
use ratatui::backend::TestBackend;
use ratatui::Terminal;

use crate::engine::exec::tests::info;
use crate::engine::exec::{Progress, StepState};
use crate::engine::host::FollowEvent;
use crate::engine::logs::LogEvent;
use crate::engine::model::tests::local_model;
use crate::engine::monitor::{InstanceStatus, Snapshot};
use crate::engine::probe::{MountProbe, Process};
use crate::tui::app::App;
use crate::tui::event::Event;
use crate::tui::update::update;

pub(crate) fn app() -> (App, Instant) {
    let t0 = Instant::now();
    let mut app = App::new(Arc::new(local_model()), false, true, t0);
    app.size = (160, 48);
    (app, t0)
}

fn running(pid: u32, secs: u64) -> InstanceStatus {
    InstanceStatus {
        process: Process::Running { pid },
        uptime: Some(Duration::from_secs(secs)),
        mount: None,
    }
}

/// Every role up; the client mounted.
pub(crate) fn snapshot(at: Instant, master: Result<ClusterInfo, String>) -> Snapshot {
    let mut instances: Vec<InstanceStatus> =
        (0..5).map(|k| running(4100 + k, 3725 - k as u64)).collect();
    instances.push(InstanceStatus {
        process: Process::Running { pid: 4200 },
        uptime: Some(Duration::from_secs(3600)),
        mount: Some(Ok(MountProbe {
            fuse_device: true,
            fusermount3: None,
            root: true,
            mounted: true,
            statfs: Some(Ok((12 << 30, 11 << 30))),
            pids: vec![4200],
        })),
    });
    Snapshot {
        at,
        master,
        instances,
    }
}

fn feed(app: &mut App, t0: Instant) {
    let mut i = info(3);
    update(app, Event::Monitor(Box::new(snapshot(t0, Ok(i.clone())))));
    for k in 1..=5u64 {
        i.ops_total += 40 * k;
        i.uptime_secs += 1;
        i.health.replicated_total += 2;
        update(
            app,
            Event::Monitor(Box::new(snapshot(
                t0 + Duration::from_secs(k),
                Ok(i.clone()),
            ))),
        );
    }
}

pub(crate) fn render(app: &App, w: u16, h: u16) -> String {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| super::draw(app, f)).unwrap();
    t.backend().to_string()
}

fn key(app: &mut App, code: KeyCode) -> Vec<crate::tui::event::Effect> {
    update(app, Event::Key(KeyEvent::new(code, KeyModifiers::NONE)))
}

#[test]
fn overview() {
    let (mut app, t0) = app();
    feed(&mut app, t0);
    insta::assert_snapshot!(render(&app, 160, 40));
}

#[test]
fn the_space_gauge_turns_red_when_the_chunkservers_are_full() {
    let gauge_colors = |avail: u64| {
        let t0 = Instant::now();
        let mut app = App::new(Arc::new(local_model()), false, false, t0);
        app.size = (160, 48);
        let mut i = info(3);
        i.avail_space = avail;
        update(&mut app, Event::Monitor(Box::new(snapshot(t0, Ok(i)))));
        let mut t = Terminal::new(TestBackend::new(160, 40)).unwrap();
        t.draw(|f| super::draw(&app, f)).unwrap();
        let buf = t.backend().buffer().clone();
        let row = (0..buf.area.height)
            .find(|&y| {
                let text: String = (0..buf.area.width).map(|x| buf[(x, y)].symbol()).collect();
                text.contains("space used")
            })
            .expect("a space gauge");
        (0..buf.area.width)
            .flat_map(|x| [buf[(x, row)].fg, buf[(x, row)].bg])
            .collect::<Vec<_>>()
    };
    let full = gauge_colors(0);
    assert!(full.contains(&ratatui::style::Color::Red), "{full:?}");
    assert!(!full.contains(&ratatui::style::Color::Green), "{full:?}");
    let roomy = gauge_colors(info(3).total_space);
    assert!(!roomy.contains(&ratatui::style::Color::Red), "{roomy:?}");
}

#[test]
fn overview_without_master() {
    let (mut app, t0) = app();
    let mut snap = snapshot(t0, Err("master not reachable: local: cannot connect to 127.0.0.1:19421: Connection refused (os error 111)".into()));
    for s in &mut snap.instances[..5] {
        s.process = Process::Stopped;
        s.uptime = None;
    }
    snap.instances[5] = InstanceStatus {
        process: Process::Stopped,
        uptime: None,
        mount: Some(Ok(MountProbe {
            fuse_device: true,
            root: true,
            ..Default::default()
        })),
    };
    update(&mut app, Event::Monitor(Box::new(snap)));
    insta::assert_snapshot!(render(&app, 120, 24));
    key(&mut app, KeyCode::Char('2'));
    insta::assert_snapshot!("servers_stopped", render(&app, 160, 20));
    key(&mut app, KeyCode::Char('3'));
    insta::assert_snapshot!("disks_without_master", render(&app, 100, 20));
}

#[test]
fn servers() {
    let (mut app, t0) = app();
    feed(&mut app, t0);
    key(&mut app, KeyCode::Char('2'));
    key(&mut app, KeyCode::Down);
    key(&mut app, KeyCode::End);
    insta::assert_snapshot!(render(&app, 160, 24));
}

#[test]
fn disks() {
    let (mut app, t0) = app();
    feed(&mut app, t0);
    key(&mut app, KeyCode::Char('3'));
    insta::assert_snapshot!(render(&app, 160, 20));
}

#[test]
fn replication() {
    let (mut app, t0) = app();
    feed(&mut app, t0);
    key(&mut app, KeyCode::Char('4'));
    insta::assert_snapshot!(render(&app, 160, 30));
}

#[test]
fn logs() {
    let (mut app, t0) = app();
    feed(&mut app, t0);
    key(&mut app, KeyCode::Char('5'));
    let lines = |v: &[&str]| FollowEvent::Lines(v.iter().map(|s| s.to_string()).collect());
    update(
        &mut app,
        Event::Log(LogEvent {
            source: 0,
            event: lines(&[
                "2026-11-27T10:00:00Z  INFO moose_master: listening on 127.0.0.1:19421",
            ]),
        }),
    );
    update(
        &mut app,
        Event::Log(LogEvent {
            source: 2,
            event: lines(&["2026-11-27T10:00:01Z  INFO moose_chunkserver: registered as id 1"]),
        }),
    );
    update(
        &mut app,
        Event::Log(LogEvent {
            source: 5,
            event: FollowEvent::Notice(
                "waiting for /var/log/moose-mount.log: No such file or directory (os error 2)"
                    .into(),
            ),
        }),
    );
    update(
        &mut app,
        Event::Log(LogEvent {
            source: 0,
            event: lines(&[
                "2026-11-27T10:00:02Z  WARN moose_master: chunk 0000000000000003 has 1 copy of 2",
            ]),
        }),
    );
    insta::assert_snapshot!("logs_all", render(&app, 140, 20));
    key(&mut app, KeyCode::Char(']'));
    insta::assert_snapshot!("logs_master", render(&app, 140, 20));
    key(&mut app, KeyCode::Char('['));
    key(&mut app, KeyCode::Char('/'));
    for c in "warn".chars() {
        key(&mut app, KeyCode::Char(c));
    }
    insta::assert_snapshot!("logs_filtered", render(&app, 140, 20));
}

#[test]
fn exports() {
    let (mut app, t0) = app();
    feed(&mut app, t0);
    key(&mut app, KeyCode::Char('6'));
    insta::assert_snapshot!(render(&app, 140, 20));
}

/// Quotas: one within its limits, one over its soft limit in grace, one at a hard limit.
#[test]
fn quotas() {
    use moose_proto::msg::{DirStats, Limits, QuotaLimits, QuotaReport};
    let (mut app, t0) = app();
    let mut i = info(3);
    let report =
        |path: &str, soft: Limits, hard: Limits, usage: DirStats, over: Option<u64>| QuotaReport {
            inode: 2,
            path: path.into(),
            limits: QuotaLimits {
                soft,
                hard,
                grace: None,
            },
            grace: 604_800,
            usage,
            soft_exceeded_for: over,
        };
    let mib = 1 << 20;
    i.quotas = vec![
        report(
            "/home/ann",
            Limits::default(),
            Limits {
                size: Some(100 * mib),
                ..Default::default()
            },
            DirStats {
                inodes: 40,
                size: 25 * mib,
                length: 24 * mib,
                ..Default::default()
            },
            None,
        ),
        report(
            "/projects",
            Limits {
                inodes: Some(1000),
                ..Default::default()
            },
            Limits::default(),
            DirStats {
                inodes: 1200,
                ..Default::default()
            },
            Some(3600),
        ),
        report(
            "/scratch",
            Limits::default(),
            Limits {
                length: Some(10 * mib),
                ..Default::default()
            },
            DirStats {
                inodes: 3,
                length: 10 * mib,
                ..Default::default()
            },
            None,
        ),
    ];
    update(&mut app, Event::Monitor(Box::new(snapshot(t0, Ok(i)))));
    let overview = render(&app, 160, 40);
    assert!(
        overview.contains("quotas            3: 1 over soft, 0 past grace"),
        "{overview}"
    );
    key(&mut app, KeyCode::Char('8'));
    let pane = render(&app, 160, 20);
    for fact in [
        "Quotas (3)",
        "/home/ann",
        "[##--------] 25%",
        "over soft",
        "6d23h",
        "[##########] 120%",
        "at hard limit",
    ] {
        assert!(pane.contains(fact), "{fact} missing:\n{pane}");
    }
    insta::assert_snapshot!(pane);
    key(&mut app, KeyCode::Down);
    assert_eq!(app.selected[crate::tui::app::Pane::Quotas.index()], 1);
}

#[test]
fn stop_dialog_defaults_to_cancel() {
    let (mut app, t0) = app();
    feed(&mut app, t0);
    key(&mut app, KeyCode::Char('2'));
    assert!(key(&mut app, KeyCode::Char('X')).is_empty());
    insta::assert_snapshot!(render(&app, 140, 30));
}

#[test]
fn help() {
    let (mut app, _) = app();
    key(&mut app, KeyCode::Char('?'));
    insta::assert_snapshot!(render(&app, 120, 40));
}

#[test]
fn operation_panel_while_starting() {
    let (mut app, t0) = app();
    key(&mut app, KeyCode::Char('2'));
    let cmds = key(&mut app, KeyCode::Char('S'));
    assert_eq!(cmds.len(), 1);
    let step = |stage, step, name: &str, state, message: &str| {
        Event::Progress(Progress::Step {
            stage,
            step,
            name: name.into(),
            state,
            message: message.into(),
        })
    };
    update(
        &mut app,
        Event::Progress(Progress::Stage {
            stage: 0,
            title: "deploy".into(),
        }),
    );
    update(
        &mut app,
        step(
            0,
            0,
            "local",
            StepState::Done,
            "binaries found; 9 config files: 9 written, 0 unchanged; 8 folders ready",
        ),
    );
    update(
        &mut app,
        Event::Progress(Progress::Stage {
            stage: 1,
            title: "start master".into(),
        }),
    );
    update(
        &mut app,
        step(
            1,
            0,
            "local/master",
            StepState::Waiting,
            "waiting for master answers status on 127.0.0.1:19421: master not reachable",
        ),
    );
    update(&mut app, Event::Tick(t0 + Duration::from_secs(3)));
    insta::assert_snapshot!(render(&app, 160, 48));
}

#[test]
fn too_small() {
    let (app, _) = app();
    insta::assert_snapshot!(render(&app, 60, 12));
}

#[test]
fn narrow_terminal_keeps_the_header_facts() {
    let (mut app, t0) = app();
    feed(&mut app, t0);
    key(&mut app, KeyCode::Char('2'));
    // At 90 columns only the space (last) is cut.
    let narrow = render(&app, 90, 24);
    let header = narrow.lines().next().unwrap();
    for fact in [
        "master running v0.1.0",
        "chunkservers 3/3",
        "undergoal 1",
        "missing 0",
        "RW",
    ] {
        assert!(header.contains(fact), "{fact} missing from {header}");
    }
    let screen = render(&app, 104, 24);
    let header = screen.lines().next().unwrap();
    for fact in [
        "local",
        "master running v0.1.0",
        "chunkservers 3/3",
        "300.0 MiB / 12.0 GiB",
        "undergoal 1",
        "missing 0",
        "RW",
    ] {
        assert!(header.contains(fact), "{fact} missing from {header}");
    }
    insta::assert_snapshot!(screen);
}

/// A report as a doctor run on the local cluster could give, one finding of each status.
fn doctor_report() -> crate::doctor::Report {
    use crate::doctor::{Finding, FixAction, Report, Status};
    let results = vec![
        Finding::new(
            "clock",
            "local",
            Status::Ok,
            "local's clock agrees with the console's (+0.002 s)",
        ),
        Finding::new(
            "data-path",
            "local",
            Status::Error,
            "nobody cannot write /srv/moose/data/master",
        )
        .evidence("/srv/moose/data/master: owner and mode root:root 755, tested as nobody")
        .safe(FixAction::Chown {
            dir: "/srv/moose/data/master".into(),
            owner: "nobody:nogroup".into(),
        }),
        Finding::new(
            "mount-point",
            "local",
            Status::Error,
            "a foreign tmpfs mount is on /srv/moose/mnt",
        )
        .evidence("/proc/self/mountinfo: tmpfs tmpfs on /srv/moose/mnt")
        .fix("umount /srv/moose/mnt"),
        Finding::new(
            "disks",
            "local",
            Status::Info,
            "3 disks share one file system (/): fine for a one-machine cluster",
        ),
    ];
    Report::new("local".into(), "local.toml".into(), results, 182, false)
}

#[test]
fn doctor_pane() {
    use crate::tui::event::Effect;
    let (mut app, t0) = app();
    feed(&mut app, t0);
    // Opening the pane runs every check; the report arrives as an event.
    assert_eq!(key(&mut app, KeyCode::Char('7')), vec![Effect::RunDoctor]);
    // No second run while one is under way.
    assert!(key(&mut app, KeyCode::Char('7')).is_empty());
    update(&mut app, Event::Doctor(Box::new(doctor_report()), None));
    // Ctrl-R on the pane runs the checks again.
    let again = update(
        &mut app,
        Event::Key(KeyEvent::new(KeyCode::Char('r'), KeyModifiers::CONTROL)),
    );
    assert_eq!(again, vec![Effect::RunDoctor]);
    update(&mut app, Event::Doctor(Box::new(doctor_report()), None));
    insta::assert_snapshot!(render(&app, 140, 20));
    // F on the worst row (the chown): a dialog with Cancel focused, nothing done yet.
    assert!(key(&mut app, KeyCode::Char('F')).is_empty());
    insta::assert_snapshot!("doctor_fix_dialog", render(&app, 140, 20));
    key(&mut app, KeyCode::Tab);
    let effects = key(&mut app, KeyCode::Enter);
    assert!(
        matches!(&effects[..], [Effect::ApplyFix(f)] if f.check == "data-path"),
        "{effects:?}"
    );
    // A fix that is only shown is not applied.
    update(&mut app, Event::Doctor(Box::new(doctor_report()), None));
    key(&mut app, KeyCode::Down);
    assert!(key(&mut app, KeyCode::Char('F')).is_empty());
    assert!(matches!(app.mode, crate::tui::app::Mode::Normal));
}

#[test]
fn doctor_fix_refused_when_readonly() {
    let (mut app, t0) = app();
    app.readonly = true;
    feed(&mut app, t0);
    key(&mut app, KeyCode::Char('7'));
    update(&mut app, Event::Doctor(Box::new(doctor_report()), None));
    assert!(key(&mut app, KeyCode::Char('F')).is_empty());
    assert!(matches!(app.mode, crate::tui::app::Mode::Normal));
    assert!(app
        .flash
        .as_ref()
        .is_some_and(|f| f.text.contains("--readonly")));
}
