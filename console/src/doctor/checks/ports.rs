//! **ports**: from each role's host to the ports it needs, on the inventory's ports:
//! metalogger → master (master_metalogger), chunkserver → master (master_chunkserver),
//! client → master (master_client), clients and chunkservers → each chunkserver's data port.
//! Each connection starts on the source host ([`Machine::connect_from`]); its outcome and
//! what the target listens on (`ss -ltnp`) give the verdict. A filtered or rejected port has
//! both hosts' rule sets read for the rule that stops it and the rule that lets it through.
//!
//! [`Machine::connect_from`]: crate::engine::host::Machine::connect_from

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::sync::Arc;
use std::time::Duration;

use moose_inventory::{Role, RoleInstance};

use crate::doctor::checks::exports::{route_source, ROUTE_SCRIPT};
use crate::doctor::finding::{Finding, PortProbe, Status};
use crate::doctor::firewall::{self, RULES_SCRIPT};
use crate::doctor::runner::{par_map, script, Ctx};
use crate::engine::host::{BoxFuture, HostError, Stream};
use crate::engine::probe::{self, Process};
use moose_proto::frame::{FrameReader, FrameWriter};
use moose_proto::handshake::{say_hello, HandshakeError, Role as HelloRole};

pub const CHECK: &str = "ports";

/// How long a connection may take: no answer by then is a DROP.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Listening TCP sockets: `PORT PROGRAM` per line.
const LISTEN_SCRIPT: &str = r#"ss -Hltnp 2>/dev/null | awk '{ n = split($4, a, ":"); p = "?"; if (match($0, /users:\(\("[^"]+"/)) p = substr($0, RSTART + 9, RLENGTH - 10); print a[n], p }'
"#;

/// A target role: the programs listening on its host's ports (`None`: unknown) and whether
/// it runs, by instance id.
type TargetStates = BTreeMap<String, (Option<BTreeMap<u16, String>>, bool)>;

/// How a connection attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Connected; `Ok(software)`: a daemon of ours answered the handshake, `Err`: why the
    /// peer is not one of ours.
    Open(Result<String, String>),
    Refused,
    TimedOut,
    /// EPERM: a rule on the source host itself.
    Denied,
    /// ICMP unreachable or prohibited.
    Unreachable,
    Other(String),
}

impl Outcome {
    pub fn of(e: &HostError) -> Outcome {
        match e {
            HostError::Connect { cause, .. } => match cause.kind() {
                ErrorKind::ConnectionRefused => Outcome::Refused,
                ErrorKind::TimedOut => Outcome::TimedOut,
                ErrorKind::PermissionDenied => Outcome::Denied,
                ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable => Outcome::Unreachable,
                _ if cause.raw_os_error() == Some(libc::EPERM) => Outcome::Denied,
                _ => Outcome::Other(cause.to_string()),
            },
            e => Outcome::Other(e.to_string()),
        }
    }
}

/// Says hello as `role` on an open connection: the software of the daemon that answers, or
/// why the peer is not one of ours.
async fn handshake(stream: Box<dyn Stream>, role: HelloRole, peer: &str) -> Result<String, String> {
    let (r, w) = tokio::io::split(stream);
    let (mut reader, mut writer) = (FrameReader::new(r), FrameWriter::new(w));
    match tokio::time::timeout(
        CONNECT_TIMEOUT,
        say_hello(&mut reader, &mut writer, role, peer),
    )
    .await
    {
        Ok(Ok(software)) => Ok(software),
        // A refusal in our protocol is still one of ours (another cluster, another role).
        Ok(Err(HandshakeError::Refused { reason, .. })) => {
            Ok(format!("a daemon of ours (it refused: {reason})"))
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "no answer to the handshake within {} s",
            CONNECT_TIMEOUT.as_secs()
        )),
    }
}

/// The verdict and its status: `listener` is the program listening on the port on the target
/// (`None`: nothing listens), `running` whether the target's role runs.
pub fn verdict(
    o: &Outcome,
    listener: Option<&str>,
    running: bool,
) -> (&'static str, Status, String) {
    match o {
        Outcome::Open(Ok(software)) => ("open", Status::Ok, format!("open, {software} answers")),
        Outcome::Open(Err(why)) => (
            "open",
            Status::Error,
            format!(
                "open, but taken by another program ({}): {why}",
                listener.unwrap_or("unknown program")
            ),
        ),
        Outcome::Refused if listener.is_some() => (
            "rejected",
            Status::Error,
            "refused although the target listens: a firewall rejects it".to_string(),
        ),
        Outcome::Refused if running => (
            "not-listening",
            Status::Error,
            "refused: nothing listens although the role runs".to_string(),
        ),
        Outcome::Refused => (
            "not-listening",
            Status::Info,
            "nothing listens: the role is stopped".to_string(),
        ),
        Outcome::Unreachable => (
            "rejected",
            Status::Error,
            "rejected (ICMP unreachable or prohibited)".to_string(),
        ),
        Outcome::Denied => (
            "blocked-locally",
            Status::Error,
            "blocked on the source host itself (EPERM: an output rule)".to_string(),
        ),
        Outcome::TimedOut => (
            "filtered",
            Status::Error,
            format!(
                "no answer within {} s: a firewall drops it",
                CONNECT_TIMEOUT.as_secs()
            ),
        ),
        Outcome::Other(e) => ("filtered", Status::Error, format!("cannot connect: {e}")),
    }
}

