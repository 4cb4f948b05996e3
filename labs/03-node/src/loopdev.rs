//! Loop devices: expose a regular image file as a block device.
//!
//! We talk to the kernel directly (`/dev/loop-control` + ioctls) instead of
//! shelling out to `losetup`: inside kind node containers `/dev` is a static
//! copy, so `/dev/loopN` may be missing even though the kernel created the
//! device. [`ensure_device_node`] creates the node ourselves.
//!
//! The kernel is the source of truth for "which image is attached where"
//! (`/sys/block/loopN/loop/backing_file`), so the driver keeps no state and
//! finds its devices again after a restart.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::stat::{Mode, SFlag, major, makedev, minor, mknod};
use tracing::{debug, info, warn};

use crate::sys;

const LOOP_CONTROL: &str = "/dev/loop-control";
const DEV_DIR: &str = "/dev";
const SYS_BLOCK: &str = "/sys/block";
/// How often `attach` retries when another attacher grabs the free device
/// between `LOOP_CTL_GET_FREE` and `LOOP_SET_FD` (the kernel does not
/// reserve it for us).
const ATTACH_ATTEMPTS: u32 = 8;
/// How often `detach` retries a device someone else has open. Openers that
/// only look (udev's blkid, another process's attach that lost the race
/// for this device) let go within milliseconds; a mount does not.
const DETACH_ATTEMPTS: u32 = 8;
/// The kernel appends this to `backing_file` when the image was unlinked.
const DELETED_SUFFIX: &str = " (deleted)";

/// Serialises attaches within this process, so two concurrent requests for
/// the same image cannot both miss the lookup and attach it twice.
static ATTACH_LOCK: Mutex<()> = Mutex::new(());

#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    #[error("backing file {path}: {source}")]
    BackingFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: {op}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{op} on {device}{}: {source}", for_backing(.backing_file))]
    Ioctl {
        device: PathBuf,
        op: &'static str,
        backing_file: Option<PathBuf>,
        #[source]
        source: Errno,
    },
    #[error("{path} exists but is not block device {major}:{minor} ({found}); refusing to touch it")]
    BadDeviceNode { path: PathBuf, major: u64, minor: u64, found: String },
    #[error("{device} is not a loop device")]
    NotALoopDevice { device: PathBuf },
    #[error("{device}{} is in use (mounted or still open); unmount/close it before detaching", for_backing(.backing_file))]
    Busy { device: PathBuf, backing_file: Option<PathBuf> },
    #[error(
        "no free loop device for {backing_file} after {attempts} attempts (other attachers kept taking it)"
    )]
    NoFreeDevice { backing_file: PathBuf, attempts: u32 },
    #[error(
        "{backing_file} is already attached to {device} with read_only={attached_read_only}, but read_only={requested_read_only} was requested"
    )]
    ReadOnlyMismatch {
        backing_file: PathBuf,
        device: PathBuf,
        attached_read_only: bool,
        requested_read_only: bool,
    },
}

fn for_backing(backing_file: &Option<PathBuf>) -> String {
    match backing_file {
        Some(path) => format!(" (backing file {})", path.display()),
        None => String::new(),
    }
}

