//! A short fixed-seed run of every target, in the test suite. `moose-fuzz` makes long runs.

#[test]
fn every_decoder_survives_a_short_structure_aware_run() {
    for target in moose_fuzz::targets::all() {
        let iterations = if target.name() == "inventory" {
            1_500
        } else {
            5_000
        };
        if let Err(finding) = moose_fuzz::fuzz(target.as_ref(), 20261204, iterations) {
            panic!("{finding}");
        }
    }
}
