//! Turning a CSI `CapacityRange` into a concrete volume size.

use lab01_identity::csi::CapacityRange;

use crate::error::{Error, Result};

pub const MIB: i64 = 1 << 20;
pub const GIB: i64 = 1 << 30;
/// Smallest volume we create: enough for an ext4 filesystem with a journal.
pub const MIN_VOLUME_BYTES: i64 = 16 * MIB;
/// Size when the caller does not say.
pub const DEFAULT_VOLUME_BYTES: i64 = GIB;
/// Loop devices and filesystems work in sectors and blocks; we round to 4 KiB.
const ALIGN: i64 = 4096;

/// The checks the spec puts on any `CapacityRange`: neither bound negative,
/// at least one set, and `required_bytes` not above `limit_bytes`.
pub fn check_range(range: &CapacityRange) -> Result<()> {
    let (required, limit) = (range.required_bytes, range.limit_bytes);
    if required < 0 || limit < 0 {
        return Err(Error::InvalidArgument(format!(
            "capacity_range must not be negative (required_bytes={required}, limit_bytes={limit})"
        )));
    }
    if required == 0 && limit == 0 {
        return Err(Error::InvalidArgument("capacity_range needs required_bytes or limit_bytes".into()));
    }
    if limit > 0 && required > limit {
        return Err(Error::InvalidArgument(format!(
            "required_bytes {required} is larger than limit_bytes {limit}"
        )));
    }
    Ok(())
}

// ANCHOR: capacity-from-range
/// Picks a size within `range`: at least `required_bytes`, at most
/// `limit_bytes` (0 means "not set" for both), between our minimum and
/// `max_bytes`. A range we cannot satisfy is OUT_OF_RANGE; a range that makes
/// no sense (negative, required > limit) is INVALID_ARGUMENT.
pub fn from_range(range: Option<&CapacityRange>, max_bytes: i64) -> Result<i64> {
    let (required, limit) = range.map(|r| (r.required_bytes, r.limit_bytes)).unwrap_or((0, 0));
    // TODO(lab02): Validate the range and choose the size as described above.
    // Round up to ALIGN, but never past the limit.
    // ANCHOR: solution
    if required < 0 || limit < 0 {
        return Err(Error::InvalidArgument(format!(
            "capacity_range must not be negative (required_bytes={required}, limit_bytes={limit})"
        )));
    }
    if limit > 0 && required > limit {
        return Err(Error::InvalidArgument(format!(
            "required_bytes {required} is larger than limit_bytes {limit}"
        )));
    }
    if limit > 0 && limit < MIN_VOLUME_BYTES {
        return Err(Error::CapacityOutOfRange(format!(
            "limit_bytes {limit} is below the minimum volume size {MIN_VOLUME_BYTES}"
        )));
    }
    if required > max_bytes {
        return Err(Error::CapacityOutOfRange(format!(
            "required_bytes {required} is above the maximum volume size {max_bytes}"
        )));
    }
    let wanted = match (required, limit) {
        (0, 0) => DEFAULT_VOLUME_BYTES,
        (0, limit) => DEFAULT_VOLUME_BYTES.min(limit),
        (required, _) => required,
    };
    let mut size = wanted.max(MIN_VOLUME_BYTES);
    size = (size + ALIGN - 1) / ALIGN * ALIGN;
    if limit > 0 && size > limit {
        size = limit; // the limit wins over alignment
    }
    Ok(size.min(max_bytes))
    // ANCHOR_END: solution => Err(Error::NotWritten("lab02: capacity::from_range is not written yet (chapter 2, step 4)".into()))
}
// ANCHOR_END: capacity-from-range

/// Whether an existing volume's size satisfies `range` (for idempotent creates).
pub fn fits(capacity: i64, range: Option<&CapacityRange>) -> bool {
    let (required, limit) = range.map(|r| (r.required_bytes, r.limit_bytes)).unwrap_or((0, 0));
    capacity >= required && (limit == 0 || capacity <= limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(required: i64, limit: i64) -> Option<CapacityRange> {
        Some(CapacityRange { required_bytes: required, limit_bytes: limit })
    }

    #[test]
    fn sizes_are_chosen_within_the_range() {
        let max = 1 << 40;
        assert_eq!(from_range(None, max).unwrap(), DEFAULT_VOLUME_BYTES);
        assert_eq!(from_range(range(100 * MIB, 0).as_ref(), max).unwrap(), 100 * MIB);
        assert_eq!(from_range(range(1, 0).as_ref(), max).unwrap(), MIN_VOLUME_BYTES);
        assert_eq!(from_range(range(0, 32 * MIB).as_ref(), max).unwrap(), 32 * MIB);
        assert_eq!(from_range(range(20 * MIB + 1, 0).as_ref(), max).unwrap(), 20 * MIB + 4096);
        assert_eq!(from_range(range(20 * MIB + 1, 20 * MIB + 2).as_ref(), max).unwrap(), 20 * MIB + 2);
    }

    #[test]
    fn impossible_or_nonsensical_ranges_are_errors() {
        let max = GIB;
        assert!(matches!(from_range(range(-1, 0).as_ref(), max), Err(Error::InvalidArgument(_))));
        assert!(matches!(from_range(range(0, -5).as_ref(), max), Err(Error::InvalidArgument(_))));
        assert!(matches!(from_range(range(2 * GIB, GIB).as_ref(), max), Err(Error::InvalidArgument(_))));
        assert!(matches!(from_range(range(2 * GIB, 0).as_ref(), max), Err(Error::CapacityOutOfRange(_))));
        assert!(matches!(from_range(range(i64::MAX, 0).as_ref(), max), Err(Error::CapacityOutOfRange(_))));
        assert!(matches!(from_range(range(0, MIB).as_ref(), max), Err(Error::CapacityOutOfRange(_))));
    }

    #[test]
    fn an_existing_size_fits_when_it_is_inside_the_range() {
        assert!(fits(GIB, range(GIB, 0).as_ref()));
        assert!(!fits(GIB, range(2 * GIB, 0).as_ref()));
        assert!(!fits(GIB, range(0, MIB).as_ref()));
    }
}
