//! **name-resolution**: each name a host needs (the master's address on every role host; the
//! chunkservers' addresses on clients and chunkservers) is looked up there as the daemons do
//! (`getent ahostsv4`), with where the answer came from (an `/etc/hosts` line or DNS).
//! Errors: no answer, different answers on different hosts, an answer that is not an address
//! of the named host, and a loopback answer for a name other machines must reach (Debian's
//! `127.0.1.1` hostname line).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;

use moose_inventory::Role;

use crate::doctor::finding::{Finding, FixAction, Status};
use crate::doctor::runner::{par_map, script, Ctx};
use crate::engine::host::BoxFuture;

pub const CHECK: &str = "name-resolution";

/// Arguments: names. Prints this host's IPv4 addresses, then each name's source and answers.
const SCRIPT: &str = r#"ip -4 -o addr show 2>/dev/null | awk '{ split($4, a, "/"); print "addr\t" a[1] }'
for n; do
  l=$(awk -v n="$n" '$0 !~ /^[[:space:]]*#/ { for (i = 2; i <= NF; i++) { if ($i ~ /^#/) break; if ($i == n) { print NR; exit } } }' /etc/hosts 2>/dev/null)
  a=$(getent ahostsv4 "$n" | awk '{ print $1 }' | sort -u | paste -sd, -)
  printf 'name\t%s\t%s\t%s\n' "$n" "${l:+hosts:$l}" "$a"
done
"#;

/// How one name looked up on one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The `/etc/hosts` line that gave it; `None`: DNS (or another source).
    pub hosts_line: Option<usize>,
    pub addrs: BTreeSet<Ipv4Addr>,
}

/// What one host said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostView {
    pub own: BTreeSet<Ipv4Addr>,
    pub names: BTreeMap<String, Answer>,
}

pub fn parse(lines: &[String]) -> HostView {
    let mut v = HostView::default();
    for l in lines {
        let f: Vec<&str> = l.split('\t').collect();
        match f[..] {
            ["addr", a] => v.own.extend(a.parse::<Ipv4Addr>().ok()),
            ["name", n, src, addrs] => {
                v.names.insert(
                    n.to_string(),
                    Answer {
                        hosts_line: src.strip_prefix("hosts:").and_then(|x| x.parse().ok()),
                        addrs: addrs.split(',').filter_map(|a| a.parse().ok()).collect(),
                    },
                );
            }
            _ => {}
        }
    }
    v
}

/// The cluster's names: which hosts need each, and which host each names.
#[derive(Debug, Clone, Default)]
pub struct Needs {
    /// Host → the names it must look up.
    pub by_host: BTreeMap<String, BTreeSet<String>>,
    /// Name → the hosts whose inventory address it is.
    pub targets: BTreeMap<String, Vec<String>>,
}

impl Needs {
    pub fn of(inv: &moose_inventory::Inventory) -> Needs {
        let is_name = |a: &str| a.parse::<std::net::IpAddr>().is_err();
        let mut n = Needs::default();
        let master = inv.master().map(|m| m.address.clone());
        let chunkservers: Vec<String> = inv
            .hosts
            .iter()
            .filter(|h| h.has_role(Role::Chunkserver))
            .map(|h| h.address.clone())
            .collect();
        for h in &inv.hosts {
            let mut names = BTreeSet::new();
            if !h.roles.is_empty() {
                names.extend(master.clone().filter(|m| is_name(m)));
            }
            if h.has_role(Role::Chunkserver) || h.has_role(Role::Client) {
                names.extend(chunkservers.iter().filter(|a| is_name(a)).cloned());
            }
            n.by_host.insert(h.name.clone(), names);
            if is_name(&h.address) {
                n.targets
                    .entry(h.address.clone())
                    .or_default()
                    .push(h.name.clone());
            }
        }
        n
    }
}

