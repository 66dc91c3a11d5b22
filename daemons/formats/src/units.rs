//! Sizes and durations as MooseFS config files write them.

/// Parses a size: a number with an optional suffix `k M G T P E` (powers of 1000),
/// `Ki Mi Gi Ti Pi Ei` (powers of 1024) and an optional `B`; fractions are allowed
/// (`1.5TiB`). A bare number is bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let s = text.trim();
    // A plain byte count is exact (the f64 path below rounds above 2^53).
    if let Ok(bytes) = s.parse::<u64>() {
        return Ok(bytes);
    }
    let s = s.strip_suffix('B').unwrap_or(s);
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("'{text}' is not a size (examples: 4096, 256MiB, 1.5TB)"))?;
    let mult: f64 = match suffix.trim() {
        "" => 1.0,
        "k" | "K" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" | "KiB" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        other => {
            return Err(format!(
                "'{text}' has an unknown size suffix '{other}' (use k, M, G, T, P, E or Ki, Mi, Gi, Ti, Pi, Ei)"
            ))
        }
    };
    let bytes = value * mult;
    if !(0.0..1.8e19).contains(&bytes) {
        return Err(format!("'{text}' is out of range"));
    }
    Ok(bytes as u64)
}

/// Writes a size so that [`parse_size`] reads back the same bytes: with the largest binary
/// suffix that divides it exactly (`4GiB`), else as plain bytes.
pub fn format_size_exact(bytes: u64) -> String {
    const SUFFIXES: [(&str, u32); 6] = [
        ("EiB", 60),
        ("PiB", 50),
        ("TiB", 40),
        ("GiB", 30),
        ("MiB", 20),
        ("KiB", 10),
    ];
    for (suffix, shift) in SUFFIXES {
        let quotient = bytes >> shift;
        // parse_size multiplies in f64: the quotient must be exact there.
        if bytes != 0 && quotient << shift == bytes && quotient < 1 << 53 {
            return format!("{quotient}{suffix}");
        }
    }
    bytes.to_string()
}

/// Parses a duration in seconds: a plain number of seconds, `#.#T` with T one of
/// `s m h d w`, or a combination such as `1w2d3h4m5s`.
pub fn parse_duration_secs(text: &str) -> Result<u64, String> {
    let s = text.trim();
    let bad = || format!("'{text}' is not a duration (examples: 30, 1.5h, 1d12h, 90s)");
    if s.is_empty() {
        return Err(bad());
    }
    if let Ok(n) = s.parse::<f64>() {
        return if n >= 0.0 { Ok(n as u64) } else { Err(bad()) };
    }
    let mut total = 0f64;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let unit = match c {
            's' => 1.0,
            'm' => 60.0,
            'h' => 3600.0,
            'd' => 86400.0,
            'w' => 604800.0,
            _ => return Err(bad()),
        };
        let n: f64 = num.parse().map_err(|_| bad())?;
        total += n * unit;
        num.clear();
    }
    if !num.is_empty() {
        return Err(bad());
    }
    Ok(total as u64)
}

/// Formats bytes for people: `1.5 GiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("1.5TiB"), Ok(3 << 39));
        assert_eq!(parse_size("2G"), Ok(2_000_000_000));
        assert_eq!(parse_size("10kB"), Ok(10_000));
        assert!(parse_size("12X").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_secs("30"), Ok(30));
        assert_eq!(parse_duration_secs("1.5h"), Ok(5400));
        assert_eq!(
            parse_duration_secs("1w2d3h4m5s"),
            Ok(604800 + 172800 + 10800 + 240 + 5)
        );
        assert!(parse_duration_secs("5x").is_err());
        assert!(parse_duration_secs("h").is_err());
    }

    #[test]
    fn human() {
        assert_eq!(human_bytes(100), "100 B");
        assert_eq!(human_bytes(3 << 29), "1.5 GiB");
    }

    proptest::proptest! {
        #[test]
        fn size_parser_never_panics(s in ".{0,24}") {
            let _ = parse_size(&s);
            let _ = parse_duration_secs(&s);
        }
    }
}
