//! Reading firewall rule sets (`nft -a list ruleset`, `iptables-save`) for the rules that
//! drop or reject a TCP port, and the rule that lets a source through.

/// A rule that stops traffic to a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocking {
    /// `nft`, `iptables`, `firewalld` or `ufw` (the last two write nft/iptables rules).
    pub tool: &'static str,
    /// The rule as the tool prints it (with its table and chain).
    pub rule: String,
    /// `drop` or `reject`.
    pub action: &'static str,
    /// The command that inserts an accept rule for `source` before it.
    pub fix: String,
}

/// Whether `port` is in an nft port expression: `9421`, `9419-9422`, `{ 22, 9421 }`.
fn nft_port_matches(expr: &str, port: u16) -> bool {
    expr.trim_matches(|c| c == '{' || c == '}')
        .split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .any(|x| match x.split_once('-') {
            Some((a, b)) => match (a.trim().parse::<u16>(), b.trim().parse::<u16>()) {
                (Ok(a), Ok(b)) => (a..=b).contains(&port),
                _ => false,
            },
            None => x.parse::<u16>() == Ok(port),
        })
}

/// The port expression after `dport` in an nft rule.
fn nft_dport(rule: &str) -> Option<String> {
    let at = rule.find("dport ")? + "dport ".len();
    let rest = &rule[at..];
    if rest.starts_with('{') {
        Some(rest[..=rest.find('}')?].to_string())
    } else {
        Some(rest.split_whitespace().next()?.to_string())
    }
}

/// The rules of `nft -a list ruleset` that drop or reject TCP `port` (input and output).
pub fn nft(ruleset: &str, port: u16, source: &str, tool: &'static str) -> Vec<Blocking> {
    let mut out = Vec::new();
    let (mut family, mut table, mut chain) = (String::new(), String::new(), String::new());
    for line in ruleset.lines() {
        let l = line.split(" # handle").next().unwrap_or("").trim();
        let words: Vec<&str> = l.split_whitespace().collect();
        match words[..] {
            ["table", f, t, ..] => {
                family = f.to_string();
                table = t.to_string();
                continue;
            }
            ["chain", c, ..] => {
                chain = c.to_string();
                continue;
            }
            _ => {}
        }
        let action = if words.contains(&"drop") {
            "drop"
        } else if words.contains(&"reject") {
            "reject"
        } else {
            continue;
        };
        let Some(ports) = nft_dport(l) else { continue };
        if !nft_port_matches(&ports, port) || l.contains("udp dport") {
            continue;
        }
        let saddr = if source.contains(':') {
            "ip6 saddr"
        } else {
            "ip saddr"
        };
        out.push(Blocking {
            tool,
            rule: format!("table {family} {table} chain {chain}: {l}"),
            action,
            fix: format!(
                "nft insert rule {family} {table} {chain} {saddr} {source} tcp dport {port} accept"
            ),
        });
    }
    out
}

/// Whether `port` is in an iptables `--dport`/`--dports` value: `9421`, `9419:9422`, `22,9421`.
fn ipt_port_matches(v: &str, port: u16) -> bool {
    v.split(',').any(|x| match x.split_once(':') {
        Some((a, b)) => match (a.parse::<u16>(), b.parse::<u16>()) {
            (Ok(a), Ok(b)) => (a..=b).contains(&port),
            _ => false,
        },
        None => x.parse::<u16>() == Ok(port),
    })
}

/// The rules of `iptables-save` that drop or reject TCP `port`.
pub fn iptables(saved: &str, port: u16, source: &str, tool: &'static str) -> Vec<Blocking> {
    let mut out = Vec::new();
    let mut table = "filter".to_string();
    for l in saved.lines().map(str::trim) {
        if let Some(t) = l.strip_prefix('*') {
            table = t.to_string();
            continue;
        }
        let w: Vec<&str> = l.split_whitespace().collect();
        let ["-A", chain, ..] = w[..] else { continue };
        let target = w.iter().position(|x| *x == "-j").and_then(|i| w.get(i + 1));
        let action = match target {
            Some(&"DROP") => "drop",
            Some(&"REJECT") => "reject",
            _ => continue,
        };
        let ports = w
            .iter()
            .position(|x| *x == "--dport" || *x == "--dports" || *x == "--destination-port")
            .and_then(|i| w.get(i + 1));
        if !ports.is_some_and(|p| ipt_port_matches(p, port)) || w.contains(&"udp") {
            continue;
        }
        let t = if table == "filter" {
            String::new()
        } else {
            format!("-t {table} ")
        };
        out.push(Blocking {
            tool,
            rule: l.to_string(),
            action,
            fix: format!("iptables {t}-I {chain} -s {source} -p tcp --dport {port} -j ACCEPT"),
        });
    }
    out
}