fn list(a: &BTreeSet<Ipv4Addr>) -> String {
    a.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Judges every needing host in `report` from all hosts' views.
pub fn judge(
    needs: &Needs,
    views: &BTreeMap<String, HostView>,
    report: &[String],
    one_machine: bool,
) -> Vec<Finding> {
    let mut out = Vec::new();
    for host in report {
        let Some(view) = views.get(host) else {
            continue;
        };
        let names = needs.by_host.get(host).cloned().unwrap_or_default();
        if names.is_empty() {
            out.push(Finding::new(
                CHECK,
                host,
                Status::Ok,
                "the hosts it talks to are given as IP addresses: nothing to look up",
            ));
            continue;
        }
        for name in names {
            out.push(judge_name(host, &name, needs, views, one_machine, view));
        }
    }
    out
}

fn judge_name(
    host: &str,
    name: &str,
    needs: &Needs,
    views: &BTreeMap<String, HostView>,
    one: bool,
    view: &HostView,
) -> Finding {
    let targets = needs.targets.get(name).cloned().unwrap_or_default();
    let target_addrs: BTreeSet<Ipv4Addr> = targets
        .iter()
        .filter_map(|t| views.get(t))
        .flat_map(|v| v.own.iter().copied())
        .collect();
    let others: Vec<(&String, &Answer)> = views
        .iter()
        .filter(|(h, _)| h.as_str() != host)
        .filter_map(|(h, v)| Some((h, v.names.get(name)?)))
        .filter(|(_, a)| !a.addrs.is_empty())
        .collect();
    let answer = view.names.get(name);
    let source = |a: &Answer| match a.hosts_line {
        Some(n) => format!("/etc/hosts line {n}"),
        None => "DNS".to_string(),
    };
    let Some(a) = answer.filter(|a| !a.addrs.is_empty()) else {
        // The address it should have: another host's answer, else on one machine loopback.
        let known = others
            .iter()
            .flat_map(|(_, a)| a.addrs.iter())
            .find(|x| !x.is_loopback())
            .copied()
            .or(one.then_some(Ipv4Addr::LOCALHOST));
        let f = Finding::new(
            CHECK,
            host,
            Status::Error,
            format!("{host} cannot look up {name}: the daemons there cannot reach it"),
        )
        .evidence(format!("getent ahostsv4 {name}: no answer"));
        return match known {
            Some(ip) => f.safe(FixAction::HostsLine {
                line: format!("{ip} {name}"),
            }),
            None => f,
        };
    };
    let ev = format!(
        "getent ahostsv4 {name}: {} (from {})",
        list(&a.addrs),
        source(a)
    );
    if !one && a.addrs.iter().any(|x| x.is_loopback()) {
        let f = Finding::new(
            CHECK,
            host,
            Status::Error,
            format!("{name} is a loopback address on {host}: other machines cannot reach it by what it announces (Debian's 127.0.1.1 hostname line?)"),
        )
        .evidence(ev);
        return match a.hosts_line {
            Some(n) => f.fix(format!("sed -i '{n}s/^/# /' /etc/hosts")),
            None => f,
        };
    }
    // On one machine a loopback answer reaches every host.
    let loopback_here = one && a.addrs.iter().all(|x| x.is_loopback());
    let known_target = !targets.is_empty() && !target_addrs.is_empty();
    if known_target && !loopback_here && a.addrs.is_disjoint(&target_addrs) {
        return Finding::new(
            CHECK,
            host,
            Status::Error,
            format!(
                "{name} is {} on {host}, not an address of {} ({})",
                list(&a.addrs),
                targets.join(", "),
                list(&target_addrs)
            ),
        )
        .evidence(ev);
    }
    if let Some((other, b)) = others.iter().find(|(_, b)| b.addrs != a.addrs) {
        return Finding::new(
            CHECK,
            host,
            Status::Error,
            format!(
                "{name} is {} on {host} but {} on {other}",
                list(&a.addrs),
                list(&b.addrs)
            ),
        )
        .evidence(ev);
    }
    Finding::new(
        CHECK,
        host,
        Status::Ok,
        format!("{name} is {}", list(&a.addrs)),
    )
    .evidence(ev)
}

pub fn check(ctx: Arc<Ctx>) -> BoxFuture<'static, Vec<Finding>> {
    Box::pin(async move {
        let needs = Arc::new(Needs::of(&ctx.fleet.model.inventory));
        // Every host answers, not only those in scope: their answers are compared.
        let hosts: Vec<String> = ctx
            .fleet
            .model
            .inventory
            .hosts
            .iter()
            .map(|h| h.name.clone())
            .collect();
        let (c, n) = (ctx.clone(), needs.clone());
        let gathered = par_map(hosts, move |h| {
            let (ctx, needs) = (c.clone(), n.clone());
            async move {
                if let Some(why) = ctx.silent(&h) {
                    return (h, Err(why));
                }
                let args: Vec<String> = needs
                    .by_host
                    .get(&h)
                    .into_iter()
                    .flatten()
                    .cloned()
                    .collect();
                let r = script(ctx.machine(&h).as_ref(), "looking up names", SCRIPT, &args).await;
                (h, r.map(|l| parse(&l)))
            }
        })
        .await;
        let mut views = BTreeMap::new();
        let mut out = Vec::new();
        for (h, r) in gathered {
            match r {
                Ok(v) => {
                    views.insert(h, v);
                }
                Err(why) if ctx.scope.covers(&h) => out.push(if ctx.answers(&h) {
                    Finding::new(CHECK, &h, Status::Error, "cannot look up names").evidence(why)
                } else {
                    Finding::skipped(CHECK, &h, &why)
                }),
                Err(_) => {}
            }
        }
        out.extend(judge(&needs, &views, &ctx.hosts(), ctx.one_machine()));
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(own: &[&str], names: &[(&str, Option<usize>, &[&str])]) -> HostView {
        HostView {
            own: own.iter().map(|a| a.parse().unwrap()).collect(),
            names: names
                .iter()
                .map(|(n, l, a)| {
                    (
                        n.to_string(),
                        Answer {
                            hosts_line: *l,
                            addrs: a.iter().map(|x| x.parse().unwrap()).collect(),
                        },
                    )
                })
                .collect(),
        }
    }

    fn needs() -> Needs {
        let mut n = Needs::default();
        for h in ["m", "c"] {
            n.by_host.insert(h.into(), ["mfsmaster".to_string()].into());
        }
        n.targets.insert("mfsmaster".into(), vec!["m".into()]);
        n
    }

    #[test]
    fn script_lines() {
        let v = parse(&[
            "addr\t10.0.0.1".into(),
            "name\tmfsmaster\thosts:7\t10.0.0.1,10.0.0.2".into(),
            "name\tx\t\t".into(),
        ]);
        assert_eq!(v.own.len(), 1);
        assert_eq!(v.names["mfsmaster"].hosts_line, Some(7));
        assert_eq!(v.names["mfsmaster"].addrs.len(), 2);
        assert!(v.names["x"].addrs.is_empty());
    }

    #[test]
    fn missing_name_gets_the_answer_of_another_host() {
        let views: BTreeMap<String, HostView> = [
            (
                "m".to_string(),
                view(&["10.0.0.1"], &[("mfsmaster", Some(3), &["10.0.0.1"])]),
            ),
            (
                "c".to_string(),
                view(&["10.0.0.2"], &[("mfsmaster", None, &[])]),
            ),
        ]
        .into();
        let f = judge(&needs(), &views, &["m".into(), "c".into()], false);
        assert_eq!(f[0].status, Status::Ok, "{f:?}");
        assert!(f[0].evidence[0].contains("/etc/hosts line 3"));
        assert_eq!(f[1].status, Status::Error);
        assert_eq!(
            f[1].fix.as_deref(),
            Some("echo '10.0.0.1 mfsmaster' >> /etc/hosts")
        );
        assert!(f[1].safe_fix);
    }

    #[test]
    fn loopback_wrong_target_and_disagreement() {
        let views: BTreeMap<String, HostView> = [
            (
                "m".to_string(),
                view(&["10.0.0.1"], &[("mfsmaster", Some(2), &["127.0.1.1"])]),
            ),
            (
                "c".to_string(),
                view(&["10.0.0.2"], &[("mfsmaster", None, &["10.0.0.9"])]),
            ),
        ]
        .into();
        let f = judge(&needs(), &views, &["m".into(), "c".into()], false);
        assert!(f[0].summary.contains("loopback"), "{}", f[0].summary);
        assert_eq!(f[0].fix.as_deref(), Some("sed -i '2s/^/# /' /etc/hosts"));
        assert!(
            f[1].summary.contains("not an address of m"),
            "{}",
            f[1].summary
        );
        let views: BTreeMap<String, HostView> = [
            (
                "m".to_string(),
                view(
                    &["10.0.0.1", "10.0.0.5"],
                    &[("mfsmaster", None, &["10.0.0.1"])],
                ),
            ),
            (
                "c".to_string(),
                view(&["10.0.0.2"], &[("mfsmaster", None, &["10.0.0.5"])]),
            ),
        ]
        .into();
        let f = judge(&needs(), &views, &["c".into()], false);
        assert!(
            f[0].summary.contains("but 10.0.0.1 on m"),
            "{}",
            f[0].summary
        );
    }

    #[test]
    fn one_machine_accepts_loopback_and_offers_it() {
        let views: BTreeMap<String, HostView> = [(
            "m".to_string(),
            view(&["127.0.0.1"], &[("mfsmaster", None, &[])]),
        )]
        .into();
        let mut n = needs();
        n.by_host.remove("c");
        let f = judge(&n, &views, &["m".into()], true);
        assert_eq!(
            f[0].fix.as_deref(),
            Some("echo '127.0.0.1 mfsmaster' >> /etc/hosts")
        );
        let views: BTreeMap<String, HostView> = [(
            "m".to_string(),
            view(&["127.0.0.1"], &[("mfsmaster", Some(1), &["127.0.0.1"])]),
        )]
        .into();
        assert_eq!(judge(&n, &views, &["m".into()], true)[0].status, Status::Ok);
    }
}
