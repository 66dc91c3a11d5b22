//! The subcommands: every action of the console without the terminal UI, as text (coloured
//! only on a terminal, never with `NO_COLOR`) or JSON.

use std::io::{IsTerminal, Write};

use anyhow::{Context, Result};
use moose_admin::status::{status_text, Tone};
use moose_proto::msg::ClusterInfo;
use serde_json::json;
use tokio::runtime::Runtime;
use tokio::sync::mpsc;

use crate::doctor;
use crate::engine::exec::{self, Progress, StepState};
use crate::engine::host::{FollowEvent, Machine};
use crate::engine::logs;
use crate::engine::master::{MasterLink, QUERY_TIMEOUT};
use crate::engine::model::{Fleet, Target};
use crate::engine::monitor;
use crate::engine::plan::{self, Action};
use crate::fmt;
use crate::tui::view::{self, ServerRow};

/// How output is written.
#[derive(Debug, Clone, Copy)]
pub struct Out {
    pub json: bool,
    color: bool,
}

#[derive(Clone, Copy)]
enum Paint {
    Ok,
    Warn,
    Bad,
    Dim,
    Bold,
}

impl Out {
    pub fn new(json: bool) -> Out {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Out {
            json,
            color: !json && !no_color && std::io::stdout().is_terminal(),
        }
    }

    fn paint(&self, text: &str, p: Paint) -> String {
        if !self.color {
            return text.to_string();
        }
        let code = match p {
            Paint::Ok => "32",
            Paint::Warn => "33",
            Paint::Bad => "1;31",
            Paint::Dim => "2",
            Paint::Bold => "1",
        };
        format!("\x1b[{code}m{text}\x1b[0m")
    }
}

fn print_json(v: &serde_json::Value) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{v}");
    let _ = o.flush();
}

fn target(t: Option<&str>) -> Result<Option<Target>> {
    t.map(Target::parse).transpose().map_err(anyhow::Error::msg)
}

/// `moosectl plan ACTION [TARGET]`.
pub fn plan(cluster: &Fleet, action: Action, t: Option<&str>, out: Out) -> Result<bool> {
    let t = target(t)?;
    let p = plan::build(&cluster.model, action, t.as_ref()).map_err(anyhow::Error::msg)?;
    if out.json {
        println!("{}", serde_json::to_string_pretty(&p)?);
    } else {
        print!("{}", p.describe());
    }
    Ok(true)
}

/// `moosectl start|stop|restart`: prints the plan, runs it, prints its progress.
pub fn run_plan(
    rt: &Runtime,
    cluster: &Fleet,
    action: Action,
    t: Option<&str>,
    out: Out,
) -> Result<bool> {
    let t = target(t)?;
    let p = plan::build(&cluster.model, action, t.as_ref()).map_err(anyhow::Error::msg)?;
    if out.json {
        print_json(&json!({ "event": "plan", "plan": p }));
    } else {
        print!("{}", p.describe());
        println!();
    }
    let (tx, mut rx) = mpsc::channel::<Progress>(256);
    let task = {
        let (cluster, p) = (cluster.clone(), p.clone());
        rt.spawn(async move { exec::run(&cluster, &p, tx).await })
    };
    let stages = p.stages.len();
    let mut last: Vec<(String, StepState, String)> = Vec::new();
    while let Some(ev) = rx.blocking_recv() {
        if out.json {
            print_json(&serde_json::to_value(&ev)?);
            continue;
        }
        match ev {
            Progress::Stage { stage, title } => {
                println!(
                    "{}",
                    out.paint(&format!("[{}/{stages}] {title}", stage + 1), Paint::Bold)
                );
            }
            Progress::Step {
                name,
                state,
                message,
                ..
            } => {
                if state == StepState::Running {
                    continue;
                }
                let key = (name.clone(), state, message.clone());
                if last.contains(&key) {
                    continue;
                }
                last.push(key);
                let paint = match state {
                    StepState::Done => Paint::Ok,
                    StepState::Failed => Paint::Bad,
                    StepState::Skipped => Paint::Warn,
                    _ => Paint::Dim,
                };
                println!("  {name}: {} {message}", out.paint(state.as_str(), paint));
            }
            Progress::Finished {
                ok,
                message,
                elapsed_ms,
            } => {
                let text = format!("{message} ({:.1} s)", elapsed_ms as f64 / 1000.0);
                println!(
                    "{}",
                    out.paint(&text, if ok { Paint::Ok } else { Paint::Bad })
                );
            }
        }
        let _ = std::io::stdout().flush();
    }
    let ok = rt
        .block_on(task)
        .context("the plan's task ended abnormally")?;
    Ok(ok)
}