/// Reads one host's rule sets: the output of [`RULES_SCRIPT`].
pub fn blocking(output: &[String], port: u16, source: &str) -> Vec<Blocking> {
    let mut section = "";
    let (mut nft_text, mut ipt_text) = (String::new(), String::new());
    let mut front = None;
    for l in output {
        match l.as_str() {
            "== nft" => section = "nft",
            "== iptables" => section = "iptables",
            "== firewalld" => front = Some("firewalld"),
            "== ufw" => front = Some("ufw"),
            _ => {
                let t = if section == "nft" {
                    &mut nft_text
                } else {
                    &mut ipt_text
                };
                t.push_str(l);
                t.push('\n');
            }
        }
    }
    let mut out = nft(&nft_text, port, source, front.unwrap_or("nft"));
    // iptables-nft rules also show in the nft rule set; list each once.
    if out.is_empty() {
        out = iptables(&ipt_text, port, source, front.unwrap_or("iptables"));
    }
    out
}

/// Prints the rule sets a host has, each after a `== TOOL` line; front ends when active.
pub const RULES_SCRIPT: &str = r#"if command -v nft >/dev/null 2>&1; then echo "== nft"; nft -a list ruleset 2>/dev/null; fi
if command -v iptables-save >/dev/null 2>&1; then echo "== iptables"; iptables-save 2>/dev/null; fi
if command -v firewall-cmd >/dev/null 2>&1 && firewall-cmd --state >/dev/null 2>&1; then echo "== firewalld"; fi
if command -v ufw >/dev/null 2>&1 && ufw status 2>/dev/null | grep -q 'Status: active'; then echo "== ufw"; fi
exit 0
"#;

#[cfg(test)]
mod tests {
    use super::*;

    /// Saved with `nft -a list ruleset` on a host dropping the master's client port.
    const NFT: &str = "table inet filter { # handle 3
\tchain input { # handle 1
\t\ttype filter hook input priority filter; policy accept;
\t\tct state established,related accept # handle 4
\t\ttcp dport 22 accept # handle 5
\t\ttcp dport 9421 drop # handle 6
\t\ttcp dport { 9419-9420, 9422 } reject with tcp reset # handle 7
\t\tudp dport 9421 drop # handle 8
\t}
}
";

    /// Saved with `iptables-save`.
    const IPT: &str = "# Generated by iptables-save v1.8.9
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT
-A INPUT -s 10.0.0.0/8 -p tcp -m tcp --dport 9421 -j REJECT --reject-with icmp-port-unreachable
-A OUTPUT -p tcp -m multiport --dports 9419:9422 -j DROP
COMMIT
";

    #[test]
    fn nft_rules_by_port() {
        let b = nft(NFT, 9421, "10.0.1.5", "nft");
        assert_eq!(b.len(), 1, "{b:?}");
        assert_eq!(b[0].action, "drop");
        assert_eq!(
            b[0].rule,
            "table inet filter chain input: tcp dport 9421 drop"
        );
        assert_eq!(
            b[0].fix,
            "nft insert rule inet filter input ip saddr 10.0.1.5 tcp dport 9421 accept"
        );
        let b = nft(NFT, 9420, "10.0.1.5", "nft");
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].action, "reject");
        assert_eq!(nft(NFT, 9422, "s", "nft").len(), 1);
        assert!(nft(NFT, 22, "s", "nft").is_empty());
        assert!(nft(NFT, 9423, "s", "nft").is_empty());
    }

    #[test]
    fn iptables_rules_by_port() {
        let b = iptables(IPT, 9421, "10.0.1.5", "iptables");
        assert_eq!(b.len(), 2, "{b:?}");
        assert_eq!(b[0].action, "reject");
        assert_eq!(
            b[0].fix,
            "iptables -I INPUT -s 10.0.1.5 -p tcp --dport 9421 -j ACCEPT"
        );
        assert_eq!(b[1].action, "drop");
        assert!(b[1].rule.starts_with("-A OUTPUT"));
        assert!(iptables(IPT, 22, "s", "iptables").is_empty());
    }

    #[test]
    fn script_sections_and_front_ends() {
        let mut lines: Vec<String> = vec!["== nft".into()];
        lines.extend(NFT.lines().map(str::to_string));
        lines.push("== iptables".into());
        lines.extend(IPT.lines().map(str::to_string));
        lines.push("== ufw".into());
        let b = blocking(&lines, 9421, "10.0.1.5");
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].tool, "ufw");
        let only_ipt: Vec<String> = std::iter::once("== iptables".to_string())
            .chain(IPT.lines().map(str::to_string))
            .collect();
        assert_eq!(blocking(&only_ipt, 9421, "s")[0].tool, "iptables");
    }
}
