//! Kubernetes quantities (`1Gi`, `500M`, `1073741824`) as bytes.
//!
//! A claim's `spec.resources.requests.storage` is a
//! [`Quantity`](k8s_openapi::apimachinery::pkg::api::resource::Quantity),
//! which k8s-openapi keeps as the string the user wrote. Storage sizes use
//! the binary suffixes (Ki, Mi, Gi, Ti, Pi, Ei), the decimal ones (k, M, G,
//! T, P, E) or none; fractions (`1.5Gi`) and exponents (`1e9`) are allowed.

/// Bytes for `quantity`, rounded up to a whole byte (a volume is never
/// smaller than asked).
pub fn parse_bytes(quantity: &str) -> Result<i64, String> {
    let q = quantity.trim();
    let split = q.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    if number.is_empty() || number.matches('.').count() > 1 || number == "." {
        return Err(format!(
            "{quantity:?} is not a quantity (expected a number like 1Gi, 500Mi or 1073741824)"
        ));
    }
    let multiplier: f64 = match suffix {
        "" => 1.0,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        s if s.starts_with(['e', 'E']) => {
            let exp: i32 = s[1..].parse().map_err(|_| format!("{quantity:?}: bad exponent {s:?}"))?;
            10f64.powi(exp)
        }
        "m" => return Err(format!("{quantity:?}: milli-bytes make no sense for storage")),
        other => {
            return Err(format!(
                "{quantity:?}: unknown suffix {other:?} (use Ki, Mi, Gi, Ti, k, M, G, T or none)"
            ));
        }
    };
    // Whole numbers exactly (f64 loses precision above 2^53), fractions via f64.
    let bytes = match (number.parse::<i64>(), multiplier.fract() == 0.0 && multiplier <= i64::MAX as f64) {
        (Ok(n), true) => n.checked_mul(multiplier as i64),
        _ => {
            let value = number.parse::<f64>().map_err(|e| format!("{quantity:?}: {e}"))? * multiplier;
            (value.is_finite() && value < i64::MAX as f64).then(|| value.ceil() as i64)
        }
    };
    bytes.ok_or_else(|| format!("{quantity:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn binary_decimal_and_plain_quantities_are_bytes() {
        for (q, bytes) in [
            ("1Gi", 1 << 30),
            ("64Mi", 64 << 20),
            ("2Ki", 2048),
            ("1Ti", 1 << 40),
            ("1k", 1000),
            ("5M", 5_000_000),
            ("1G", 1_000_000_000),
            ("2T", 2_000_000_000_000),
            ("1073741824", 1 << 30),
            ("1.5Gi", 3 << 29),
            ("0.5Ki", 512),
            ("1e3", 1000),
            (" 10Mi ", 10 << 20),
        ] {
            assert_eq!(parse_bytes(q), Ok(bytes), "{q}");
        }
    }

    #[test]
    fn garbage_and_odd_suffixes_are_refused_with_the_reason() {
        for q in ["", "Gi", "1GB", "1.2.3Gi", "100m", "-1Gi", "abc", "99999999999Ei"] {
            let err = parse_bytes(q).unwrap_err();
            assert!(err.contains(&format!("{:?}", q)) || err.contains("quantity"), "{q}: {err}");
        }
    }
}