/// One connection to try.
#[derive(Debug, Clone)]
struct Probe {
    from: String,
    /// The role on the source host that needs it (for the summary).
    need: &'static str,
    /// Who we say we are in the handshake: the role that needs the port.
    hello: HelloRole,
    to: RoleInstance,
    port: u16,
}

fn probes(ctx: &Ctx) -> Vec<Probe> {
    let model = &ctx.fleet.model;
    let ports = model.inventory.cluster.ports;
    let mut out: Vec<Probe> = Vec::new();
    let master = ctx.master();
    let chunkservers: Vec<&RoleInstance> = model
        .instances
        .iter()
        .filter(|i| i.role == Role::Chunkserver)
        .collect();
    let mut add = |p: Probe| {
        if !out
            .iter()
            .any(|q| q.from == p.from && q.to.id() == p.to.id() && q.port == p.port)
        {
            out.push(p);
        }
    };
    for h in model
        .inventory
        .hosts
        .iter()
        .filter(|h| ctx.scope.covers(&h.name))
    {
        for role in &h.roles {
            let (need, hello, port) = match role {
                Role::Metalogger => ("metalogger", HelloRole::Metalogger, ports.master_metalogger),
                Role::Chunkserver => (
                    "chunkserver",
                    HelloRole::Chunkserver,
                    ports.master_chunkserver,
                ),
                Role::Client => ("client", HelloRole::Client, ports.master_client),
                Role::Master => continue,
            };
            if let Some(m) = &master {
                add(Probe {
                    from: h.name.clone(),
                    need,
                    hello,
                    to: m.clone(),
                    port,
                });
            }
            if matches!(role, Role::Client | Role::Chunkserver) {
                for cs in &chunkservers {
                    for &port in &cs.listens {
                        add(Probe {
                            from: h.name.clone(),
                            need,
                            hello,
                            to: (*cs).clone(),
                            port,
                        });
                    }
                }
            }
        }
    }
    out
}

pub fn check(ctx: Arc<Ctx>) -> BoxFuture<'static, Vec<Finding>> {
    Box::pin(async move {
        let probes = probes(&ctx);
        if probes.is_empty() {
            return Vec::new();
        }
        // What each target host listens on, and whether each target role runs.
        let mut targets: Vec<RoleInstance> = Vec::new();
        for p in &probes {
            if !targets.iter().any(|t| t.id() == p.to.id()) {
                targets.push(p.to.clone());
            }
        }
        let c = ctx.clone();
        let states = par_map(targets, move |t| {
            let ctx = c.clone();
            async move {
                if !ctx.answers(&t.host) {
                    return (t.id(), None, false);
                }
                let m = ctx.machine(&t.host);
                let listening = script(m.as_ref(), "listing listening ports", LISTEN_SCRIPT, &[])
                    .await
                    .ok()
                    .map(|lines| {
                        lines
                            .iter()
                            .filter_map(|l| {
                                let (port, prog) = l.split_once(' ')?;
                                Some((port.parse::<u16>().ok()?, prog.to_string()))
                            })
                            .collect::<BTreeMap<u16, String>>()
                    });
                let running = matches!(
                    probe::daemon_status(m.as_ref(), &t).await,
                    Process::Running { .. }
                );
                (t.id(), listening, running)
            }
        })
        .await;
        let states: Arc<TargetStates> =
            Arc::new(states.into_iter().map(|(id, l, r)| (id, (l, r))).collect());
        let c = ctx.clone();
        par_map(probes, move |p| {
            let (ctx, states) = (c.clone(), states.clone());
            async move { one(&ctx, &p, &states).await }
        })
        .await
    })
}