// ANCHOR: loop-attach
/// Attach `backing_file` to a loop device and return the device path
/// (`/dev/loopN`).
///
/// Idempotent: if a loop device already serves this file, that device is
/// returned (its read-only mode must match, else [`LoopError::ReadOnlyMismatch`]).
/// `LO_FLAGS_AUTOCLEAR` is deliberately not used: we detach explicitly, and a
/// staged volume must stay attached across driver restarts.
pub fn attach(backing_file: &Path, read_only: bool) -> Result<PathBuf, LoopError> {
    let _guard = ATTACH_LOCK.lock().unwrap_or_else(PoisonError::into_inner);

    // Open first: proves the file exists and gives the fd the kernel needs.
    // A read-only fd is what makes the device read-only for LOOP_SET_FD.
    let backing = OpenOptions::new()
        .read(true)
        .write(!read_only)
        .open(backing_file)
        .map_err(|source| LoopError::BackingFile { path: backing_file.to_path_buf(), source })?;
    let canonical = backing_file
        .canonicalize()
        .map_err(|source| LoopError::BackingFile { path: backing_file.to_path_buf(), source })?;

    if let Some(device) = find_by_backing_file(&canonical)? {
        let attached_read_only = is_read_only(&device)?;
        if attached_read_only != read_only {
            return Err(LoopError::ReadOnlyMismatch {
                backing_file: canonical,
                device,
                attached_read_only,
                requested_read_only: read_only,
            });
        }
        debug!(device = %device.display(), backing_file = %canonical.display(), "loop device already attached");
        return Ok(device);
    }

    let control = OpenOptions::new()
        .read(true)
        .write(true)
        .open(LOOP_CONTROL)
        .map_err(|source| LoopError::Io { path: LOOP_CONTROL.into(), op: "open", source })?;

    for attempt in 1..=ATTACH_ATTEMPTS {
        let index = sys::loop_ctl_get_free(&control).map_err(|source| LoopError::Ioctl {
            device: LOOP_CONTROL.into(),
            op: "LOOP_CTL_GET_FREE",
            backing_file: Some(canonical.clone()),
            source,
        })?;
        let device = ensure_device_node(Path::new(DEV_DIR), index)?;
        // Read-write even for read-only volumes: the kernel makes the device
        // read-only if either this fd or the backing fd is read-only, and
        // the backing fd already decides.
        let device_file = open_device(&device, true)?;
        match bind(&device_file, &backing, &canonical, read_only) {
            Ok(op) => {
                info!(device = %device.display(), backing_file = %canonical.display(), read_only, via = op, "attached loop device");
                return Ok(device);
            }
            Err((_, Errno::EBUSY)) => {
                // Someone else bound this free device first: let go of it
                // at once (holding it open would make its owner's detach
                // fail as busy), then ask again.
                drop(device_file);
                warn!(device = %device.display(), attempt, "loop device taken concurrently, retrying");
                std::thread::sleep(Duration::from_millis(10 * u64::from(attempt)));
            }
            Err((op, source)) => {
                return Err(LoopError::Ioctl { device, op, backing_file: Some(canonical), source });
            }
        }
    }
    Err(LoopError::NoFreeDevice { backing_file: canonical, attempts: ATTACH_ATTEMPTS })
}
// ANCHOR_END: loop-attach

/// Bind `backing` to the device: `LOOP_CONFIGURE` (atomic, Linux 5.8+) with
/// a fallback to the classic `LOOP_SET_FD` + `LOOP_SET_STATUS64` pair.
/// Returns the name of the ioctl that did the work, or the failing one.
fn bind(
    device: &File,
    backing: &File,
    name: &Path,
    read_only: bool,
) -> Result<&'static str, (&'static str, Errno)> {
    let mut info = sys::loop_info64::default();
    info.set_file_name(name.as_os_str().as_bytes());

    let mut config_info = info;
    if read_only {
        config_info.lo_flags |= sys::LO_FLAGS_READ_ONLY;
    }
    match sys::loop_configure(device, backing, 0, &config_info) {
        Ok(()) => return Ok("LOOP_CONFIGURE"),
        // Old kernels do not know the ioctl; everything else is real.
        Err(Errno::EINVAL | Errno::ENOTTY) => {
            debug!("LOOP_CONFIGURE unsupported, falling back to LOOP_SET_FD");
        }
        Err(e) => return Err(("LOOP_CONFIGURE", e)),
    }

    sys::loop_set_fd(device, backing).map_err(|e| ("LOOP_SET_FD", e))?;
    // LOOP_SET_STATUS64 cannot set LO_FLAGS_READ_ONLY; the read-only backing
    // fd already made the device read-only. Only the name is set here.
    if let Err(e) = sys::loop_set_status64(device, &info) {
        // Do not leave a half-configured device behind.
        let _ = sys::loop_clr_fd(device);
        return Err(("LOOP_SET_STATUS64", e));
    }
    Ok("LOOP_SET_FD")
}

