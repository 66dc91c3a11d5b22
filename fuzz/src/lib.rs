//! Structure-aware fuzzing of every decoder a peer or an admin can feed.
//!
//! Each [`Target`] starts from valid inputs (frames of every link with correct kinds and
//! lengths, config, exports, hdd and inventory files, changelog files) and mutates them with
//! a seeded generator: bit flips, interesting byte values, length fields nudged or blown up,
//! cuts, duplications and splices between inputs. Inputs stay close to valid, so the deep
//! paths of the decoders are reached, not only their first check. A target must answer every
//! input with a value or an error: a panic is a finding, reported with the seed, the
//! iteration and the input. Runs are reproducible from the seed.

pub mod mutate;
pub mod targets;

use std::panic::AssertUnwindSafe;

pub use mutate::Mutator;

/// A decoder under test.
pub trait Target {
    fn name(&self) -> &'static str;
    /// Valid inputs to start from.
    fn seeds(&self) -> Vec<Vec<u8>>;
    /// Feeds one input to the decoder; must not panic.
    fn run(&self, input: &[u8]);
    /// Repairs what guards the deep paths (checksums) in three mutated inputs of four, so
    /// that the decoders behind the guard see mutated bytes too.
    fn fixup(&self, _input: &mut Vec<u8>) {}
}

/// A panic found by [`fuzz`].
#[derive(Debug)]
pub struct Finding {
    pub target: &'static str,
    pub seed: u64,
    pub iteration: u64,
    pub input: Vec<u8>,
    pub message: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: panic at iteration {} of seed {}: {}\ninput ({} bytes): {}",
            self.target,
            self.iteration,
            self.seed,
            self.message,
            self.input.len(),
            String::from_utf8_lossy(&self.input).escape_debug()
        )
    }
}

/// Runs `iterations` mutated inputs (the seeds themselves first) through `target`.
pub fn fuzz(target: &dyn Target, seed: u64, iterations: u64) -> Result<u64, Finding> {
    let corpus = target.seeds();
    let mut m = Mutator::new(seed);
    let run = |iteration: u64, input: Vec<u8>| -> Result<(), Finding> {
        match std::panic::catch_unwind(AssertUnwindSafe(|| target.run(&input))) {
            Ok(()) => Ok(()),
            Err(p) => Err(Finding {
                target: target.name(),
                seed,
                iteration,
                message: p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panic".into()),
                input,
            }),
        }
    };
    for s in &corpus {
        run(0, s.clone())?;
    }
    for i in 1..=iterations {
        let mut input = m.derive(&corpus);
        if i % 4 != 0 {
            target.fixup(&mut input);
        }
        run(i, input)?;
    }
    Ok(iterations + corpus.len() as u64)
}
