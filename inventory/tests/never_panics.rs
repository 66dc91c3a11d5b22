//! The loader (and rendering of whatever it accepts) must not panic on any input.

use proptest::prelude::*;

use moose_inventory::{
    commands, load_str, render, LoadOptions, LOCAL_DEFAULT, THREE_HOSTS_EXAMPLE,
};

fn exercise(text: &str) {
    let options = LoadOptions {
        base: Some("/base".into()),
        this_machine: vec!["10.0.0.1".to_string()],
    };
    match load_str(text, "fuzz.toml", &options) {
        Ok(loaded) => {
            let _ = render(&loaded.inventory);
            let _ = commands(&loaded.inventory);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

/// An example with `len` bytes at `at` replaced by `insert` (cut at character boundaries).
fn mutate(base: &str, at: usize, len: usize, insert: &str) -> String {
    let mut start = at.min(base.len());
    while !base.is_char_boundary(start) {
        start -= 1;
    }
    let mut end = (start + len).min(base.len());
    while !base.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{insert}{}", &base[..start], &base[end..])
}

proptest! {
    #[test]
    fn arbitrary_text(text in "(?s).{0,600}") {
        exercise(&text);
    }

    #[test]
    fn toml_shaped_text(text in r#"(\[{1,2}(cluster|hosts|exports|topology|cluster\.ports|hosts\.chunkservers|hosts\.client)\]{1,2}\n|(name|address|roles|port|goal|disks|path|options|mount|transport|ssh|limit|labels) = ("[a-z0-9./*-]{0,12}"|-?[0-9]{1,6}|\[("[a-z]{0,12}", ){0,3}\]|\{ path = "[a-z/]{0,8}" \})\n){0,40}"#) {
        exercise(&text);
    }

    #[test]
    fn mutated_examples(
        which in 0usize..2,
        at in 0usize..2000,
        len in 0usize..40,
        insert in r##"[\[\]{}="#,.a-z0-9 \n-]{0,12}"##,
    ) {
        let base = [LOCAL_DEFAULT, THREE_HOSTS_EXAMPLE][which];
        exercise(&mutate(base, at, len, &insert));
    }
}