/// The loop device currently serving `backing_file`, if any.
///
/// Matches by inode (same `st_dev`/`st_ino`) or by canonical path. Devices
/// whose backing file was unlinked (`" (deleted)"`) or that are being torn
/// down (autoclear set by a deferred detach) never match. The returned
/// `/dev/loopN` node is created if it is missing.
pub fn find_by_backing_file(backing_file: &Path) -> Result<Option<PathBuf>, LoopError> {
    let wanted = match fs::metadata(backing_file) {
        Ok(meta) => meta,
        // Nothing can be serving a file that does not exist.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(LoopError::BackingFile { path: backing_file.to_path_buf(), source });
        }
    };
    let canonical = backing_file.canonicalize().ok();

    for index in loop_indices()? {
        let sysdir = Path::new(SYS_BLOCK).join(format!("loop{index}"));
        let Some((path, deleted)) = read_backing_file(&sysdir.join("loop/backing_file"))? else {
            continue;
        };
        if deleted || read_flag(&sysdir.join("loop/autoclear")) {
            continue;
        }
        let same_inode =
            fs::metadata(&path).map(|m| m.dev() == wanted.dev() && m.ino() == wanted.ino()).unwrap_or(false);
        let same_path = canonical.as_deref() == Some(path.as_path());
        if same_inode || same_path {
            return ensure_device_node(Path::new(DEV_DIR), index).map(Some);
        }
    }
    Ok(None)
}

/// Detach a loop device (`LOOP_CLR_FD`).
///
/// Already detached and missing nodes are fine. A device that is in use
/// (mounted, or opened by anyone else) is refused with [`LoopError::Busy`]
/// and stays attached: modern kernels would otherwise silently turn
/// `LOOP_CLR_FD` into a deferred "detach on last close". Busy is retried
/// for about a third of a second first, so a passing opener is waited out.
pub fn detach(device: &Path) -> Result<(), LoopError> {
    let mut attempt = 1;
    loop {
        match try_detach(device) {
            Err(LoopError::Busy { .. }) if attempt < DETACH_ATTEMPTS => {
                debug!(device = %device.display(), attempt, "loop device busy, retrying detach");
                std::thread::sleep(Duration::from_millis(10 * u64::from(attempt)));
                attempt += 1;
            }
            result => return result,
        }
    }
}

fn try_detach(device: &Path) -> Result<(), LoopError> {
    // O_EXCL on a block device fails with EBUSY while it is mounted, and
    // keeps anyone from mounting it while we detach.
    let file = match OpenOptions::new().read(true).custom_flags(libc::O_EXCL).open(device) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENXIO) => {
            debug!(device = %device.display(), "loop device node gone, nothing to detach");
            return Ok(());
        }
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
            return Err(LoopError::Busy {
                device: device.to_path_buf(),
                backing_file: backing_file(device).ok().flatten(),
            });
        }
        Err(source) => {
            return Err(LoopError::Io { path: device.to_path_buf(), op: "open", source });
        }
    };
    let backing = backing_file(device).ok().flatten();

    match sys::loop_clr_fd(&file) {
        Ok(()) => {}
        Err(Errno::ENXIO) => {
            debug!(device = %device.display(), "loop device already detached");
            return Ok(());
        }
        Err(Errno::EBUSY) => {
            return Err(LoopError::Busy { device: device.to_path_buf(), backing_file: backing });
        }
        Err(source) => {
            return Err(LoopError::Ioctl {
                device: device.to_path_buf(),
                op: "LOOP_CLR_FD",
                backing_file: backing,
                source,
            });
        }
    }

    // If we are the only opener the device is now "running down" (status
    // reads ENXIO) and detaches when we close `file`. If someone else still
    // has it open, the kernel merely set LO_FLAGS_AUTOCLEAR: undo that and
    // report Busy instead of detaching behind the user's back later.
    match sys::loop_get_status64(&file) {
        Ok(mut info) if info.lo_flags & sys::LO_FLAGS_AUTOCLEAR != 0 => {
            info.lo_flags &= !sys::LO_FLAGS_AUTOCLEAR;
            if let Err(e) = sys::loop_set_status64(&file, &info) {
                warn!(device = %device.display(), error = %e, "could not cancel deferred detach");
            }
            Err(LoopError::Busy { device: device.to_path_buf(), backing_file: backing })
        }
        _ => {
            drop(file);
            info!(device = %device.display(), backing_file = ?backing, "detached loop device");
            Ok(())
        }
    }
}