/// `moosectl status [TARGET]`: the master's status and every role's state.
pub fn status(rt: &Runtime, cluster: &Fleet, t: Option<&str>, out: Out) -> Result<bool> {
    let t = target(t)?;
    let picked = cluster
        .model
        .select(t.as_ref())
        .map_err(anyhow::Error::msg)?;
    let snap = {
        let c = cluster.clone();
        rt.block_on(async move {
            let mut link = MasterLink::new(&c.model.master_address(), c.model.master_client_port());
            monitor::poll(&c, &mut link).await
        })
    };
    let rows: Vec<ServerRow> = view::server_rows(&cluster.model, Some(&snap))
        .into_iter()
        .enumerate()
        .filter(|(k, _)| picked.contains(k))
        .map(|(_, r)| r)
        .collect();
    let healthy = snap.master.is_ok()
        && rows
            .iter()
            .all(|r| r.state == "running" || r.state == "mounted");
    if out.json {
        let master = match &snap.master {
            Ok(info) => json!(info),
            Err(e) => json!({ "error": e }),
        };
        let instances: Vec<serde_json::Value> = picked
            .iter()
            .zip(&rows)
            .map(|(&k, r)| {
                let mut v = json!(r);
                v["probe"] = json!(snap.instances[k]);
                v
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "cluster": cluster.model.inventory.cluster.name,
                "inventory": cluster.model.inventory.source,
                "ok": healthy,
                "master": master,
                "instances": instances,
            }))?
        );
        return Ok(healthy);
    }
    println!(
        "{} {}",
        out.paint(
            &format!("cluster {}", cluster.model.inventory.cluster.name),
            Paint::Bold
        ),
        out.paint(&format!("({})", cluster.model.inventory.source), Paint::Dim)
    );
    match &snap.master {
        Ok(info) => print_master(
            info,
            &format!(
                "{}:{}",
                cluster.model.master_address(),
                cluster.model.master_client_port()
            ),
            out,
        ),
        Err(e) => println!("{}", out.paint(e, Paint::Bad)),
    }
    println!();
    print_rows(&rows, out);
    Ok(healthy)
}

fn print_master(info: &ClusterInfo, at: &str, out: Out) {
    print!(
        "{}",
        status_text(info, at, |text, tone| match tone {
            Tone::Ok => out.paint(text, Paint::Ok),
            Tone::Warn => out.paint(text, Paint::Warn),
            Tone::Bad => out.paint(text, Paint::Bad),
        })
    );
}

