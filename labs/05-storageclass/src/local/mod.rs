//! The static local provisioner (C25-C27): a DaemonSet pod per node scans a
//! discovery directory (`/mnt/disks`) and publishes each *mount point* in it
//! as a node-pinned local PersistentVolume; it cleans and recreates the PVs
//! that their claims released.
//!
//! - [`decide`]: the decisions as plain functions (`classify`, `desired_pv`, `plan`);
//! - [`scan`]: the host side (directory listing, mount table, statvfs, cleaning);
//! - [`agent`]: the API side (list, create, delete PVs; Events on the Node).

pub mod agent;
pub mod decide;
pub mod scan;

use std::path::PathBuf;
use std::time::Duration;

pub use agent::{Agent, SyncReport};
pub use decide::{Action, Discovered, Disk, Entry, PvConfig, Refusal, classify, desired_pv, plan, pv_name};
pub use scan::{Scan, clean_disk, scan, scan_host};

/// Errors of the local provisioner.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("statvfs {}: {message}", path.display())]
    Usage { path: PathBuf, message: String },
    #[error("reading the mount table: {0}")]
    Mounts(String),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Parses a Go-style duration of one unit: `500ms`, `10s`, `5m`, `1h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| format!("'{text}': expected a number and a unit, e.g. 10s"))?;
    let duration = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return Err(format!("'{text}': the unit must be ms, s, m or h")),
    };
    if duration.is_zero() {
        return Err(format!("'{text}': must be more than zero"));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_go_flags() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        for bad in ["", "10", "s", "0s", "1.5s", "10x"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
