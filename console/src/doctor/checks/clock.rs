//! **clock**: each host's clock against the console's: more than 1 s apart is a warning,
//! more than 30 s an error (logs and metadata times stop lining up).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::doctor::finding::{Finding, Status};
use crate::doctor::runner::{par_map, script, Ctx};
use crate::engine::host::BoxFuture;

pub const CHECK: &str = "clock";
const WARN_SECS: f64 = 1.0;
const ERROR_SECS: f64 = 30.0;

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Judges a host's clock read between `before` and `after` on the console's clock.
pub fn judge(host: &str, remote: f64, before: f64, after: f64) -> Finding {
    let offset = remote - (before + after) / 2.0;
    let status = match offset.abs() {
        d if d > ERROR_SECS => Status::Error,
        d if d > WARN_SECS => Status::Warning,
        _ => Status::Ok,
    };
    let summary = match status {
        Status::Ok => format!("{host}'s clock agrees with the console's ({offset:+.3} s)"),
        _ => format!("{host}'s clock is {offset:+.1} s off the console's"),
    };
    let f = Finding::new(CHECK, host, status, summary).evidence(format!(
        "date +%s.%N on {host}: {remote:.3}; the console's clock: {:.3} (asked within {:.0} ms)",
        (before + after) / 2.0,
        (after - before) * 1000.0
    ));
    if status == Status::Ok {
        f
    } else {
        f.fix("timedatectl set-ntp true")
    }
}

pub fn check(ctx: Arc<Ctx>) -> BoxFuture<'static, Vec<Finding>> {
    Box::pin(async move {
        let c = ctx.clone();
        par_map(ctx.hosts(), move |h| {
            let ctx = c.clone();
            async move {
                if let Some(why) = ctx.silent(&h) {
                    return Finding::skipped(CHECK, &h, &why);
                }
                let m = ctx.machine(&h);
                let before = now();
                let r = script(m.as_ref(), "reading the clock", "date +%s.%N", &[]).await;
                let after = now();
                match r.map(|l| l.first().and_then(|t| t.trim().parse::<f64>().ok())) {
                    Ok(Some(remote)) => judge(&h, remote, before, after),
                    Ok(None) => Finding::new(CHECK, &h, Status::Error, "cannot read the clock")
                        .evidence("date +%s.%N printed no number"),
                    Err(e) => {
                        Finding::new(CHECK, &h, Status::Error, "cannot read the clock").evidence(e)
                    }
                }
            }
        })
        .await
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds() {
        assert_eq!(judge("h", 100.2, 99.9, 100.1).status, Status::Ok);
        assert_eq!(judge("h", 102.5, 100.0, 100.0).status, Status::Warning);
        let f = judge("h", 40.0, 100.0, 100.0);
        assert_eq!(f.status, Status::Error);
        assert!(f.summary.contains("-60.0 s"), "{}", f.summary);
        assert_eq!(f.fix.as_deref(), Some("timedatectl set-ntp true"));
    }
}
