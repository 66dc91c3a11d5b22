//! Numbers in words an admin reads at a glance.

use std::time::Duration;

// Shared with the daemons' tools, so sizes and uptimes read the same everywhere.
pub use moose_admin::status::duration;
pub use moose_common::units::human_bytes as bytes;

/// Elapsed time of an operation: `0.4 s`, `12.3 s`, then as [`duration`].
pub fn elapsed(d: Duration) -> String {
    if d < Duration::from_secs(60) {
        format!("{:.1} s", d.as_secs_f64())
    } else {
        duration(d)
    }
}

/// A count with thousands separators: `1 234 567`.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// Used share in percent (0 when the total is 0).
pub fn percent(used: u64, total: u64) -> u64 {
    if total == 0 {
        0
    } else {
        ((used as u128 * 100 + total as u128 / 2) / total as u128) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(4 << 30), "4.0 GiB");
        assert_eq!(duration(Duration::from_secs(42)), "42s");
        assert_eq!(duration(Duration::from_secs(185)), "3m05s");
        assert_eq!(duration(Duration::from_secs(7620)), "2h07m");
        assert_eq!(duration(Duration::from_secs(5 * 86400 + 3 * 3600)), "5d03h");
        assert_eq!(elapsed(Duration::from_millis(420)), "0.4 s");
        assert_eq!(elapsed(Duration::from_secs(75)), "1m15s");
        assert_eq!(count(0), "0");
        assert_eq!(count(1234567), "1 234 567");
        assert_eq!(count(100), "100");
        assert_eq!(percent(1, 3), 33);
        assert_eq!(percent(5, 0), 0);
    }
}
