//! Helpers for tests that touch the host (this lab's and later labs'): why a
//! root-only test cannot run here, and undoing every mount and loop device
//! under a temporary directory, also after a test panicked.

use std::path::{Path, PathBuf};

/// Why loop devices, mkfs and mounts are unavailable here; `None` if they work.
pub fn root_skip_reason() -> Option<&'static str> {
    if !nix::unistd::geteuid().is_root() {
        Some("needs root (loop devices, mkfs and mounts)")
    } else if !Path::new("/dev/loop-control").exists() {
        Some("needs /dev/loop-control (no loop device support; try modprobe loop)")
    } else {
        None
    }
}

/// Mount points at or below `root`, deepest first (the order to unmount them).
pub fn mounts_under(root: &Path) -> Vec<PathBuf> {
    let mut points: Vec<PathBuf> = crate::mount::read_mountinfo()
        .unwrap_or_default()
        .into_iter()
        .map(|m| m.mount_point)
        .filter(|p| p.starts_with(root))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points
}

/// Loop devices whose backing file lives under `root`.
pub fn loop_devices_under(root: &Path) -> Vec<PathBuf> {
    let mut found = vec![];
    for entry in std::fs::read_dir("/sys/block").into_iter().flatten().flatten() {
        let Ok(backing) = std::fs::read_to_string(entry.path().join("loop/backing_file")) else { continue };
        if Path::new(backing.trim().trim_end_matches(" (deleted)")).starts_with(root) {
            found.push(Path::new("/dev").join(entry.file_name()));
        }
    }
    found
}

/// Lazily unmounts everything under `root`, then detaches the loop devices
/// backed by files under it. Errors are ignored: this is the last resort.
pub fn cleanup_under(root: &Path) {
    for point in mounts_under(root) {
        let _ = nix::mount::umount2(&point, nix::mount::MntFlags::MNT_DETACH);
    }
    for device in loop_devices_under(root) {
        let _ = crate::loopdev::detach(&device);
    }
}
