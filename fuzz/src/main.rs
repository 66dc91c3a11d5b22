//! `moose-fuzz [TARGET|all] [--seed N] [--iterations N]`: a long structure-aware fuzzing run
//! (the test suite runs a short one with a fixed seed). A finding prints the seed, the
//! iteration and the input, and exits 1.

use anyhow::{bail, Context};

fn main() -> anyhow::Result<()> {
    let mut which = "all".to_string();
    let (mut seed, mut iterations) = (1u64, 1_000_000u64);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seed" => seed = args.next().context("--seed needs a number")?.parse()?,
            "--iterations" => {
                iterations = args
                    .next()
                    .context("--iterations needs a number")?
                    .parse()?
            }
            "-h" | "--help" => {
                println!("usage: moose-fuzz [TARGET|all] [--seed N] [--iterations N]");
                return Ok(());
            }
            t => which = t.to_string(),
        }
    }
    let targets: Vec<_> = moose_fuzz::targets::all()
        .into_iter()
        .filter(|t| which == "all" || t.name() == which)
        .collect();
    if targets.is_empty() {
        bail!("no target {which}; targets: frames cfg exports hdd inventory (and the master's changelog test)");
    }
    // Findings are reported by the runner, not by the default hook.
    std::panic::set_hook(Box::new(|_| {}));
    for t in targets {
        let started = std::time::Instant::now();
        match moose_fuzz::fuzz(t.as_ref(), seed, iterations) {
            Ok(n) => println!(
                "{}: {n} inputs, no panic ({:.1} s)",
                t.name(),
                started.elapsed().as_secs_f64()
            ),
            Err(f) => {
                eprintln!("{f}");
                std::process::exit(1);
            }
        }
    }
    Ok(())
}
