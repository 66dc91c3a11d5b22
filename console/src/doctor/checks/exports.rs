//! **exports**: for each client, the address the master will see (`ip route get MASTER` on
//! the client: its `src`) judged by the master's own code (`moose_formats::admission`: `parse`
//! then `admit`) on the file the master reads (the inventory's rendering when it is not
//! deployed). Also: the file against the inventory, and against what the running master
//! loaded (a newer file needs `reload`).

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use moose_formats::admission::{ids_unresolved, password_proof, Exports, Refusal};
use moose_inventory::{Command, Role, RoleInstance};

use crate::doctor::finding::{Finding, Status};
use crate::doctor::runner::{par_map, script, Ctx};
use crate::engine::host::BoxFuture;
use crate::engine::probe::{self, Process};

pub const CHECK: &str = "exports";

/// Any challenge does: the proof is checked against the same challenge here.
const CHALLENGE: [u8; 32] = [0x5a; 32];

/// `$1` = the master's address, as the client host resolves it and routes to it.
pub const ROUTE_SCRIPT: &str = r#"a=$(getent ahostsv4 "$1" | awk 'NR == 1 { print $1 }')
[ -n "$a" ] || { echo "noaddr"; exit 0; }
echo "addr $a"
ip -o route get "$a" 2>&1 | head -n 1 | sed 's/^/route /'
"#;

/// `$1` = the exports file, `$2` = the master's log: the file's mtime, when the master last
/// loaded exports (its log line's time).
const FILE_SCRIPT: &str = r#"[ -e "$1" ] && echo "mtime $(stat -c %Y -- "$1")"
l=$(grep -E 'exports (reloaded|file .* loaded)' "$2" 2>/dev/null | tail -n 1)
if [ -n "$l" ]; then s=$(date -d "${l%% *}" +%s 2>/dev/null) && echo "loaded $s"; fi
exit 0
"#;

/// The `src` of an `ip route get` line.
pub fn route_source(line: &str) -> Option<IpAddr> {
    let mut w = line.split_whitespace();
    while let Some(x) = w.next() {
        if x == "src" {
            return w.next()?.parse().ok();
        }
    }
    None
}

/// What a client asks of the master.
#[derive(Debug, Clone)]
pub struct Wants<'a> {
    pub subfolder: &'a str,
    pub password: Option<&'a str>,
    pub read_write: bool,
}

/// The `[[exports]]` that admits `src` for what the client wants.
fn suggestion(src: IpAddr, w: &Wants) -> String {
    let mut opts = vec![
        if w.read_write { "\"rw\"" } else { "\"ro\"" },
        "\"alldirs\"",
    ];
    let pass;
    if let Some(p) = w.password {
        pass = format!("\"password={p}\"");
        opts.push(&pass);
    }
    format!(
        "[[exports]]\naddress = \"{src}\"\npath = \"{}\"\noptions = [{}]",
        w.subfolder,
        opts.join(", ")
    )
}

/// Judges one client with the master's admission code.
pub fn judge_client(host: &str, exports: &Exports, text: &str, src: IpAddr, w: &Wants) -> Finding {
    let proof = w.password.map(|p| password_proof(&CHALLENGE, p));
    let file = exports.path.display();
    match exports.admit(
        src,
        w.subfolder,
        proof.as_deref(),
        proof.as_ref().map(|_| &CHALLENGE[..]),
    ) {
        Err(why) => {
            let f = Finding::new(
                CHECK,
                host,
                Status::Error,
                format!("the master refuses {host}'s mount from {src}: {why}"),
            )
            .evidence(format!(
                "{host} reaches the master from {src} (ip route get: src)"
            ));
            if matches!(why, Refusal::Password { .. }) {
                f.fix("set password = \"…\" in the [hosts.client] of this host to the exports line's password")
            } else {
                f.fix(suggestion(src, w))
            }
        }
        Ok(line) => {
            let raw = text
                .lines()
                .nth(line.line.saturating_sub(1))
                .unwrap_or("")
                .trim();
            let f = |status, summary: String| {
                Finding::new(CHECK, host, status, summary)
                    .evidence(format!("{file}:{}: {raw}", line.line))
                    .evidence(format!("line {}: {}", line.line, line.describe()))
                    .evidence(format!(
                        "{host} reaches the master from {src} (ip route get: src)"
                    ))
            };
            if line.opts.read_only && w.read_write {
                f(
                    Status::Warning,
                    format!(
                        "only a read-only line admits {src} for {}: the mount is read-only",
                        w.subfolder
                    ),
                )
                .fix(suggestion(src, w))
            } else {
                f(
                    Status::Ok,
                    format!("line {} admits {src} for {}", line.line, w.subfolder),
                )
            }
        }
    }
}

/// The exports file on the master host against the inventory and the running master.
pub struct FileState<'a> {
    pub path: &'a Path,
    pub deployed: Option<&'a str>,
    pub rendered: &'a str,
    pub mtime: Option<i64>,
    /// When the running master last loaded its exports (none when it is not running).
    pub loaded: Option<i64>,
    pub reload: String,
}

