//! Checks for the host paths callers hand us. The node plugin runs as root
//! with the host's filesystem mounted: a sloppy path is a hole.

use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};

// ANCHOR: validate-host-path
/// A staging or target path must be absolute, must not be `/`, and must not
/// contain `.` or `..` components or NUL bytes.
pub fn host_path(what: &str, value: &str) -> Result<PathBuf> {
    let invalid =
        |reason: &str| Err::<PathBuf, _>(Error::InvalidArgument(format!("{what} {value:?} {reason}")));
    // TODO(lab03): Reject empty, relative and root paths, NUL bytes, and any
    // `.` or `..` component (`Path::components`).
    // ANCHOR: solution
    if value.is_empty() {
        return Err(Error::InvalidArgument(format!("{what} is required")));
    }
    if value.contains('\0') {
        return invalid("contains a NUL byte");
    }
    let path = Path::new(value);
    if !path.is_absolute() {
        return invalid("must be an absolute path");
    }
    if value.split('/').any(|part| part == "." || part == "..") {
        return invalid("must not contain '.' or '..'");
    }
    if path.components().all(|c| c == Component::RootDir) {
        return invalid("must not be the root directory");
    }
    // ANCHOR_END: solution
    let _ = invalid;
    Ok(PathBuf::from(value))
}
// ANCHOR_END: validate-host-path

/// A path the caller asks about (NodeGetVolumeStats, NodeExpandVolume): it is
/// only compared with the paths on record, never touched, so anything but
/// an empty value is a fair question, and a path we do not know is NOT_FOUND
/// (as the spec's tables, and csi-sanity, expect), not INVALID_ARGUMENT.
pub fn lookup_path(what: &str, value: &str) -> Result<PathBuf> {
    if value.is_empty() {
        return Err(Error::InvalidArgument(format!("{what} is required")));
    }
    Ok(PathBuf::from(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dangerous_paths_are_rejected() {
        for bad in ["", "relative/dir", "/", "//", "/a/../etc", "/a/./b", "/a\0b"] {
            assert!(host_path("target_path", bad).is_err(), "{bad:?} should be rejected");
        }
        assert_eq!(
            host_path("target_path", "/var/lib/kubelet/x").unwrap(),
            PathBuf::from("/var/lib/kubelet/x")
        );
    }

    #[test]
    fn a_path_that_is_only_looked_up_needs_only_to_be_given() {
        assert!(lookup_path("volume_path", "").is_err());
        assert_eq!(lookup_path("volume_path", "some/path").unwrap(), PathBuf::from("some/path"));
    }
}