/// Tell the loop device that its backing file changed size
/// (`LOOP_SET_CAPACITY`) and return the new size in bytes.
pub fn refresh_capacity(device: &Path) -> Result<u64, LoopError> {
    let file = open_device(device, false)?;
    sys::loop_set_capacity(&file).map_err(|source| LoopError::Ioctl {
        device: device.to_path_buf(),
        op: "LOOP_SET_CAPACITY",
        backing_file: backing_file(device).ok().flatten(),
        source,
    })?;
    let size = blk_size(&file, device)?;
    info!(device = %device.display(), size, "refreshed loop device capacity");
    Ok(size)
}

/// Size of a block device in bytes (`BLKGETSIZE64`). Works for any block
/// device node, not only loop devices.
pub fn size_bytes(device: &Path) -> Result<u64, LoopError> {
    let file = open_device(device, false)?;
    blk_size(&file, device)
}

/// The backing file of a loop device, `None` if the device is not attached.
///
/// Looked up by the node's device number, so it works for nodes outside
/// `/dev` too. A trailing `" (deleted)"` is stripped.
pub fn backing_file(device: &Path) -> Result<Option<PathBuf>, LoopError> {
    let meta = fs::metadata(device).map_err(|source| LoopError::Io {
        path: device.to_path_buf(),
        op: "stat",
        source,
    })?;
    if !meta.file_type().is_block_device() || major(meta.rdev()) != sys::LOOP_MAJOR {
        return Err(LoopError::NotALoopDevice { device: device.to_path_buf() });
    }
    let sysfs = format!("/sys/dev/block/{}:{}/loop/backing_file", major(meta.rdev()), minor(meta.rdev()));
    Ok(read_backing_file(Path::new(&sysfs))?.map(|(path, _deleted)| path))
}

// ANCHOR: ensure-device-node
/// Make sure `dir/loopN` is the block device node of loop device `index`,
/// creating it (mode 0660) if missing. An existing node with the wrong type
/// or number is an error, never overwritten.
///
/// The device number comes from `/sys/block/loopN/dev` (it is not `7:N`
/// when the loop module runs with `max_part`), falling back to `7:N`.
pub fn ensure_device_node(dir: &Path, index: u32) -> Result<PathBuf, LoopError> {
    let path = dir.join(format!("loop{index}"));
    let (maj, min) = sysfs_dev_numbers(index).unwrap_or((sys::LOOP_MAJOR, u64::from(index)));
    let wanted = makedev(maj, min);

    // Two rounds: if mknod loses a race (EEXIST), verify the winner's node.
    for _ in 0..2 {
        match fs::symlink_metadata(&path) {
            Ok(meta) => {
                if meta.file_type().is_block_device() && meta.rdev() == wanted {
                    return Ok(path);
                }
                let found = if meta.file_type().is_block_device() {
                    format!("block device {}:{}", major(meta.rdev()), minor(meta.rdev()))
                } else {
                    format!("{:?}", meta.file_type())
                };
                return Err(LoopError::BadDeviceNode { path, major: maj, minor: min, found });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                match mknod(&path, SFlag::S_IFBLK, Mode::from_bits_truncate(0o660), wanted) {
                    Ok(()) => {
                        // mknod applies the umask; set the mode explicitly.
                        fs::set_permissions(&path, fs::Permissions::from_mode(0o660))
                            .map_err(|source| LoopError::Io { path: path.clone(), op: "chmod", source })?;
                        info!(path = %path.display(), major = maj, minor = min, "created loop device node");
                        return Ok(path);
                    }
                    Err(Errno::EEXIST) => continue,
                    Err(e) => {
                        return Err(LoopError::Io { path, op: "mknod", source: e.into() });
                    }
                }
            }
            Err(source) => {
                return Err(LoopError::Io { path, op: "stat", source });
            }
        }
    }
    Err(LoopError::Io { path, op: "mknod", source: Errno::EEXIST.into() })
}
// ANCHOR_END: ensure-device-node

fn open_device(device: &Path, write: bool) -> Result<File, LoopError> {
    OpenOptions::new().read(true).write(write).open(device).map_err(|source| LoopError::Io {
        path: device.to_path_buf(),
        op: "open",
        source,
    })
}

