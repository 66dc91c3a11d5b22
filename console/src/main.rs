//! `moosectl`: see `moosectl --help` and docs/console.md.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use moosectl::cli::args::{Cli, Cmd, Verb};
use moosectl::cli::headless::{self, Out};
use moosectl::engine::model::{self, Fleet, Source};
use moosectl::engine::plan::Action;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("moosectl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<bool> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let out = Out::new(cli.json);
    if let Some(Cmd::Status {
        host: Some(host),
        port: Some(port),
        ..
    }) = &cli.command
    {
        return headless::status_direct(&rt, host, *port, out);
    }
    let cluster = open(&cli)?;
    let result = match cli.command {
        None => moosectl::tui::run(rt.handle(), cluster, cli.readonly).map(|()| true),
        Some(Cmd::Verb(Verb::Plan { action, target })) => {
            headless::plan(&cluster, action.into(), target.as_deref(), out)
        }
        Some(cmd)
            if cli.readonly
                && match cmd {
                    Cmd::Verb(Verb::Start { .. } | Verb::Stop { .. } | Verb::Restart { .. }) => {
                        true
                    }
                    Cmd::Deploy { dry_run, .. } => !dry_run,
                    Cmd::Doctor { fix, .. } => fix,
                    _ => false,
                } =>
        {
            anyhow::bail!("--readonly refuses deploy, start, stop, restart and doctor --fix; run without --readonly to change the cluster")
        }
        Some(Cmd::Verb(Verb::Start { target })) => {
            headless::run_plan(&rt, &cluster, Action::Start, target.as_deref(), out)
        }
        Some(Cmd::Verb(Verb::Stop { target })) => {
            headless::run_plan(&rt, &cluster, Action::Stop, target.as_deref(), out)
        }
        Some(Cmd::Verb(Verb::Restart { target })) => {
            headless::run_plan(&rt, &cluster, Action::Restart, Some(&target), out)
        }
        Some(Cmd::Status { target, .. }) => headless::status(&rt, &cluster, target.as_deref(), out),
        Some(Cmd::Logs {
            target,
            follow,
            lines,
        }) => headless::logs(&rt, &cluster, &target, follow, lines, out),
        Some(Cmd::Doctor {
            hosts,
            strict,
            fix,
            yes,
        }) => headless::doctor(&rt, &cluster, hosts, strict, fix.then_some(yes), out),
        Some(Cmd::Deploy {
            target, dry_run, ..
        }) => headless::deploy(&rt, &cluster, target.as_deref(), dry_run, out),
    };
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}

/// Loads the inventory (the built-in one without `-i`) under the state folder.
fn open(cli: &Cli) -> Result<Fleet> {
    let state_dir = match &cli.state {
        Some(s) => {
            std::path::absolute(s).with_context(|| format!("state folder {}", s.display()))?
        }
        None => Source::default_state_dir().context(
            "cannot tell where the state folder is: set XDG_DATA_HOME or HOME, or pass --state DIR",
        )?,
    };
    std::fs::create_dir_all(&state_dir)
        .with_context(|| format!("cannot create the state folder {}", state_dir.display()))?;
    let source = Source {
        inventory: cli.inventory.clone(),
        state_dir,
    };
    let model =
        model::load(&source).with_context(|| format!("inventory: {}", source.describe()))?;
    for w in &model.warnings {
        eprintln!("moosectl: {w}");
    }
    let mut ssh = moosectl::engine::host::SshOptions {
        accept_new_host_keys: cli.accept_new_host_keys,
        connect_timeout: std::time::Duration::from_secs(cli.connect_timeout.max(1)),
        ..Default::default()
    };
    if let Some(k) = &cli.known_hosts {
        ssh.known_hosts =
            std::path::absolute(k).with_context(|| format!("known_hosts file {}", k.display()))?;
    }
    let binaries = match &cli.command {
        Some(Cmd::Deploy {
            binaries: Some(b), ..
        }) => Some(
            std::path::absolute(b).with_context(|| format!("binaries folder {}", b.display()))?,
        ),
        _ => None,
    };
    let options = model::HostOptions {
        ssh,
        binaries,
        parallel: cli.parallel.max(1),
    };
    Ok(Fleet::with_options(model, &options)?)
}
