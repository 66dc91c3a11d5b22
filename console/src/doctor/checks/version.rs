//! **version**: every program a host runs (`PROGRAM --version`: `NAME VERSION (protocol N)`)
//! and what the running master reports (`ClusterInfo`) against this moosectl's build. Another
//! protocol is an error (they cannot talk); another version a warning.

use std::path::PathBuf;
use std::sync::Arc;

use moose_inventory::{RoleInstance, Transport};
use moose_proto::{PROTOCOL_VERSION, VERSION};

use crate::doctor::finding::{Finding, Status};
use crate::doctor::runner::{par_map, Ctx};
use crate::engine::host::BoxFuture;
use crate::engine::probe::PROBE_TIMEOUT;

pub const CHECK: &str = "version";

/// `NAME VERSION [(protocol N)]` → version and protocol.
pub fn parse(line: &str) -> Option<(String, Option<u16>)> {
    let mut words = line.split_whitespace();
    let _name = words.next()?;
    let version = words.next()?.to_string();
    let rest: Vec<&str> = words.collect();
    let protocol = match rest[..] {
        ["(protocol", n] => n.trim_end_matches(')').parse().ok(),
        _ => None,
    };
    Some((version, protocol))
}

/// Judges one program's `--version` answer; `fix`: how that host gets this build.
pub fn judge(host: &str, program: &str, answer: &str, fix: Option<&str>) -> Finding {
    let with_fix = |f: Finding| match fix {
        Some(x) => f.fix(x),
        None => f,
    };
    let ev = format!("{program} --version: {answer}");
    match parse(answer) {
        None => with_fix(Finding::new(CHECK, host, Status::Error, format!("{program} --version gives no version")).evidence(ev)),
        Some((_, Some(p))) if p != PROTOCOL_VERSION => with_fix(
            Finding::new(
                CHECK,
                host,
                Status::Error,
                format!("{program} speaks protocol {p}, this build speaks {PROTOCOL_VERSION}: they cannot talk"),
            )
            .evidence(ev),
        ),
        Some((v, _)) if v != VERSION => with_fix(
            Finding::new(CHECK, host, Status::Warning, format!("{program} is version {v}, moosectl is {VERSION}"))
                .evidence(ev),
        ),
        Some((_, None)) => with_fix(
            Finding::new(CHECK, host, Status::Warning, format!("{program} does not say its protocol (an older build)"))
                .evidence(ev),
        ),
        Some((v, Some(p))) => Finding::new(CHECK, host, Status::Ok, format!("{program} {v}, protocol {p}")).evidence(ev),
    }
}

/// What the running master reports against this build.
pub fn judge_cluster(host: &str, master: &str, chunkservers: &[(String, String)]) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut odd: Vec<String> = Vec::new();
    if master != VERSION {
        odd.push(format!("the master runs {master}"));
    }
    for (addr, v) in chunkservers {
        if v != VERSION {
            odd.push(format!("chunkserver {addr} runs {v}"));
        }
    }
    let ev = std::iter::once(format!("master: {master}"))
        .chain(
            chunkservers
                .iter()
                .map(|(a, v)| format!("chunkserver {a}: {v}")),
        )
        .collect::<Vec<_>>();
    let mut f = if odd.is_empty() {
        Finding::new(
            CHECK,
            host,
            Status::Ok,
            format!("the running master and chunkservers are {VERSION}"),
        )
    } else {
        Finding::new(
            CHECK,
            host,
            Status::Warning,
            format!(
                "{} (moosectl is {VERSION}); restart them on the new build",
                odd.join(", ")
            ),
        )
    };
    f.evidence = ev;
    out.push(f);
    out
}

