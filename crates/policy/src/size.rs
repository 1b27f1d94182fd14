//! Sizes written by people: `4096`, `64M`, `64MiB`, `2G`, `1.5GiB`.
//! K/M/G/T are binary multiples (as `ulimit`, cgroups and tmpfs use them).

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("empty size")]
    Empty,
    #[error("{0:?} is not a size (e.g. 4096, 512M, 4GiB)")]
    Invalid(String),
    #[error("{0:?} is too large")]
    Overflow(String),
}

/// Parses a size in bytes.
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let t = text.trim();
    if t.is_empty() {
        return Err(SizeError::Empty);
    }
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(SizeError::Invalid(text.to_string())),
    };
    if num.is_empty() || num.matches('.').count() > 1 {
        return Err(SizeError::Invalid(text.to_string()));
    }
    if let Ok(n) = num.parse::<u64>() {
        return n.checked_mul(mult).ok_or_else(|| SizeError::Overflow(text.to_string()));
    }
    let f: f64 = num.parse().map_err(|_| SizeError::Invalid(text.to_string()))?;
    let bytes = f * mult as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(SizeError::Overflow(text.to_string()));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("4GiB"), Ok(4 << 30));
        assert_eq!(parse_size("1.5G"), Ok(3 << 29));
        assert_eq!(parse_size(" 2 k "), Ok(2048));
        assert!(parse_size("").is_err());
        assert!(parse_size("abc").is_err());
        assert!(parse_size("12X").is_err());
        assert!(parse_size("1.2.3M").is_err());
        assert!(parse_size("-5").is_err());
        assert!(matches!(parse_size("99999999999T"), Err(SizeError::Overflow(_))));
    }
}
