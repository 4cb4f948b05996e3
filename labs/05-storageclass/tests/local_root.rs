//! Root: a real ext4 filesystem on a loop device, mounted under a temporary
//! discovery directory next to a plain directory. The scan must publish the
//! mount point with the filesystem's size and refuse the plain directory.
//! Skips (saying so) when not root.

use std::path::{Path, PathBuf};

use lab03_node::{fs as nodefs, loopdev, mount};
use lab05_storageclass::local::{Refusal, scan_host};

const IMAGE_BYTES: u64 = 64 << 20;

/// Unmounts and detaches what the test made, also when it panics.
struct Cleanup {
    mounts: Vec<PathBuf>,
    loops: Vec<PathBuf>,
    _dir: tempfile::TempDir,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for point in self.mounts.iter().rev() {
            if let Err(e) = mount::unmount(point) {
                eprintln!("cleanup: unmount {}: {e}", point.display());
            }
        }
        for dev in &self.loops {
            if let Err(e) = loopdev::detach(dev) {
                eprintln!("cleanup: detach {}: {e}", dev.display());
            }
        }
    }
}

fn can_run() -> bool {
    if !nix::unistd::Uid::effective().is_root() || !Path::new("/dev/loop-control").exists() {
        eprintln!("SKIP local_root: needs root and /dev/loop-control (loop devices, mkfs and mounts)");
        return false;
    }
    true
}

#[test]
fn a_mounted_disk_becomes_a_pv_with_its_size_and_a_plain_directory_is_refused() {
    if !can_run() {
        return;
    }
    let dir = tempfile::Builder::new().prefix("csi-lab05-").tempdir_in("/tmp").unwrap();
    let root = dir.path().to_path_buf();
    let mut guard = Cleanup { mounts: vec![], loops: vec![], _dir: dir };

    let discovery = root.join("disks");
    std::fs::create_dir_all(discovery.join("disk1")).unwrap();
    std::fs::create_dir_all(discovery.join("plain")).unwrap();
    let image = root.join("disk1.img");
    std::fs::File::create(&image).unwrap().set_len(IMAGE_BYTES).unwrap();

    let device = loopdev::attach(&image, false).expect("attach a loop device");
    guard.loops.push(device.clone());
    nodefs::ensure_formatted(&device, "ext4").expect("mkfs.ext4");
    mount::mount_device(&device, &discovery.join("disk1"), "ext4", &Default::default()).expect("mount");
    guard.mounts.push(discovery.join("disk1"));

    let found = scan_host(&discovery).expect("scan");
    assert_eq!(found.disks.len(), 1, "{found:#?}");
    let disk = &found.disks[0];
    assert_eq!(disk.name, "disk1");
    assert_eq!(disk.path, discovery.canonicalize().unwrap().join("disk1"));
    // ext4 keeps some for itself (journal, inode tables): 70 % to 100 % of the image.
    assert!(
        disk.capacity_bytes > IMAGE_BYTES * 7 / 10 && disk.capacity_bytes <= IMAGE_BYTES,
        "capacity {} for a {IMAGE_BYTES}-byte image",
        disk.capacity_bytes
    );
    assert_eq!(found.refused.len(), 1, "{found:#?}");
    assert_eq!((found.refused[0].name.as_str(), found.refused[0].reason), ("plain", Refusal::NotAMountPoint));

    // Cleaning a released disk empties the filesystem but keeps it mounted.
    std::fs::write(discovery.join("disk1/data"), b"old tenant").unwrap();
    lab05_storageclass::local::clean_disk(&discovery.join("disk1")).unwrap();
    assert!(mount::is_mount_point(&discovery.join("disk1")).unwrap());
    assert_eq!(std::fs::read_dir(discovery.join("disk1")).unwrap().count(), 0);
}