pub fn check(ctx: Arc<Ctx>) -> BoxFuture<'static, Vec<Finding>> {
    Box::pin(async move {
        let mut programs: Vec<(String, &'static str)> = Vec::new();
        for i in &ctx.fleet.model.instances {
            let p = (i.host.clone(), i.role.program());
            if ctx.scope.covers(&i.host) && !programs.contains(&p) {
                programs.push(p);
            }
        }
        let c = ctx.clone();
        let mut out: Vec<Finding> = par_map(programs, move |(h, program)| {
            let ctx = c.clone();
            async move {
                if let Some(why) = ctx.silent(&h) {
                    return Finding::skipped(CHECK, &h, &why);
                }
                let m = ctx.machine(&h);
                let ssh = ctx
                    .fleet
                    .model
                    .inventory
                    .host(&h)
                    .is_some_and(|x| x.transport == Transport::Ssh);
                let fix = ssh.then_some("moosectl deploy");
                let path: PathBuf = match m.check_binary(program).await {
                    Ok(p) => p,
                    Err(e) => {
                        let f = Finding::new(
                            CHECK,
                            &h,
                            Status::Error,
                            format!("{program} cannot be run"),
                        )
                        .evidence(e.to_string());
                        return match fix {
                            Some(x) => f.fix(x),
                            None => f,
                        };
                    }
                };
                let cmd = moose_inventory::Command {
                    program: path,
                    args: vec!["--version".into()],
                };
                match tokio::time::timeout(PROBE_TIMEOUT, m.run(&cmd, None)).await {
                    Ok(Ok(f)) if f.success() => {
                        judge(&h, program, f.stdout.first().map_or("", |s| s.trim()), fix)
                    }
                    Ok(Ok(f)) => Finding::new(
                        CHECK,
                        &h,
                        Status::Error,
                        format!("{program} --version fails"),
                    )
                    .evidence(f.message()),
                    Ok(Err(e)) => {
                        Finding::new(CHECK, &h, Status::Error, format!("cannot run {program}"))
                            .evidence(e.to_string())
                    }
                    Err(_) => Finding::new(
                        CHECK,
                        &h,
                        Status::Error,
                        format!(
                            "{program} --version did not answer within {} s",
                            PROBE_TIMEOUT.as_secs()
                        ),
                    ),
                }
            }
        })
        .await;
        if let Some(master) = ctx.master().filter(|m| ctx.scope.covers(&m.host)) {
            out.extend(running(&ctx, &master).await);
        }
        out
    })
}

/// Asks the running master (through its host) for the versions it sees.
async fn running(ctx: &Ctx, master: &RoleInstance) -> Vec<Finding> {
    let host = master.host.as_str();
    if let Some(why) = ctx.silent(host) {
        return vec![Finding::skipped(CHECK, host, &why)];
    }
    match ctx.running_master(master).await {
        Ok(info) => {
            let cs: Vec<(String, String)> = info
                .chunkservers
                .iter()
                .filter(|c| c.connected)
                .map(|c| (c.addr.to_string(), c.version.clone()))
                .collect();
            judge_cluster(host, &info.version, &cs)
        }
        Err(why) => vec![Finding::new(
            CHECK,
            host,
            Status::Info,
            "the master does not answer; the running versions were not compared",
        )
        .evidence(why.clone())],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers() {
        let ours = format!("moose-master {VERSION} (protocol {PROTOCOL_VERSION})");
        assert_eq!(judge("h", "moose-master", &ours, None).status, Status::Ok);
        let other = format!("moose-master {VERSION} (protocol {})", PROTOCOL_VERSION + 1);
        let f = judge("h", "moose-master", &other, Some("moosectl deploy"));
        assert_eq!(f.status, Status::Error);
        assert_eq!(f.fix.as_deref(), Some("moosectl deploy"));
        assert_eq!(
            judge("h", "moose-master", "moose-master 0.0.1", None).status,
            Status::Warning
        );
        assert_eq!(judge("h", "moose-master", "", None).status, Status::Error);
        let v = judge_cluster("h", "0.0.1", &[("a".into(), VERSION.into())]);
        assert_eq!(v[0].status, Status::Warning);
        assert!(v[0].summary.contains("the master runs 0.0.1"));
    }
}