fn print_rows(rows: &[ServerRow], out: Out) {
    let header = [
        "HOST",
        "ROLE",
        "INSTANCE",
        "STATE",
        "PID",
        "VERSION",
        "UPTIME",
        "REGISTERED",
    ];
    let table: Vec<[String; 8]> = rows
        .iter()
        .map(|r| {
            [
                r.host.clone(),
                r.role.as_str().to_string(),
                r.instance.clone(),
                r.state.clone(),
                r.pid.map_or("-".into(), |p| p.to_string()),
                if r.version.is_empty() {
                    "-".into()
                } else {
                    r.version.clone()
                },
                r.uptime.map_or("-".into(), fmt::duration),
                r.registered.clone(),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.len());
    for row in &table {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    println!(
        "{}",
        out.paint(&line(header.map(str::to_string).to_vec()), Paint::Dim)
    );
    for (row, r) in table.iter().zip(rows) {
        let text = line(row.to_vec());
        let paint = match r.level {
            crate::tui::app::Level::Info => None,
            crate::tui::app::Level::Warn => Some(Paint::Warn),
            crate::tui::app::Level::Error => Some(Paint::Bad),
        };
        println!("{}", paint.map_or(text.clone(), |p| out.paint(&text, p)));
        if !r.note.is_empty() {
            println!("    {}", out.paint(&r.note, paint.unwrap_or(Paint::Dim)));
        }
    }
}

/// `moosectl status -H HOST -P PORT`: one master, asked directly.
pub fn status_direct(rt: &Runtime, host: &str, port: u16, out: Out) -> Result<bool> {
    let answer = rt.block_on(async {
        moose_admin::connect(host, port, QUERY_TIMEOUT)
            .await?
            .cluster_info()
            .await
    });
    match answer {
        Ok(info) => {
            if out.json {
                println!("{}", serde_json::to_string_pretty(&info)?);
            } else {
                print_master(&info, &format!("{host}:{port}"), out);
            }
            Ok(true)
        }
        Err(e) => {
            if out.json {
                println!(
                    "{}",
                    json!({ "error": format!("master not reachable: {e}") })
                );
                Ok(false)
            } else {
                Err(anyhow::Error::new(e).context(format!(
                    "cannot get the status of the master at {host}:{port}; is it running, and is \
                     {port} its client port (MATOCL_LISTEN_PORT)?"
                )))
            }
        }
    }
}

/// `moosectl doctor [--json] [--strict] [--fix [--yes]] [HOST...]`: every check, worst
/// first; `fix`: `Some(yes)` with `--fix`.
pub fn doctor(
    rt: &Runtime,
    cluster: &Fleet,
    hosts: Vec<String>,
    strict: bool,
    fix: Option<bool>,
    out: Out,
) -> Result<bool> {
    for h in &hosts {
        if !cluster.hosts.contains_key(h) {
            anyhow::bail!(
                "no host {h} in the inventory; its hosts are: {}",
                cluster.hosts.keys().cloned().collect::<Vec<_>>().join(", ")
            );
        }
    }
    let scope = doctor::Scope(hosts);
    let report = rt.block_on(doctor::run(cluster, scope.clone(), strict));
    let Some(yes) = fix else {
        print_doctor(&report, out)?;
        return Ok(report.ok);
    };
    let plan = doctor::fix::planned(&report);
    if plan.is_empty() {
        eprintln!("moosectl doctor: no safe fix to apply");
        print_doctor(&report, out)?;
        return Ok(report.ok);
    }
    if !out.json {
        print_doctor(&report, out)?;
        println!();
    }
    eprintln!("safe fixes:");
    for (host, cmd, _, _) in &plan {
        eprintln!("  {host}: {cmd}");
    }
    let go = if yes {
        true
    } else if std::io::stdin().is_terminal() {
        eprint!("apply them? [y/N] ");
        let mut answer = String::new();
        std::io::stdin()
            .read_line(&mut answer)
            .context("cannot read the answer")?;
        matches!(answer.trim(), "y" | "Y" | "yes")
    } else {
        eprintln!("no terminal to ask and no --yes: nothing changed");
        false
    };
    if !go {
        let mut report = report;
        report.fixes = Some(
            plan.iter()
                .map(|(host, fix, check, _)| doctor::FixOutcome {
                    check,
                    host: host.clone(),
                    fix: fix.clone(),
                    applied: false,
                    message: Some("not applied".to_string()),
                })
                .collect(),
        );
        if out.json {
            print_doctor(&report, out)?;
        }
        return Ok(report.ok);
    }
    let outcomes = rt.block_on(doctor::fix::apply(cluster, &plan));
    for o in &outcomes {
        match &o.message {
            None => eprintln!("applied on {}: {}", o.host, o.fix),
            Some(m) => eprintln!("FAILED on {}: {}: {m}", o.host, o.fix),
        }
    }
    let mut again = rt.block_on(doctor::run(cluster, scope, strict));
    again.fixes = Some(outcomes);
    if !out.json {
        println!("checked again:");
    }
    print_doctor(&again, out)?;
    Ok(again.ok)
}

fn print_doctor(report: &doctor::Report, out: Out) -> Result<()> {
    if out.json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    for f in &report.results {
        let paint = match f.status {
            doctor::Status::Error => Paint::Bad,
            doctor::Status::Warning => Paint::Warn,
            doctor::Status::Ok => Paint::Ok,
            doctor::Status::Info | doctor::Status::Skipped => Paint::Dim,
        };
        println!(
            "{} {:<15} {:<12} {}",
            out.paint(&format!("{:<7}", f.status.as_str()), paint),
            f.check,
            f.host,
            f.summary
        );
        if f.status != doctor::Status::Ok {
            for e in &f.evidence {
                println!("{:37}{}", "", out.paint(e, Paint::Dim));
            }
            if let Some(fix) = &f.fix {
                let mut lines = fix.lines();
                let safe = if f.safe_fix {
                    " (safe: --fix applies it)"
                } else {
                    ""
                };
                println!("{:37}fix{safe}: {}", "", lines.next().unwrap_or(""));
                for l in lines {
                    println!("{:42}{l}", "");
                }
            }
        }
    }
    let c = &report.counts;
    println!(
        "{}",
        out.paint(
            &format!(
                "doctor {}: {} ok, {} info, {} warnings, {} errors, {} skipped ({} ms)",
                report.cluster, c.ok, c.info, c.warning, c.error, c.skipped, report.elapsed_ms
            ),
            Paint::Bold
        )
    );
    Ok(())
}

/// `moosectl logs TARGET [-f] [-n N]`.
pub fn logs(
    rt: &Runtime,
    cluster: &Fleet,
    t: &str,
    follow: bool,
    lines: usize,
    out: Out,
) -> Result<bool> {
    let t = Target::parse(t).map_err(anyhow::Error::msg)?;
    let picked = cluster.model.select(Some(&t)).map_err(anyhow::Error::msg)?;
    // One source per log file (mounts of a host share theirs, and keep only their lines).
    let (groups, _) = cluster.model.log_groups(picked);
    let sources: Vec<(String, String, std::path::PathBuf)> = groups
        .iter()
        .map(|g| {
            let i = &cluster.model.instances[g.first];
            (
                format!("{}@{}", i.name, i.host),
                g.host.clone(),
                g.path.clone(),
            )
        })
        .collect();
    let shown = |source: usize, line: &str| logs::of_mounts(line, &groups[source].mounts);
    let prefix = sources.len() > 1;
    let show = |label: &str, line: &str, notice: bool| {
        if out.json {
            print_json(&json!({ "source": label, "line": line, "notice": notice }));
        } else {
            let text = if notice {
                out.paint(line, Paint::Dim)
            } else {
                line.to_string()
            };
            if prefix {
                println!("{} {text}", out.paint(&format!("{label} │"), Paint::Dim));
            } else {
                println!("{text}");
            }
        }
    };
    let mut ok = true;
    if !follow {
        for (k, (label, host, path)) in sources.iter().enumerate() {
            let h = cluster.host(host);
            let last = rt.block_on(last_lines(&*h, path, lines, |l| shown(k, l)))?;
            match last {
                Ok(kept) => {
                    for l in &kept {
                        show(label, l, false);
                    }
                }
                Err(why) => {
                    ok = false;
                    show(
                        label,
                        &format!("cannot read {} on {host}: {why}", path.display()),
                        true,
                    );
                }
            }
        }
        return Ok(ok);
    }
    let (tx, mut rx) = mpsc::channel::<logs::LogEvent>(256);
    for (k, (_, host, path)) in sources.iter().enumerate() {
        rt.spawn(logs::follow(
            cluster.host(host),
            k,
            path.clone(),
            tx.clone(),
        ));
    }
    drop(tx);
    let mut first = vec![true; sources.len()];
    while let Some(ev) = rx.blocking_recv() {
        let label = &sources[ev.source].0;
        match ev.event {
            FollowEvent::Lines(ls) => {
                let ls: Vec<&String> = ls.iter().filter(|l| shown(ev.source, l)).collect();
                // The first batch is the history: keep only the last `lines` of it.
                let skip = if std::mem::take(&mut first[ev.source]) {
                    ls.len().saturating_sub(lines)
                } else {
                    0
                };
                for l in ls.iter().skip(skip) {
                    show(label, l, false);
                }
            }
            FollowEvent::Notice(n) => show(label, &n, true),
        }
        let _ = std::io::stdout().flush();
    }
    Ok(ok)
}

/// Lines `tail` asks for at most, to find the last lines that `keep` keeps.
const MAX_TAIL_LINES: usize = 1 << 20;

/// The last `n` lines of `path` on `host` that `keep` keeps (a shared mount log holds the
/// lines of other mounts too): asks `tail` for more lines until it has them, or the file
/// has no more. `Err` says why the file could not be read.
async fn last_lines(
    host: &dyn Machine,
    path: &std::path::Path,
    n: usize,
    keep: impl Fn(&str) -> bool,
) -> Result<Result<Vec<String>, String>> {
    let mut asked = n.max(1);
    loop {
        let cmd = moose_inventory::Command {
            program: "tail".into(),
            args: vec![
                "-n".into(),
                asked.to_string(),
                "--".into(),
                path.to_string_lossy().into_owned(),
            ],
        };
        let done = host.run(&cmd, None).await?;
        if !done.success() {
            return Ok(Err(done.message()));
        }
        let got = done.stdout.len();
        let mut kept: Vec<String> = done.stdout.into_iter().filter(|l| keep(l)).collect();
        if kept.len() >= n || got < asked || asked >= MAX_TAIL_LINES {
            kept.drain(..kept.len().saturating_sub(n));
            return Ok(Ok(kept));
        }
        asked = (asked * 8).min(MAX_TAIL_LINES);
    }
}

/// `moosectl deploy [ROLE[@HOST]] [--dry-run]`: preflight on every host, the diff, then
/// stage everywhere and commit everywhere (at most `--parallel` hosts at once).
pub fn deploy(
    rt: &Runtime,
    cluster: &Fleet,
    t: Option<&str>,
    dry_run: bool,
    out: Out,
) -> Result<bool> {
    use crate::engine::deploy::{self, Work};
    let t = target(t)?;
    let picked = cluster
        .model
        .select(t.as_ref())
        .map_err(anyhow::Error::msg)?;
    let names: std::collections::BTreeSet<&str> = picked
        .iter()
        .map(|&i| cluster.model.instances[i].host.as_str())
        .collect();
    let works: Vec<Work> = cluster
        .model
        .inventory
        .hosts
        .iter()
        .filter(|h| names.contains(h.name.as_str()))
        .map(|h| Work::of(&cluster.model, &h.name, &picked))
        .collect();
    rt.block_on(async {
        // 1. Preflight everywhere, before any change.
        let hosts = match deploy::preflight_hosts(cluster, works).await {
            Ok(h) => h,
            Err(errors) => {
                for e in errors {
                    eprintln!("moosectl: {e}");
                }
                eprintln!("moosectl: deploy stopped before changing anything");
                return Ok(false);
            }
        };
        // 2. The diff.
        if out.json {
            let changes: Vec<_> = hosts.iter().map(|h| &h.changes).collect();
            let v = json!({
                "cluster": cluster.model.inventory.cluster.name,
                "hosts": changes,
            });
            println!("{}", serde_json::to_string_pretty(&v)?);
        } else {
            for h in &hosts {
                print!("{}", h.changes.describe());
            }
        }
        if dry_run {
            return Ok(true);
        }
        // 3. Stage everywhere; 4. commit everywhere.
        let staged = match deploy::stage_all(cluster, &hosts).await {
            Ok(s) => s,
            Err(errors) => {
                for e in errors {
                    eprintln!("moosectl: {e}");
                }
                eprintln!("moosectl: deploy failed while staging; nothing was replaced");
                return Ok(false);
            }
        };
        let mut ok = true;
        for (h, r) in hosts
            .iter()
            .zip(deploy::commit_all(cluster, &hosts, &staged).await)
        {
            match r {
                Ok(summary) => {
                    if !out.json {
                        println!("{}: {summary}", h.work.host);
                    }
                }
                Err(e) => {
                    ok = false;
                    eprintln!("moosectl: {e}");
                }
            }
        }
        Ok(ok)
    })
}
