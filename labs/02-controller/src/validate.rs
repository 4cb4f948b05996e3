//! Input checks shared by every RPC. Anything a caller sends that ends up in a
//! file name is checked here, so no name or id can reach outside the backend.

use crate::error::{Error, Result};

pub const MAX_ID_LEN: usize = 128;

// ANCHOR: validate-id
/// Checks a volume name, volume id or node id. Ids become file names in the
/// backend, so only a safe alphabet is allowed: letters, digits, `.`, `_` and
/// `-`, not starting with `.`. That rules out `/`, `..` and NUL bytes.
pub fn id<'a>(what: &str, value: &'a str) -> Result<&'a str> {
    let invalid = |reason: &str| Err::<&str, _>(Error::InvalidArgument(format!("{what} {value:?} {reason}")));
    // TODO(lab02): Reject empty and over-long ids, and any character outside
    // `[A-Za-z0-9._-]`; also reject a leading `.` (hidden files, `..`).
    // ANCHOR: solution
    if value.is_empty() {
        return Err(Error::InvalidArgument(format!("{what} is required")));
    }
    if value.len() > MAX_ID_LEN {
        return invalid(&format!("is longer than {MAX_ID_LEN} bytes"));
    }
    if value.contains('\0') {
        return invalid("contains a NUL byte");
    }
    if value.contains('/') || value.contains("..") || value.starts_with('.') {
        return invalid("would escape the backend directory");
    }
    if !value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
        return invalid("may contain only letters, digits, '.', '_' and '-'");
    }
    // ANCHOR_END: solution
    let _ = invalid;
    Ok(value)
}
// ANCHOR_END: validate-id

pub fn volume_id(value: &str) -> Result<&str> {
    id("volume_id", value)
}

pub fn node_id(value: &str) -> Result<&str> {
    id("node_id", value)
}

/// A required field that prost turns into an `Option`.
pub fn required<'a, T>(what: &str, value: Option<&'a T>) -> Result<&'a T> {
    value.ok_or_else(|| Error::InvalidArgument(format!("{what} is required")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_could_escape_the_backend_are_rejected() {
        for bad in ["", "..", "../etc", "a/b", "/abs", ".hidden", "a\0b", "a b", "ü", &"x".repeat(129)] {
            assert!(id("volume_id", bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn ordinary_ids_are_accepted() {
        for good in ["pvc-1234", "vol_1.img", "A-b_c.9", &"x".repeat(128)] {
            assert_eq!(id("volume_id", good).unwrap(), good);
        }
    }
}
