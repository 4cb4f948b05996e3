//! Parsing command-line values (sizes, `key=value` pairs, access modes) and
//! building the CSI messages they describe.

use std::collections::HashMap;

use lab01_identity::csi::volume_capability::access_mode::Mode;
use lab01_identity::csi::volume_capability::{AccessMode, AccessType, BlockVolume, MountVolume};
use lab01_identity::csi::{Topology, VolumeCapability};

pub use lab01_identity::args::parse_size;

/// Parses `key=value`. The value may itself contain `=`; the key may not be empty.
pub fn parse_kv(input: &str) -> Result<(String, String), String> {
    match input.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => Ok((key.trim().to_string(), value.to_string())),
        Some(_) => Err(format!("invalid pair {input:?}: the key is empty")),
        None => Err(format!("invalid pair {input:?}: expected key=value")),
    }
}

/// Collects parsed pairs into a map; a repeated key keeps its last value.
pub fn to_map(pairs: &[(String, String)]) -> HashMap<String, String> {
    pairs.iter().cloned().collect()
}

/// Pairs as a topology segment map, or `None` when there are none.
pub fn to_topology(pairs: &[(String, String)]) -> Option<Topology> {
    (!pairs.is_empty()).then(|| Topology { segments: to_map(pairs) })
}

/// Access modes by their spec name, in kebab case (`single-node-writer`).
/// The spec's own spelling (`SINGLE_NODE_WRITER`) is accepted too.
pub fn parse_access_mode(input: &str) -> Result<Mode, String> {
    let normalized = input.trim().to_ascii_uppercase().replace('-', "_");
    match Mode::from_str_name(&normalized) {
        Some(Mode::Unknown) | None => {
            Err(format!("unknown access mode {input:?}; use one of: {}", ACCESS_MODES.join(", ")))
        }
        Some(mode) => Ok(mode),
    }
}

/// The accepted access-mode spellings, for help and error messages.
pub const ACCESS_MODES: [&str; 7] = [
    "single-node-writer",
    "single-node-reader-only",
    "multi-node-reader-only",
    "multi-node-single-writer",
    "multi-node-multi-writer",
    "single-node-single-writer",
    "single-node-multi-writer",
];

/// How the workload will use a volume, as flags describe it.
#[derive(Debug, Clone)]
pub struct CapabilitySpec {
    pub mode: Mode,
    pub block: bool,
    pub fs_type: String,
    pub mount_flags: Vec<String>,
}

impl CapabilitySpec {
    pub fn to_message(&self) -> VolumeCapability {
        let access_type = if self.block {
            AccessType::Block(BlockVolume {})
        } else {
            AccessType::Mount(MountVolume {
                fs_type: self.fs_type.clone(),
                mount_flags: self.mount_flags.clone(),
                volume_mount_group: String::new(),
            })
        };
        VolumeCapability {
            access_type: Some(access_type),
            access_mode: Some(AccessMode { mode: self.mode as i32 }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_with_binary_units() {
        assert_eq!(parse_size("1Gi"), Ok(1 << 30));
        assert_eq!(parse_size("512Mi"), Ok(512 << 20));
        assert_eq!(parse_size("64Ki"), Ok(64 << 10));
        assert_eq!(parse_size("2Ti"), Ok(2 << 40));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
    }

    #[test]
    fn sizes_with_decimal_units() {
        assert_eq!(parse_size("10M"), Ok(10_000_000));
        assert_eq!(parse_size("1G"), Ok(1_000_000_000));
        assert_eq!(parse_size("3k"), Ok(3_000));
        assert_eq!(parse_size("3K"), Ok(3_000));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
    }

    #[test]
    fn plain_bytes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size(" 7 "), Ok(7));
        assert_eq!(parse_size("7B"), Ok(7));
    }

    #[test]
    fn bad_sizes() {
        for bad in ["", "Gi", "1.5Gi", "-1", "1Xi", "1gi", "1 G i", "99999999999Pi"] {
            assert!(parse_size(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn key_value_pairs() {
        assert_eq!(parse_kv("type=block"), Ok(("type".into(), "block".into())));
        assert_eq!(parse_kv("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert_eq!(parse_kv("empty="), Ok(("empty".into(), String::new())));
        assert!(parse_kv("novalue").is_err());
        assert!(parse_kv("=x").is_err());
    }

    #[test]
    fn pairs_to_map_and_topology() {
        let pairs = vec![("a".to_string(), "1".to_string()), ("a".to_string(), "2".to_string())];
        assert_eq!(to_map(&pairs).get("a").map(String::as_str), Some("2"));
        assert!(to_topology(&[]).is_none());
        assert_eq!(to_topology(&pairs).unwrap().segments.len(), 1);
    }

    #[test]
    fn every_listed_access_mode_parses() {
        let expected = [
            Mode::SingleNodeWriter,
            Mode::SingleNodeReaderOnly,
            Mode::MultiNodeReaderOnly,
            Mode::MultiNodeSingleWriter,
            Mode::MultiNodeMultiWriter,
            Mode::SingleNodeSingleWriter,
            Mode::SingleNodeMultiWriter,
        ];
        for (name, mode) in ACCESS_MODES.iter().zip(expected) {
            assert_eq!(parse_access_mode(name), Ok(mode), "{name}");
        }
    }

    #[test]
    fn access_mode_spellings() {
        assert_eq!(parse_access_mode("SINGLE_NODE_WRITER"), Ok(Mode::SingleNodeWriter));
        assert_eq!(parse_access_mode("Multi-Node-Reader-Only"), Ok(Mode::MultiNodeReaderOnly));
        let err = parse_access_mode("unknown").unwrap_err();
        assert!(err.contains("single-node-writer"), "{err}");
        assert!(parse_access_mode("rwx").is_err());
    }

    #[test]
    fn capability_messages() {
        let spec = CapabilitySpec {
            mode: Mode::SingleNodeWriter,
            block: false,
            fs_type: "ext4".into(),
            mount_flags: vec!["noatime".into()],
        };
        let cap = spec.to_message();
        assert_eq!(cap.access_mode.unwrap().mode, Mode::SingleNodeWriter as i32);
        match cap.access_type {
            Some(AccessType::Mount(m)) => {
                assert_eq!(m.fs_type, "ext4");
                assert_eq!(m.mount_flags, vec!["noatime".to_string()]);
            }
            other => panic!("expected mount, got {other:?}"),
        }
        let block = CapabilitySpec { block: true, ..spec }.to_message();
        assert!(matches!(block.access_type, Some(AccessType::Block(_))));
    }
}