pub fn judge_file(host: &str, s: &FileState) -> Finding {
    let p = s.path.display();
    match (s.deployed, s.mtime, s.loaded) {
        (None, _, _) => Finding::new(CHECK, host, Status::Info, format!("{p} is not deployed yet; clients are judged on the inventory's rendering")),
        (Some(d), _, _) if d != s.rendered => Finding::new(CHECK, host, Status::Warning, format!("{p} differs from the inventory"))
            .evidence("the file on the master host is not what the inventory renders")
            .fix("moosectl deploy"),
        (Some(_), Some(m), Some(l)) if m > l => Finding::new(
            CHECK,
            host,
            Status::Warning,
            format!("{p} changed after the running master loaded it: new mounts still get the old lines"),
        )
        .evidence(format!("file modified at {m}, exports loaded at {l} (unix time, from the master's log)"))
        .fix(s.reload.clone()),
        _ => Finding::new(CHECK, host, Status::Ok, format!("{p} is what the inventory renders")),
    }
}

pub fn check(ctx: Arc<Ctx>) -> BoxFuture<'static, Vec<Finding>> {
    Box::pin(async move {
        let Some(master) = ctx.master() else {
            return Vec::new();
        };
        let clients = ctx.instances(Role::Client);
        let file_in_scope = ctx.scope.covers(&master.host);
        if clients.is_empty() && !file_in_scope {
            return Vec::new();
        }
        if let Some(why) = ctx.silent(&master.host) {
            let mut out: Vec<Finding> = clients
                .iter()
                .map(|c| Finding::skipped(CHECK, &c.host, &why))
                .collect();
            if file_in_scope {
                out.push(Finding::skipped(CHECK, &master.host, &why));
            }
            return out;
        }
        let inv = &ctx.fleet.model.inventory;
        let path = moose_inventory::exports_path(inv);
        let rendered = moose_inventory::render(inv)
            .into_iter()
            .find(|f| f.host == master.host && f.path == path)
            .map(|f| f.contents)
            .unwrap_or_default();
        let mh = ctx.machine(&master.host);
        let deployed = match tokio::time::timeout(probe::PROBE_TIMEOUT, mh.read_file(&path)).await {
            Ok(Ok(d)) => d.map(|b| String::from_utf8_lossy(&b).into_owned()),
            Ok(Err(e)) => {
                return vec![Finding::new(
                    CHECK,
                    &master.host,
                    Status::Error,
                    "cannot read the exports file",
                )
                .evidence(e.to_string())]
            }
            Err(_) => {
                return vec![Finding::new(
                    CHECK,
                    &master.host,
                    Status::Error,
                    "reading the exports file did not finish in time",
                )]
            }
        };
        let text = deployed.clone().unwrap_or_else(|| rendered.clone());
        let exports = match Exports::parse(&path, &text, &ids_unresolved) {
            Ok(e) => e,
            Err(e) => {
                return vec![Finding::new(
                    CHECK,
                    &master.host,
                    Status::Error,
                    format!("the master cannot read its exports: {e}"),
                )
                .fix("moosectl deploy")]
            }
        };
        let mut out = Vec::new();
        if file_in_scope {
            out.push(file_finding(&ctx, &master, &path, deployed.as_deref(), &rendered).await);
        }
        let (ctx2, exports, text) = (ctx.clone(), Arc::new(exports), Arc::new(text));
        let master_address = master.address.clone();
        out.extend(
            par_map(clients, move |client| {
                let (ctx, exports, text, ma) = (
                    ctx2.clone(),
                    exports.clone(),
                    text.clone(),
                    master_address.clone(),
                );
                async move { judge_one(&ctx, &client, &exports, &text, &ma).await }
            })
            .await,
        );
        out
    })
}

async fn file_finding(
    ctx: &Ctx,
    master: &RoleInstance,
    path: &Path,
    deployed: Option<&str>,
    rendered: &str,
) -> Finding {
    let mh = ctx.machine(&master.host);
    let log = ctx.fleet.model.log_of(master);
    let args = [
        path.to_string_lossy().into_owned(),
        log.to_string_lossy().into_owned(),
    ];
    let lines = script(mh.as_ref(), "checking the exports file", FILE_SCRIPT, &args)
        .await
        .unwrap_or_default();
    let num = |k: &str| {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(k)?.trim().parse::<i64>().ok())
    };
    let running = matches!(
        probe::daemon_status(mh.as_ref(), master).await,
        Process::Running { .. }
    );
    let mut args = master.stop.args.clone();
    if let Some(last) = args.last_mut() {
        *last = "reload".to_string();
    }
    let reload = Command {
        program: master.stop.program.clone(),
        args,
    }
    .shell_line();
    judge_file(
        &master.host,
        &FileState {
            path,
            deployed,
            rendered,
            mtime: num("mtime "),
            loaded: if running { num("loaded ") } else { None },
            reload,
        },
    )
}