fn blk_size(file: &File, device: &Path) -> Result<u64, LoopError> {
    sys::blkgetsize64(file).map_err(|source| LoopError::Ioctl {
        device: device.to_path_buf(),
        op: "BLKGETSIZE64",
        backing_file: None,
        source,
    })
}

/// `/sys/block/loopN/ro` for a device node.
fn is_read_only(device: &Path) -> Result<bool, LoopError> {
    let meta = fs::metadata(device).map_err(|source| LoopError::Io {
        path: device.to_path_buf(),
        op: "stat",
        source,
    })?;
    let ro = format!("/sys/dev/block/{}:{}/ro", major(meta.rdev()), minor(meta.rdev()));
    Ok(read_flag(Path::new(&ro)))
}

/// A sysfs boolean ("0"/"1"); unreadable counts as false.
fn read_flag(path: &Path) -> bool {
    fs::read_to_string(path).is_ok_and(|s| s.trim() == "1")
}

/// Indices of all loop devices the kernel knows, ascending.
fn loop_indices() -> Result<Vec<u32>, LoopError> {
    let entries = fs::read_dir(SYS_BLOCK).map_err(|source| LoopError::Io {
        path: SYS_BLOCK.into(),
        op: "read_dir",
        source,
    })?;
    let mut indices: Vec<u32> = entries
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            entry.file_name().to_str().and_then(|name| name.strip_prefix("loop")).and_then(|n| n.parse().ok())
        })
        .collect();
    indices.sort_unstable();
    Ok(indices)
}

fn sysfs_dev_numbers(index: u32) -> Option<(u64, u64)> {
    let text = fs::read_to_string(format!("{SYS_BLOCK}/loop{index}/dev")).ok()?;
    parse_dev_numbers(&text)
}

/// Parse `"7:3\n"`.
fn parse_dev_numbers(text: &str) -> Option<(u64, u64)> {
    let (maj, min) = text.trim().split_once(':')?;
    Some((maj.parse().ok()?, min.parse().ok()?))
}

/// Read a sysfs `backing_file`: `None` when the device is not bound (the
/// `loop/` directory only exists while it is).
fn read_backing_file(path: &Path) -> Result<Option<(PathBuf, bool)>, LoopError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(parse_backing_file(&text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        // The device was detached between listing and reading.
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => Ok(None),
        Err(source) => Err(LoopError::Io { path: path.to_path_buf(), op: "read", source }),
    }
}

/// Split the kernel's text into (path, deleted).
fn parse_backing_file(text: &str) -> Option<(PathBuf, bool)> {
    let text = text.strip_suffix('\n').unwrap_or(text);
    if text.is_empty() {
        return None;
    }
    match text.strip_suffix(DELETED_SUFFIX) {
        Some(path) => Some((PathBuf::from(path), true)),
        None => Some((PathBuf::from(text), false)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backing_file_text_loses_newline_and_deleted_marker() {
        assert_eq!(
            parse_backing_file("/var/lib/vol.img\n"),
            Some((PathBuf::from("/var/lib/vol.img"), false))
        );
        assert_eq!(
            parse_backing_file("/var/lib/vol.img (deleted)\n"),
            Some((PathBuf::from("/var/lib/vol.img"), true))
        );
        assert_eq!(parse_backing_file("\n"), None);
    }

    #[test]
    fn sysfs_dev_numbers_are_parsed() {
        assert_eq!(parse_dev_numbers("7:3\n"), Some((7, 3)));
        assert_eq!(parse_dev_numbers("259:12"), Some((259, 12)));
        assert_eq!(parse_dev_numbers("garbage"), None);
    }

    #[test]
    fn errors_name_the_device_and_the_backing_file() {
        let err = LoopError::Ioctl {
            device: "/dev/loop3".into(),
            op: "LOOP_SET_FD",
            backing_file: Some("/var/lib/vol.img".into()),
            source: Errno::EBUSY,
        };
        let text = err.to_string();
        assert!(text.contains("/dev/loop3"), "{text}");
        assert!(text.contains("/var/lib/vol.img"), "{text}");
    }
}
