//! Host primitives against the real kernel: loop devices, mkfs, mounts.
//!
//! Every test needs root and skips with a `SKIP` line otherwise. Tests run
//! in parallel; each one owns its images, and [`Cleanup`] undoes all mounts
//! and loop devices even when an assertion fails.

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::root::{Cleanup, exclusive_devices, require_root, shared_devices};
use lab03_node::fs::{self as lfs, FsError};
use lab03_node::loopdev::{self, LoopError};
use lab03_node::mount::{self, MountOptions};

const MIB: u64 = 1024 * 1024;

fn loop_index(device: &Path) -> u32 {
    device
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("loop"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{} is not /dev/loopN", device.display()))
}

fn no_options() -> MountOptions {
    MountOptions::default()
}

/// Attach a blank image, format it and mount it; returns (image, device, mount point).
fn mounted_volume(cleanup: &mut Cleanup, size: u64, fs_type: &str) -> (PathBuf, PathBuf, PathBuf) {
    let image = cleanup.sparse_image(size);
    let device = cleanup.attach(&image, false);
    assert!(lfs::ensure_formatted(&device, fs_type).unwrap());
    let target = cleanup.mount_point();
    mount::mount_device(&device, &target, fs_type, &no_options()).unwrap();
    (image, device, target)
}

#[test]
fn attach_creates_a_device_as_large_as_the_image() {
    if !require_root() {
        return;
    }
    let mut cleanup = Cleanup::new();
    let image = cleanup.sparse_image(64 * MIB);
    let device = cleanup.attach(&image, false);

    let meta = fs::metadata(&device).unwrap();
    assert!(meta.file_type().is_block_device(), "{}", device.display());
    assert_eq!(loopdev::size_bytes(&device).unwrap(), 64 * MIB);
    assert_eq!(loopdev::backing_file(&device).unwrap(), Some(image.canonicalize().unwrap()));
}

#[test]
fn attach_twice_reuses_the_same_device() {
    if !require_root() {
        return;
    }
    let mut cleanup = Cleanup::new();
    let image = cleanup.sparse_image(16 * MIB);
    let first = cleanup.attach(&image, false);
    let second = cleanup.attach(&image, false);
    assert_eq!(first, second);

    // Also through another path to the same file.
    let link = image.with_file_name("link.img");
    std::os::unix::fs::symlink(&image, &link).unwrap();
    assert_eq!(cleanup.attach(&link, false), first);
}

#[test]
fn concurrent_attaches_of_one_image_share_a_device() {
    if !require_root() {
        return;
    }
    let mut cleanup = Cleanup::new();
    let image = cleanup.sparse_image(16 * MIB);
    let _shared = shared_devices();
    let results: Vec<Result<PathBuf, LoopError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4).map(|_| s.spawn(|| loopdev::attach(&image, false))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // Register everything for cleanup before asserting.
    for device in results.iter().flatten() {
        cleanup.register_loop(device, &image);
    }
    let devices: Vec<PathBuf> = results.into_iter().map(Result::unwrap).collect();
    assert!(devices.iter().all(|d| *d == devices[0]), "{devices:?}");
}

#[test]
fn concurrent_attaches_of_different_images_get_different_devices() {
    if !require_root() {
        return;
    }
    let mut cleanup = Cleanup::new();
    let images: Vec<PathBuf> = (0..4).map(|_| cleanup.sparse_image(8 * MIB)).collect();
    let _shared = shared_devices();
    let results: Vec<Result<PathBuf, LoopError>> = std::thread::scope(|s| {
        let handles: Vec<_> =
            images.iter().map(|image| s.spawn(move || loopdev::attach(image, false))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (result, image) in results.iter().zip(&images) {
        if let Ok(device) = result {
            cleanup.register_loop(device, image);
        }
    }
    let mut devices: Vec<PathBuf> = results.into_iter().map(Result::unwrap).collect();
    for (device, image) in devices.iter().zip(&images) {
        assert_eq!(loopdev::backing_file(device).unwrap(), Some(image.canonicalize().unwrap()));
    }
    devices.sort();
    devices.dedup();
    assert_eq!(devices.len(), 4);
}

#[test]
fn find_by_backing_file_sees_only_attached_images() {
    if !require_root() {
        return;
    }
    let mut cleanup = Cleanup::new();
    let image = cleanup.sparse_image(16 * MIB);
    let other = cleanup.sparse_image(16 * MIB);
    assert_eq!(loopdev::find_by_backing_file(&image).unwrap(), None);

    let device = cleanup.attach(&image, false);
    assert_eq!(loopdev::find_by_backing_file(&image).unwrap(), Some(device.clone()));
    assert_eq!(loopdev::find_by_backing_file(&other).unwrap(), None);
    assert_eq!(loopdev::find_by_backing_file(&image.with_file_name("missing.img")).unwrap(), None);

    // Detaching is path-based from here on, so no exclusive lock is needed.
    loopdev::detach(&device).unwrap();
    assert_eq!(loopdev::find_by_backing_file(&image).unwrap(), None);
}

#[test]
fn detach_twice_is_ok() {
    if !require_root() {
        return;
    }
    let mut cleanup = Cleanup::new();
    let image = cleanup.sparse_image(16 * MIB);
    let device = cleanup.attach(&image, false);

    // The second detach acts on the device path: keep other tests from
    // being handed this device in between.
    let _exclusive = exclusive_devices();
    loopdev::detach(&device).unwrap();
    assert_eq!(loopdev::backing_file(&device).unwrap(), None);
    loopdev::detach(&device).unwrap();
    // A node that does not exist at all is fine too.
    loopdev::detach(&image.with_file_name("loop999999")).unwrap();
}

#[test]
fn detach_of_a_mounted_device_is_refused() {
    if !require_root() {
        return;
    }
    let mut cleanup = Cleanup::new();
    let (image, device, target) = mounted_volume(&mut cleanup, 32 * MIB, "ext4");

    match loopdev::detach(&device) {
        Err(LoopError::Busy { device: d, .. }) => assert_eq!(d, device),
        other => panic!("expected Busy, got {other:?}"),
    }
    assert_eq!(loopdev::find_by_backing_file(&image).unwrap(), Some(device.clone()));

    assert!(mount::unmount(&target).unwrap());
    loopdev::detach(&device).unwrap();
    assert_eq!(loopdev::find_by_backing_file(&image).unwrap(), None);
}

#[test]
fn detach_of_an_open_device_is_refused_and_it_stays_attached() {
    if !require_root() {
        return;
    }
    let mut cleanup = Cleanup::new();
    let image = cleanup.sparse_image(16 * MIB);
    let device = cleanup.attach(&image, false);

    // Like a pod holding a raw block volume open.
    let holder = File::open(&device).unwrap();
    assert!(matches!(loopdev::detach(&device), Err(LoopError::Busy { .. })));
    drop(holder);
    // The kernel must not have detached it on our last close either.
    assert_eq!(loopdev::find_by_backing_file(&image).unwrap(), Some(device.clone()));

    loopdev::detach(&device).unwrap();
    assert_eq!(loopdev::find_by_backing_file(&image).unwrap(), None);
}

#[test]
fn detach_waits_out_an_opener_that_lets_go_quickly() {
    if !require_root() {
        return;
    }
    let mut cleanup = Cleanup::new();
    let image = cleanup.sparse_image(16 * MIB);
    let device = cleanup.attach(&image, false);

    // Like blkid, or another process's attach that lost the race for this
    // device: it has the device open for a moment only.
    let holder = File::open(&device).unwrap();
    let passer = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(40));
        drop(holder);
    });
    loopdev::detach(&device).unwrap();
    passer.join().unwrap();
    assert_eq!(loopdev::find_by_backing_file(&image).unwrap(), None);
}

#[test]
fn read_only_attach_gives_a_read_only_device() {
    if !require_root() {
        return;
    }
    let mut cleanup = Cleanup::new();
    let image = cleanup.sparse_image(16 * MIB);
    let device = cleanup.attach(&image, true);

    let index = loop_index(&device);
    let ro = fs::read_to_string(format!("/sys/block/loop{index}/ro")).unwrap();
    assert_eq!(ro.trim(), "1");
    // The kernel lets a read-only block device be opened for writing and
    // fails the write itself, with EPERM.
    let writer = OpenOptions::new().write(true).open(&device).unwrap();
    let err = writer.write_all_at(&[1; 512], 0).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");

    assert_eq!(cleanup.attach(&image, true), device);
    match loopdev::attach(&image, false) {
        Err(LoopError::ReadOnlyMismatch { attached_read_only: true, requested_read_only: false, .. }) => {}
        other => panic!("expected ReadOnlyMismatch, got {other:?}"),
    }
}

#[test]
fn ensure_device_node_creates_a_missing_node() {
    if !require_root() {
        return;
    }
    let mut cleanup = Cleanup::new();
    let image = cleanup.sparse_image(16 * MIB);
    let device = cleanup.attach(&image, false);
    let index = loop_index(&device);

    // A directory without the node, like /dev in a kind node container.
    let dev_dir = cleanup.temp_dir();
    let node = loopdev::ensure_device_node(&dev_dir, index).unwrap();
    assert_eq!(node, dev_dir.join(format!("loop{index}")));
    let meta = fs::metadata(&node).unwrap();
    assert!(meta.file_type().is_block_device());
    assert_eq!(meta.rdev(), fs::metadata(&device).unwrap().rdev());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    // The new node reaches the same device.
    assert_eq!(loopdev::size_bytes(&node).unwrap(), 16 * MIB);
    assert_eq!(loopdev::backing_file(&node).unwrap(), Some(image.canonicalize().unwrap()));

    // Existing correct node: reused as is.
    assert_eq!(loopdev::ensure_device_node(&dev_dir, index).unwrap(), node);

    // Something else under that name is never overwritten.
    let squatter = dev_dir.join(format!("loop{}", index + 1));
    fs::write(&squatter, b"not a device").unwrap();
    match loopdev::ensure_device_node(&dev_dir, index + 1) {
        Err(LoopError::BadDeviceNode { path, .. }) => assert_eq!(path, squatter),
        other => panic!("expected BadDeviceNode, got {other:?}"),
    }
    assert_eq!(fs::read(&squatter).unwrap(), b"not a device");
}

#[test]
fn ensure_formatted_formats_a_blank_device_only_once() {
    if !require_root() {
        return;
    }
    let mut cleanup = Cleanup::new();
    let image = cleanup.sparse_image(32 * MIB);
    let device = cleanup.attach(&image, false);

    assert_eq!(lfs::probe(&device).unwrap(), None);
    assert!(lfs::ensure_formatted(&device, "ext4").unwrap());
    assert_eq!(lfs::probe(&device).unwrap().as_deref(), Some("ext4"));
    assert!(!lfs::ensure_formatted(&device, "ext4").unwrap());
    // "" means the default, ext4: still nothing to do.
    assert!(!lfs::ensure_formatted(&device, "").unwrap());
}

#[test]
fn a_different_filesystem_is_a_mismatch_and_keeps_its_data() {
    if !require_root() {
        return;
    }
    let mut cleanup = Cleanup::new();
    let (_image, device, target) = mounted_volume(&mut cleanup, 32 * MIB, "ext3");
    fs::write(target.join("precious.txt"), b"do not reformat me").unwrap();
    assert!(mount::unmount(&target).unwrap());

    assert_eq!(lfs::probe(&device).unwrap().as_deref(), Some("ext3"));
    for wanted in ["ext4", "xfs"] {
        match lfs::ensure_formatted(&device, wanted) {
            Err(FsError::Mismatch { device: d, found, wanted: w }) => {
                assert_eq!(d, device);
                assert_eq!(found, "ext3");
                assert_eq!(w, wanted);
            }
            other => panic!("expected Mismatch for {wanted}, got {other:?}"),
        }
    }

    mount::mount_device(&device, &target, "ext3", &no_options()).unwrap();
    assert_eq!(fs::read(target.join("precious.txt")).unwrap(), b"do not reformat me");
}

#[test]
fn mounted_data_survives_unmount_and_remount() {
    if !require_root() {
        return;
    }
    let mut cleanup = Cleanup::new();
    let image = cleanup.sparse_image(32 * MIB);
    let device = cleanup.attach(&image, false);
    lfs::ensure_formatted(&device, "ext4").unwrap();
    let target = cleanup.mount_point();
    let options =
        mount::parse_mount_options(&["noatime,nodiscard".to_string(), "errors=remount-ro".to_string()])
            .unwrap();

    mount::mount_device(&device, &target, "ext4", &options).unwrap();
    assert!(mount::is_mount_point(&target).unwrap());
    let info = mount::find_mount(&target).unwrap().expect("mounted");
    assert_eq!(info.source, device.to_str().unwrap());
    assert_eq!(info.fs_type, "ext4");
    assert!(info.options.iter().any(|o| o == "noatime"), "{:?}", info.options);
    assert!(info.super_options.iter().any(|o| o == "errors=remount-ro"), "{:?}", info.super_options);
    fs::write(target.join("hello.txt"), b"hello, CSI").unwrap();

    assert!(mount::unmount(&target).unwrap());
    assert!(!mount::is_mount_point(&target).unwrap());
    assert!(!target.join("hello.txt").exists());
    assert!(!mount::unmount(&target).unwrap());

    mount::mount_device(&device, &target, "ext4", &no_options()).unwrap();
    assert_eq!(fs::read(target.join("hello.txt")).unwrap(), b"hello, CSI");
}

#[test]
fn read_only_bind_mount_makes_writes_fail_with_erofs() {
    if !require_root() {
        return;
    }
    let mut cleanup = Cleanup::new();
    let source = cleanup.temp_dir();
    fs::write(source.join("existing.txt"), b"readable").unwrap();
    let read_only = cleanup.mount_point();
    let writable = cleanup.mount_point();

    mount::bind_mount(&source, &read_only, true).unwrap();
    assert_eq!(fs::read(read_only.join("existing.txt")).unwrap(), b"readable");
    let err = fs::write(read_only.join("new.txt"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    let info = mount::find_mount(&read_only).unwrap().expect("bind mounted");
    assert!(info.options.iter().any(|o| o == "ro"), "{:?}", info.options);

    // The source and a read-write bind stay writable.
    mount::bind_mount(&source, &writable, false).unwrap();
    fs::write(writable.join("new.txt"), b"x").unwrap();
    assert_eq!(fs::read(source.join("new.txt")).unwrap(), b"x");
}

#[test]
fn a_device_node_can_be_bind_mounted_onto_a_regular_file() {
    if !require_root() {
        return;
    }
    let mut cleanup = Cleanup::new();
    let image = cleanup.sparse_image(16 * MIB);
    let device = cleanup.attach(&image, false);
    let dir = cleanup.temp_dir();
    let target = dir.join("block");
    File::create(&target).unwrap();
    cleanup.register_mount(&target);

    mount::bind_mount(&device, &target, false).unwrap();
    let meta = fs::metadata(&target).unwrap();
    assert!(meta.file_type().is_block_device());
    assert_eq!(meta.rdev(), fs::metadata(&device).unwrap().rdev());
    assert_eq!(loopdev::size_bytes(&target).unwrap(), 16 * MIB);

    // Raw writes through the bind land on the device (and the image).
    let raw = OpenOptions::new().read(true).write(true).open(&target).unwrap();
    raw.write_all_at(b"raw block data", 4096).unwrap();
    raw.sync_all().unwrap();
    drop(raw);
    let mut readback = [0u8; 14];
    File::open(&image).unwrap().read_exact_at(&mut readback, 4096).unwrap();
    assert_eq!(&readback, b"raw block data");

    assert!(mount::unmount(&target).unwrap());
    assert!(!fs::metadata(&target).unwrap().file_type().is_block_device());
}

#[test]
fn a_read_only_bind_does_not_make_a_device_node_read_only() {
    if !require_root() {
        return;
    }
    let mut cleanup = Cleanup::new();
    let image = cleanup.sparse_image(16 * MIB);
    let device = cleanup.attach(&image, false);
    let target = cleanup.temp_dir().join("block-ro");
    File::create(&target).unwrap();
    cleanup.register_mount(&target);

    mount::bind_mount(&device, &target, true).unwrap();
    let info = mount::find_mount(&target).unwrap().expect("bind mounted");
    assert!(info.options.iter().any(|o| o == "ro"), "{:?}", info.options);

    // MNT_READONLY protects the node's inode, not I/O to the device: the
    // write goes through. Read-only raw block volumes need a read-only
    // loop device (attach(.., true)), not just a read-only bind.
    let raw = OpenOptions::new().write(true).open(&target).unwrap();
    raw.write_all_at(b"still writable", 0).unwrap();
    drop(raw);
    let mut readback = [0u8; 14];
    File::open(&device).unwrap().read_exact_at(&mut readback, 0).unwrap();
    assert_eq!(&readback, b"still writable");
}

#[test]
fn unmount_of_a_directory_that_is_not_mounted_returns_false() {
    if !require_root() {
        return;
    }
    let mut cleanup = Cleanup::new();
    let dir = cleanup.temp_dir();
    assert!(!mount::unmount(&dir).unwrap());
    assert!(!mount::unmount(&dir.join("does-not-exist")).unwrap());
    assert!(!mount::is_mount_point(&dir).unwrap());
}

/// Online ext4 resize (EXT4_IOC_RESIZE_FS) needs CAP_SYS_RESOURCE, which
/// some sandboxes drop even for root.
fn has_cap_sys_resource() -> bool {
    const CAP_SYS_RESOURCE: u32 = 24;
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
            u64::from_str_radix(hex.trim(), 16).ok()
        })
        .is_some_and(|caps| caps & (1 << CAP_SYS_RESOURCE) != 0)
}

#[test]
fn grow_after_enlarging_the_image_increases_the_filesystem_size() {
    if !require_root() {
        return;
    }
    let mut cleanup = Cleanup::new();
    let image = cleanup.sparse_image(32 * MIB);
    let device = cleanup.attach(&image, false);
    assert!(lfs::ensure_formatted(&device, "ext4").unwrap());
    let target = cleanup.mount_point();
    mount::mount_device(&device, &target, "ext4", &no_options()).unwrap();
    let before = lfs::usage(&target).unwrap();
    fs::write(target.join("kept.txt"), b"still here").unwrap();

    File::options().write(true).open(&image).unwrap().set_len(96 * MIB).unwrap();
    // The loop device does not notice on its own.
    assert_eq!(loopdev::size_bytes(&device).unwrap(), 32 * MIB);
    assert_eq!(loopdev::refresh_capacity(&device).unwrap(), 96 * MIB);
    assert_eq!(loopdev::size_bytes(&device).unwrap(), 96 * MIB);

    if has_cap_sys_resource() {
        lfs::grow(&device, &target, "ext4").unwrap();
    } else {
        // Without the capability resize2fs can only work offline, and it
        // only does so on a freshly checked filesystem.
        eprintln!(
            "NOTE grow_after_enlarging_the_image_increases_the_filesystem_size: \
             no CAP_SYS_RESOURCE, online resize impossible; growing offline"
        );
        match lfs::grow(&device, &target, "ext4") {
            Err(e @ FsError::CommandFailed { .. }) => {
                assert!(e.to_string().contains("CAP_SYS_RESOURCE"), "{e}")
            }
            other => panic!("expected CommandFailed, got {other:?}"),
        }
        assert!(mount::unmount(&target).unwrap());
        let fsck = std::process::Command::new("e2fsck").args(["-f", "-p"]).arg(&device).output().unwrap();
        assert!(fsck.status.code().is_some_and(|c| c <= 1), "e2fsck: {fsck:?}");
        lfs::grow(&device, &target, "ext4").unwrap();
        mount::mount_device(&device, &target, "ext4", &no_options()).unwrap();
    }
    let after = lfs::usage(&target).unwrap();
    assert!(after.total_bytes > before.total_bytes + 50 * MIB, "before {before:?}, after {after:?}");
    assert!(after.total_inodes > before.total_inodes);
    assert_eq!(fs::read(target.join("kept.txt")).unwrap(), b"still here");
}

#[test]
fn usage_of_a_fresh_volume_is_mostly_available() {
    if !require_root() {
        return;
    }
    let mut cleanup = Cleanup::new();
    let (_image, _device, target) = mounted_volume(&mut cleanup, 64 * MIB, "ext4");
    let before = lfs::usage(&target).unwrap();
    // -m 0: no root-reserved blocks. ext4 still holds back ~2% of clusters
    // for delayed allocation (s_resv_clusters), so available < free.
    let free = before.total_bytes - before.used_bytes;
    assert!(before.available_bytes <= free);
    assert!(before.available_bytes >= free / 100 * 97, "{before:?}");

    let mut file = File::create(target.join("blob")).unwrap();
    file.write_all(&vec![0xAB; 4 * MIB as usize]).unwrap();
    file.sync_all().unwrap();
    let after = lfs::usage(&target).unwrap();
    assert!(after.used_bytes >= before.used_bytes + 4 * MIB, "{before:?} -> {after:?}");
    assert_eq!(after.used_inodes, before.used_inodes + 1);
}

#[test]
fn xfs_without_xfsprogs_is_reported_clearly() {
    if !require_root() {
        return;
    }
    if which("mkfs.xfs") {
        eprintln!("SKIP xfs_without_xfsprogs_is_reported_clearly: mkfs.xfs is installed");
        return;
    }
    let mut cleanup = Cleanup::new();
    let image = cleanup.sparse_image(32 * MIB);
    let device = cleanup.attach(&image, false);
    match lfs::ensure_formatted(&device, "xfs") {
        Err(e @ FsError::ToolMissing { .. }) => {
            assert!(e.to_string().contains("xfsprogs"), "{e}")
        }
        other => panic!("expected ToolMissing, got {other:?}"),
    }
    // Nothing was written.
    assert_eq!(lfs::probe(&device).unwrap(), None);
}

fn which(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).exists()))
        || Path::new("/usr/sbin").join(tool).exists()
        || Path::new("/sbin").join(tool).exists()
}

