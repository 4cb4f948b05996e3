//! Volume capabilities: how a workload wants to use a volume (a filesystem or
//! a raw block device) and from how many nodes (the access mode).

use lab01_identity::csi::volume_capability::access_mode::Mode;
use lab01_identity::csi::volume_capability::{AccessType, BlockVolume, MountVolume};
use lab01_identity::csi::{VolumeCapability, volume_capability};

use crate::backend::VolumeKind;
use crate::error::{Error, Result};

/// Filesystems the node plugin can create. xfs needs `mkfs.xfs` on the node.
pub const SUPPORTED_FS_TYPES: &[&str] = &["ext4", "ext3", "xfs"];
pub const DEFAULT_FS_TYPE: &str = "ext4";

/// A checked `VolumeCapability`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capability {
    pub mode: Mode,
    /// Raw block access instead of a filesystem.
    pub block: bool,
    /// The filesystem to create; empty for raw block access.
    pub fs_type: String,
    pub mount_flags: Vec<String>,
}

/// Whether an access mode lets more than one node use the volume.
pub fn is_multi_node(mode: Mode) -> bool {
    matches!(mode, Mode::MultiNodeReaderOnly | Mode::MultiNodeSingleWriter | Mode::MultiNodeMultiWriter)
}

/// Whether an access mode lets one node publish the volume at several target
/// paths (for several pods) at once. SINGLE_NODE_WRITER, SINGLE_NODE_READER_ONLY
/// and SINGLE_NODE_SINGLE_WRITER mean "published once".
pub fn allows_several_targets(mode: Mode) -> bool {
    is_multi_node(mode) || mode == Mode::SingleNodeMultiWriter
}

/// Whether an access mode only allows reading.
pub fn is_read_only(mode: Mode) -> bool {
    matches!(mode, Mode::SingleNodeReaderOnly | Mode::MultiNodeReaderOnly)
}

// ANCHOR: parse-capability
/// Checks one capability: an access type and a known access mode are required.
pub fn parse(capability: &VolumeCapability) -> Result<Capability> {
    let invalid = |msg: &str| Error::InvalidArgument(format!("volume_capability: {msg}"));
    let mode = capability.access_mode.as_ref().ok_or_else(|| invalid("access_mode is required"))?.mode;
    let mode = Mode::try_from(mode).map_err(|_| invalid(&format!("unknown access mode {mode}")))?;
    if mode == Mode::Unknown {
        return Err(invalid("access mode UNKNOWN is not a mode"));
    }
    match capability.access_type.as_ref().ok_or_else(|| invalid("access_type is required"))? {
        AccessType::Block(_) => {
            Ok(Capability { mode, block: true, fs_type: String::new(), mount_flags: vec![] })
        }
        AccessType::Mount(mount) => {
            let fs_type = if mount.fs_type.is_empty() { DEFAULT_FS_TYPE } else { &mount.fs_type };
            if !SUPPORTED_FS_TYPES.contains(&fs_type) {
                return Err(invalid(&format!(
                    "fs_type {fs_type:?} is not supported; use one of {SUPPORTED_FS_TYPES:?}"
                )));
            }
            Ok(Capability {
                mode,
                block: false,
                fs_type: fs_type.to_owned(),
                mount_flags: mount.mount_flags.clone(),
            })
        }
    }
}
// ANCHOR_END: parse-capability

/// Checks a list of capabilities, which must not be empty.
pub fn parse_all(capabilities: &[VolumeCapability]) -> Result<Vec<Capability>> {
    if capabilities.is_empty() {
        return Err(Error::InvalidArgument("volume_capabilities are required".into()));
    }
    capabilities.iter().map(parse).collect()
}

// ANCHOR: supported-by-kind
/// Why a volume of `kind` cannot serve `capability`, if it cannot.
pub fn unsupported_reason(kind: VolumeKind, capability: &Capability) -> Option<String> {
    match kind {
        // An image with a local filesystem on it would be corrupted by two
        // nodes mounting it at once: block volumes are single-node only.
        VolumeKind::Block if is_multi_node(capability.mode) => Some(format!(
            "block volumes support single-node access modes only, not {}",
            capability.mode.as_str_name()
        )),
        VolumeKind::File if capability.block => {
            Some("file volumes are directories and cannot be used as raw block devices".into())
        }
        _ => None,
    }
}
// ANCHOR_END: supported-by-kind

/// Builds a capability message, for clients and tests.
pub fn capability(mode: Mode, block: bool, fs_type: &str) -> VolumeCapability {
    VolumeCapability {
        access_mode: Some(volume_capability::AccessMode { mode: mode as i32 }),
        access_type: Some(if block {
            AccessType::Block(BlockVolume {})
        } else {
            AccessType::Mount(MountVolume { fs_type: fs_type.into(), ..Default::default() })
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_capability_without_access_mode_or_type_is_invalid() {
        let mut cap = capability(Mode::SingleNodeWriter, false, "ext4");
        cap.access_mode = None;
        assert!(parse(&cap).is_err());
        let mut cap = capability(Mode::SingleNodeWriter, false, "ext4");
        cap.access_type = None;
        assert!(parse(&cap).is_err());
        assert!(parse(&capability(Mode::Unknown, false, "")).is_err());
    }

    #[test]
    fn an_empty_fs_type_means_ext4_and_an_unknown_one_is_rejected() {
        assert_eq!(parse(&capability(Mode::SingleNodeWriter, false, "")).unwrap().fs_type, "ext4");
        assert!(parse(&capability(Mode::SingleNodeWriter, false, "ntfs")).is_err());
    }

    #[test]
    fn block_volumes_refuse_multi_node_modes_and_file_volumes_refuse_raw_block() {
        let multi = parse(&capability(Mode::MultiNodeMultiWriter, false, "")).unwrap();
        assert!(unsupported_reason(VolumeKind::Block, &multi).is_some());
        assert!(unsupported_reason(VolumeKind::File, &multi).is_none());
        let raw = parse(&capability(Mode::SingleNodeWriter, true, "")).unwrap();
        assert!(unsupported_reason(VolumeKind::File, &raw).is_some());
        assert!(unsupported_reason(VolumeKind::Block, &raw).is_none());
    }
}
