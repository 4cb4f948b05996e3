//! Guards for tests that need root: a skip check that always says why, and
//! a [`Cleanup`] that undoes mounts and loop devices even when a test panics.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use lab03_node::loopdev;
use nix::errno::Errno;
use nix::mount::{MntFlags, umount2};
use tempfile::TempDir;

/// Set to `1` to turn a skip into a failure (for CI machines that must run
/// the host tests).
const REQUIRE_ENV: &str = "LAB03_REQUIRE_ROOT_TESTS";

/// Taken for writing by tests that detach a device and then keep using its
/// path: until they are done, no other test may attach and be handed the
/// same `/dev/loopN`. Attaches through [`Cleanup::attach`] take it for
/// reading.
static DEVICE_REUSE_LOCK: RwLock<()> = RwLock::new(());

/// `true` if this test can touch loop devices and mounts. Otherwise prints
/// `SKIP <test>: <reason>` to stderr and returns `false`; the test must then
/// return early.
pub fn require_root() -> bool {
    let test = std::thread::current().name().unwrap_or("<unnamed test>").to_string();
    let reason = if !nix::unistd::geteuid().is_root() {
        Some("needs root (loop devices and mounts)")
    } else if !Path::new("/dev/loop-control").exists() {
        Some("/dev/loop-control is missing (no loop device support)")
    } else {
        None
    };
    match reason {
        None => true,
        Some(reason) if std::env::var(REQUIRE_ENV).as_deref() == Ok("1") => {
            panic!("{test}: {reason}, and {REQUIRE_ENV}=1 forbids skipping")
        }
        Some(reason) => {
            eprintln!("SKIP {test}: {reason}");
            false
        }
    }
}

/// Exclusive access to loop device numbers (see [`DEVICE_REUSE_LOCK`]).
pub fn exclusive_devices() -> RwLockWriteGuard<'static, ()> {
    DEVICE_REUSE_LOCK.write().unwrap_or_else(PoisonError::into_inner)
}

/// Shared access for attaches (see [`DEVICE_REUSE_LOCK`]); tests calling
/// `loopdev::attach` directly must hold it.
pub fn shared_devices() -> RwLockReadGuard<'static, ()> {
    DEVICE_REUSE_LOCK.read().unwrap_or_else(PoisonError::into_inner)
}

/// Everything a test set up on the host, undone on drop (also on panic):
/// mount points are unmounted in reverse order (lazily if needed), then
/// loop devices detached, then temp dirs removed.
#[derive(Default)]
pub struct Cleanup {
    mounts: Vec<PathBuf>,
    /// (device, canonical backing file): a device is only detached if it
    /// still serves our file, so we never detach another test's device
    /// that reused the number.
    loops: Vec<(PathBuf, PathBuf)>,
    dirs: Vec<TempDir>,
}

impl Cleanup {
    pub fn new() -> Self {
        Self::default()
    }

    /// A fresh directory under the system temp dir, removed at the end.
    pub fn temp_dir(&mut self) -> PathBuf {
        let dir = tempfile::Builder::new().prefix("lab03-test-").tempdir().expect("create temp dir");
        let path = dir.path().to_path_buf();
        self.dirs.push(dir);
        path
    }

    /// A sparse image file of `size` bytes in a new temp dir.
    pub fn sparse_image(&mut self, size: u64) -> PathBuf {
        let path = self.temp_dir().join("volume.img");
        File::create(&path).and_then(|f| f.set_len(size)).expect("create sparse image");
        path
    }

    /// A new, empty directory to mount on; registered for unmounting
    /// before anything is mounted there.
    pub fn mount_point(&mut self) -> PathBuf {
        let path = self.temp_dir().join("mnt");
        fs::create_dir(&path).expect("create mount point");
        self.mounts.push(path.clone());
        path
    }

    /// Register an existing path (e.g. a file for a bind mount) for
    /// unmounting.
    pub fn register_mount(&mut self, path: &Path) {
        self.mounts.push(path.to_path_buf());
    }

    /// `loopdev::attach`, with the device registered for detaching.
    pub fn attach(&mut self, image: &Path, read_only: bool) -> PathBuf {
        let _shared = shared_devices();
        let device =
            loopdev::attach(image, read_only).unwrap_or_else(|e| panic!("attach {}: {e}", image.display()));
        let backing = image.canonicalize().expect("canonicalize image");
        self.loops.push((device.clone(), backing));
        device
    }

    /// Register a device attached outside [`Cleanup::attach`].
    pub fn register_loop(&mut self, device: &Path, image: &Path) {
        let backing = image.canonicalize().expect("canonicalize image");
        self.loops.push((device.to_path_buf(), backing));
    }

    fn unmount_all(&mut self) {
        for target in self.mounts.drain(..).rev() {
            // Loop: a test may have stacked several mounts on one path.
            for _ in 0..8 {
                match umount2(&target, MntFlags::empty()) {
                    Ok(()) => continue,
                    Err(Errno::EINVAL | Errno::ENOENT) => break,
                    Err(e) => {
                        eprintln!("cleanup: umount {}: {e}; detaching lazily", target.display());
                        if let Err(e) = umount2(&target, MntFlags::MNT_DETACH) {
                            eprintln!("cleanup: lazy umount {}: {e}", target.display());
                            break;
                        }
                    }
                }
            }
        }
    }

    fn detach_all(&mut self) {
        for (device, backing) in self.loops.drain(..).rev() {
            let still_ours = loopdev::backing_file(&device).ok().flatten().is_some_and(|b| b == backing);
            if !still_ours {
                continue;
            }
            match loopdev::detach(&device) {
                Ok(()) => {}
                Err(loopdev::LoopError::Busy { .. }) => {
                    // Probably held by a lazily unmounted filesystem: let
                    // the kernel detach it when the last user goes away.
                    eprintln!("cleanup: {} busy, detaching on last close", device.display());
                    if let Ok(file) = File::open(&device) {
                        let _ = lab03_node::sys::loop_clr_fd(&file);
                    }
                }
                Err(e) => eprintln!("cleanup: detach {}: {e}", device.display()),
            }
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.unmount_all();
        self.detach_all();
        // Last: the directories held the mount points and images.
        self.dirs.clear();
    }
}
