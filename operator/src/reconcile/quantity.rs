//! A parser for Kubernetes quantities (`resource.Quantity`), enough to check the format and to
//! compare a request with its limit.

/// Parses a quantity (`<sign><number><suffix>`, suffix one of `Ki Mi Gi Ti Pi Ei`,
/// `n u m k M G T P E`, or an exponent `e<n>`/`E<n>`) into an approximate value in base units.
/// Returns `None` when the text is not a quantity.
pub fn parse(text: &str) -> Option<f64> {
    let (sign, rest) = match text.as_bytes().first()? {
        b'+' => (1.0, &text[1..]),
        b'-' => (-1.0, &text[1..]),
        _ => (1.0, text),
    };
    let number_len = rest
        .bytes()
        .take_while(|b| b.is_ascii_digit() || *b == b'.')
        .count();
    let (number, suffix) = rest.split_at(number_len);
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return None;
    }
    let value: f64 = number.parse().ok()?;
    let multiplier = match suffix {
        "" => 1.0,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        exponent => {
            let digits = exponent.strip_prefix(['e', 'E'])?;
            let digits = digits.strip_prefix('+').unwrap_or(digits);
            let unsigned = digits.strip_prefix('-').unwrap_or(digits);
            if unsigned.is_empty() || !unsigned.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            10f64.powi(digits.parse().ok()?)
        }
    };
    Some(sign * value * multiplier)
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn accepts_kubernetes_quantities() {
        for (text, value) in [
            ("1Gi", 1024.0 * 1024.0 * 1024.0),
            ("500m", 0.5),
            ("128Mi", 128.0 * 1024.0 * 1024.0),
            ("2", 2.0),
            ("1.5", 1.5),
            (".5", 0.5),
            ("1e3", 1000.0),
            ("1E-3", 0.001),
            ("+1k", 1000.0),
        ] {
            let parsed = parse(text).unwrap_or_else(|| panic!("{text} must parse"));
            assert!(
                (parsed - value).abs() < 1e-9 * value.abs().max(1.0),
                "{text}"
            );
        }
    }

    #[test]
    fn rejects_malformed_quantities() {
        for text in [
            "", "lots", "1Gb", "1.2.3", "Gi", "1 Gi", "e3", "1e", "1ki", ".",
        ] {
            assert_eq!(parse(text), None, "{text:?} must not parse");
        }
    }
}
