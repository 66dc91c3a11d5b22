//! "Did you mean …?" for misspelled keys, roles and options.

/// The candidate closest to a misspelled word (case is ignored), if any is close: at most two
/// edits, and fewer edits than the word has characters.
pub fn suggest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let lower = word.to_lowercase();
    let len = lower.chars().count();
    candidates
        .iter()
        .map(|c| (edit_distance(&lower, &c.to_lowercase()), *c))
        .filter(|(d, _)| *d <= 2 && *d < len)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance, by characters.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = Vec::with_capacity(b.len() + 1);
        cur.push(i + 1);
        for (j, cb) in b.iter().enumerate() {
            let subst = prev[j] + usize::from(ca != *cb);
            let del = prev[j + 1] + 1;
            let ins = cur[j] + 1;
            cur.push(subst.min(del).min(ins));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances_and_suggestions() {
        assert_eq!(edit_distance("chunk-server", "chunkserver"), 1);
        assert_eq!(
            suggest("DATA_PAHT", &["DATA_PATH", "MASTER_PORT"]),
            Some("DATA_PATH")
        );
        assert_eq!(suggest("Master", &["master", "metalogger"]), Some("master"));
        assert_eq!(suggest("xy", &["master"]), None);
    }
}