async fn judge_one(
    ctx: &Ctx,
    client: &RoleInstance,
    exports: &Exports,
    text: &str,
    master_address: &str,
) -> Finding {
    let h = &client.host;
    if let Some(why) = ctx.silent(h) {
        return Finding::skipped(CHECK, h, &why);
    }
    let Some(spec) = ctx
        .fleet
        .model
        .inventory
        .host(h)
        .and_then(|x| x.client.clone())
    else {
        return Finding::new(
            CHECK,
            h,
            Status::Error,
            format!("{h} has a client role but no [hosts.client]"),
        );
    };
    let wants = Wants {
        subfolder: if spec.subfolder.is_empty() {
            "/"
        } else {
            &spec.subfolder
        },
        password: spec.password.as_deref(),
        read_write: !spec
            .options
            .iter()
            .any(|o| o.split(',').any(|w| w.trim() == "ro")),
    };
    let lines = match script(
        ctx.machine(h).as_ref(),
        "finding the route to the master",
        ROUTE_SCRIPT,
        &[master_address.to_string()],
    )
    .await
    {
        Ok(l) => l,
        Err(e) => {
            return Finding::new(
                CHECK,
                h,
                Status::Error,
                "cannot tell which address the master sees",
            )
            .evidence(e)
        }
    };
    if lines.iter().any(|l| l == "noaddr") {
        return Finding::new(
            CHECK,
            h,
            Status::Error,
            format!(
                "{h} cannot look up the master's address {master_address}; see name-resolution"
            ),
        );
    }
    let route = lines
        .iter()
        .find_map(|l| l.strip_prefix("route "))
        .unwrap_or("");
    match route_source(route) {
        Some(src) => judge_client(h, exports, text, src, &wants),
        None => Finding::new(
            CHECK,
            h,
            Status::Error,
            format!("{h} has no route to the master {master_address}"),
        )
        .evidence(format!("ip route get: {route}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exports(text: &str) -> Exports {
        Exports::parse(
            Path::new("/etc/m/master-exports.cfg"),
            text,
            &ids_unresolved,
        )
        .unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const RW: Wants = Wants {
        subfolder: "/",
        password: None,
        read_write: true,
    };

    #[test]
    fn rw_ro_and_subfolders() {
        let text = "10.0.0.0/8 / ro\n10.0.1.5 /data rw\n";
        let e = exports(text);
        let f = judge_client(
            "c",
            &e,
            text,
            ip("10.0.1.5"),
            &Wants {
                subfolder: "/data",
                ..RW
            },
        );
        assert_eq!(f.status, Status::Ok, "{f:?}");
        assert!(
            f.evidence[0].ends_with(":2: 10.0.1.5 /data rw"),
            "{:?}",
            f.evidence
        );
        assert!(f.evidence[1].contains("read-write"), "{:?}", f.evidence);
        let f = judge_client("c", &e, text, ip("10.0.2.9"), &RW);
        assert_eq!(f.status, Status::Warning);
        assert!(f.fix.as_deref().unwrap().contains("address = \"10.0.2.9\""));
        let f = judge_client(
            "c",
            &e,
            text,
            ip("10.0.2.9"),
            &Wants {
                subfolder: "/data",
                ..RW
            },
        );
        assert_eq!(f.status, Status::Error);
        assert!(f.summary.contains("exports only /"), "{}", f.summary);
        let f = judge_client("c", &e, text, ip("192.168.1.1"), &RW);
        assert_eq!(f.status, Status::Error);
        assert!(
            f.summary.contains("no exports line admits 192.168.1.1"),
            "{}",
            f.summary
        );
    }

    #[test]
    fn passwords() {
        let text = "* / rw,password=s3cret\n";
        let e = exports(text);
        assert_eq!(
            judge_client("c", &e, text, ip("1.2.3.4"), &RW).status,
            Status::Error
        );
        let w = Wants {
            password: Some("s3cret"),
            ..RW
        };
        assert_eq!(
            judge_client("c", &e, text, ip("1.2.3.4"), &w).status,
            Status::Ok
        );
        let w = Wants {
            password: Some("nope"),
            ..RW
        };
        let f = judge_client("c", &e, text, ip("1.2.3.4"), &w);
        assert!(f.summary.contains("incorrect password"), "{}", f.summary);
    }

    #[test]
    fn file_state_and_routes() {
        let s = |deployed, mtime, loaded| FileState {
            path: Path::new("/e"),
            deployed,
            rendered: "a\n",
            mtime,
            loaded,
            reload: "moose-master -c /m.cfg reload".into(),
        };
        assert_eq!(judge_file("m", &s(None, None, None)).status, Status::Info);
        assert_eq!(
            judge_file("m", &s(Some("b\n"), None, None)).fix.as_deref(),
            Some("moosectl deploy")
        );
        let f = judge_file("m", &s(Some("a\n"), Some(20), Some(10)));
        assert_eq!(f.fix.as_deref(), Some("moose-master -c /m.cfg reload"));
        assert_eq!(
            judge_file("m", &s(Some("a\n"), Some(10), Some(10))).status,
            Status::Ok
        );
        assert_eq!(
            route_source("local 127.0.0.1 dev lo src 127.0.0.1 uid 0 \\    cache <local>"),
            Some(ip("127.0.0.1"))
        );
        assert_eq!(
            route_source("RTNETLINK answers: Network is unreachable"),
            None
        );
    }
}