async fn one(ctx: &Ctx, p: &Probe, states: &TargetStates) -> Finding {
    if let Some(why) = ctx.silent(&p.from) {
        return Finding::skipped(CHECK, &p.from, &why);
    }
    let m = ctx.machine(&p.from);
    let peer = format!("{}:{}", p.to.address, p.port);
    let r = m.connect_from(&p.to.address, p.port, CONNECT_TIMEOUT).await;
    let (outcome, r) = match r {
        Ok(stream) => (
            Outcome::Open(handshake(stream, p.hello, &peer).await),
            Ok(()),
        ),
        Err(e) => (Outcome::of(&e), Err(e)),
    };
    let (listening, running) = states.get(&p.to.id()).cloned().unwrap_or((None, false));
    let listener = listening
        .as_ref()
        .and_then(|l| l.get(&p.port))
        .map(String::as_str);
    let (v, status, words) = verdict(&outcome, listener, running);
    let target = format!("{} {}:{}", p.to.name, p.to.address, p.port);
    let mut f = Finding::new(
        CHECK,
        &p.from,
        status,
        format!("{} → {target}: {words}", p.need),
    );
    if let Err(e) = &r {
        f = f.evidence(e.to_string());
    }
    if let Some(l) = &listening {
        f = f.evidence(match l.get(&p.port) {
            Some(prog) => format!("{} listens on {} ({prog})", p.to.host, p.port),
            None => format!("{} does not listen on {}", p.to.host, p.port),
        });
    }
    let mut tool = None;
    if matches!(v, "filtered" | "rejected" | "blocked-locally") {
        let source = source_address(ctx, &p.from, &p.to.address).await;
        let mut hosts = vec![p.from.clone()];
        if p.to.host != p.from {
            hosts.push(p.to.host.clone());
        }
        for h in hosts {
            if !ctx.answers(&h) {
                continue;
            }
            let Ok(lines) = script(
                ctx.machine(&h).as_ref(),
                "reading the firewall rules",
                RULES_SCRIPT,
                &[],
            )
            .await
            else {
                continue;
            };
            for b in firewall::blocking(&lines, p.port, &source) {
                f = f.evidence(format!("{h}: {} rule ({}): {}", b.tool, b.action, b.rule));
                if f.fix.is_none() {
                    f = f.fix(b.fix.clone());
                    tool = Some(b.tool);
                }
            }
        }
    }
    f.port = Some(PortProbe {
        from: p.from.clone(),
        to: p.to.host.clone(),
        port: p.port,
        verdict: v,
        tool,
    });
    f
}

/// The address `from` sends from towards `to` (`ip route get`: `src`).
async fn source_address(ctx: &Ctx, from: &str, to: &str) -> String {
    let lines = script(
        ctx.machine(from).as_ref(),
        "finding the route",
        ROUTE_SCRIPT,
        &[to.to_string()],
    )
    .await
    .unwrap_or_default();
    lines
        .iter()
        .find_map(|l| l.strip_prefix("route "))
        .and_then(route_source)
        .map_or_else(
            || {
                ctx.fleet
                    .model
                    .inventory
                    .host(from)
                    .map_or_else(String::new, |h| h.address.clone())
            },
            |ip| ip.to_string(),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts() {
        let moose = Some("moose-master");
        let ours = Outcome::Open(Ok("0.1.0".into()));
        assert_eq!(verdict(&ours, moose, true).1, Status::Ok);
        let other = Outcome::Open(Err("did not answer as a MooseFS-style daemon".into()));
        let (v, s, w) = verdict(&other, Some("nginx"), false);
        assert_eq!((v, s), ("open", Status::Error));
        assert!(w.contains("taken by another program (nginx)"), "{w}");
        assert_eq!(verdict(&Outcome::TimedOut, moose, true).0, "filtered");
        assert_eq!(verdict(&Outcome::Refused, moose, true).0, "rejected");
        assert_eq!(verdict(&Outcome::Unreachable, None, true).0, "rejected");
        assert_eq!(verdict(&Outcome::Denied, moose, true).0, "blocked-locally");
        assert_eq!(
            verdict(&Outcome::Refused, None, false),
            (
                "not-listening",
                Status::Info,
                "nothing listens: the role is stopped".into()
            )
        );
        assert_eq!(verdict(&Outcome::Refused, None, true).1, Status::Error);
    }

    /// A listener that answers like a web server, and one of our daemons' hello.
    #[tokio::test]
    async fn handshake_tells_our_daemons_from_other_programs() {
        use tokio::io::AsyncWriteExt;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        });
        let s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let r = handshake(Box::new(s), HelloRole::Client, "peer").await;
        assert!(r.is_err(), "{r:?}");
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            let (r, w) = tokio::io::split(s);
            let (mut r, mut w) = (FrameReader::new(r), FrameWriter::new(w));
            let _ = moose_proto::handshake::accept_hello(
                &mut r,
                &mut w,
                &[HelloRole::Client],
                "the test port",
            )
            .await;
        });
        let s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let r = handshake(Box::new(s), HelloRole::Client, "peer").await;
        assert!(r.is_ok(), "{r:?}");
    }

    #[test]
    fn outcomes_from_errors() {
        let e = |kind: ErrorKind| HostError::Connect {
            host: "h".into(),
            address: "a".into(),
            port: 1,
            cause: std::io::Error::new(kind, "x"),
        };
        assert_eq!(
            Outcome::of(&e(ErrorKind::ConnectionRefused)),
            Outcome::Refused
        );
        assert_eq!(Outcome::of(&e(ErrorKind::TimedOut)), Outcome::TimedOut);
        assert_eq!(
            Outcome::of(&e(ErrorKind::PermissionDenied)),
            Outcome::Denied
        );
        assert_eq!(
            Outcome::of(&e(ErrorKind::HostUnreachable)),
            Outcome::Unreachable
        );
    }
}