#[test]
fn a_missing_backing_file_is_an_error_naming_it() {
    if !require_root() {
        return;
    }
    let mut cleanup = Cleanup::new();
    let missing = cleanup.temp_dir().join("nope.img");
    match loopdev::attach(&missing, false) {
        Err(e @ LoopError::BackingFile { .. }) => {
            assert!(e.to_string().contains("nope.img"), "{e}");
            assert!(
                matches!(e, LoopError::BackingFile { ref source, .. } if source.kind() == ErrorKind::NotFound)
            );
        }
        other => panic!("expected BackingFile error, got {other:?}"),
    }
}

#[test]
fn cleanup_undoes_mounts_and_devices_even_after_a_panic() {
    if !require_root() {
        return;
    }
    let mut seen = None;
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut cleanup = Cleanup::new();
        let (image, device, target) = mounted_volume(&mut cleanup, 32 * MIB, "ext4");
        seen = Some((image.canonicalize().unwrap(), device, target));
        panic!("deliberate failure inside a test body");
    }));
    assert!(outcome.is_err());

    let (image, device, target) = seen.expect("set up before the panic");
    assert_eq!(mount::find_mount(&target).unwrap(), None);
    // The device number may already serve another test, but not our image.
    assert_ne!(loopdev::backing_file(&device).ok().flatten(), Some(image.clone()));
    assert!(!image.exists());
}
