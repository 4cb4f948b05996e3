//! Filesystems: detect, create (only on blank devices), grow, and report
//! usage.
//!
//! Formatting is the one operation that destroys data, so the rule is
//! strict: `mkfs` runs only when [`probe`] finds the device blank, and a
//! device holding anything else is reported, never reformatted.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use nix::errno::Errno;
use tracing::{debug, info};

/// Filesystem types this driver can create. `xfs` additionally needs
/// `mkfs.xfs`/`xfs_growfs` (xfsprogs) on the node; without them the
/// operations fail with [`FsError::ToolMissing`].
pub const SUPPORTED: &[&str] = &["ext4", "ext3", "xfs"];

/// Used when the request does not name a filesystem type.
pub const DEFAULT_FS_TYPE: &str = "ext4";

/// How much of the start (and end) of a device must be zero to call it
/// blank. Covers the signatures of all common filesystems, partition tables,
/// LUKS, swap and RAID metadata.
const BLANK_CHECK_BYTES: u64 = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("unsupported filesystem type {0:?} (supported: {list})", list = SUPPORTED.join(", "))]
    Unsupported(String),
    #[error(
        "{device} already contains {found}, but {wanted} was requested; refusing to reformat (that would destroy its data)"
    )]
    Mismatch { device: PathBuf, found: String, wanted: String },
    #[error("`{cmd}` failed ({status}): {stderr}")]
    CommandFailed { cmd: String, status: ExitStatus, stderr: String },
    #[error("{tool} not found on this node: install {package} to use {fs_type}")]
    ToolMissing { tool: String, package: &'static str, fs_type: String },
    #[error("cannot run `{cmd}`: {source}")]
    Spawn {
        cmd: String,
        #[source]
        source: io::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("statvfs {path}: {source}")]
    Statvfs {
        path: PathBuf,
        #[source]
        source: Errno,
    },
}

/// Normalise a requested filesystem type: `""` means [`DEFAULT_FS_TYPE`],
/// anything outside [`SUPPORTED`] is [`FsError::Unsupported`]. Checks the
/// name only, not whether the tools are installed.
pub fn validate_fs_type(fs_type: &str) -> Result<&'static str, FsError> {
    if fs_type.is_empty() {
        return Ok(DEFAULT_FS_TYPE);
    }
    SUPPORTED
        .iter()
        .find(|&&t| t == fs_type)
        .copied()
        .ok_or_else(|| FsError::Unsupported(fs_type.to_string()))
}

/// What is on the device: `None` if it is blank, else a blkid-style type
/// name (`ext4`, `ext3`, `ext2`, `xfs`, `btrfs`, `swap`, `crypto_LUKS`,
/// `gpt`, `dos`), or `"unknown"` for non-zero data we do not recognise.
///
/// Reads the superblocks itself instead of parsing `blkid` output. ext
/// flavours are told apart by feature flags the way blkid does: features
/// ext3 cannot handle mean ext4, else a journal means ext3, else ext2.
pub fn probe(device: &Path) -> Result<Option<String>, FsError> {
    let io_err = |source| FsError::Io { path: device.to_path_buf(), source };
    let file = File::open(device).map_err(io_err)?;
    let head = read_up_to(&file, 0, BLANK_CHECK_BYTES).map_err(io_err)?;
    if let Some(found) = identify(&head) {
        return Ok(Some(found.to_string()));
    }
    if head.iter().any(|&b| b != 0) {
        return Ok(Some("unknown".into()));
    }
    // Some metadata (md 1.0, GPT backup, ZFS labels) lives at the end.
    let size = device_size(&file).map_err(io_err)?;
    if size > BLANK_CHECK_BYTES {
        let tail_start = size.saturating_sub(BLANK_CHECK_BYTES).max(BLANK_CHECK_BYTES);
        let tail = read_up_to(&file, tail_start, size - tail_start).map_err(io_err)?;
        if tail.iter().any(|&b| b != 0) {
            return Ok(Some("unknown".into()));
        }
    }
    Ok(None)
}

// ANCHOR: ensure-formatted
/// Create a `fs_type` filesystem on `device` unless it already has one.
///
/// Returns `Ok(true)` if it formatted now, `Ok(false)` if the requested
/// filesystem was already there, and [`FsError::Mismatch`] if anything
/// else is on the device (including ext3 when ext4 is requested: we do not
/// upgrade filesystems behind the user's back).
pub fn ensure_formatted(device: &Path, fs_type: &str) -> Result<bool, FsError> {
    let wanted = validate_fs_type(fs_type)?;
    match probe(device)? {
        Some(found) if found == wanted => {
            debug!(device = %device.display(), fs_type = wanted, "already formatted");
            Ok(false)
        }
        Some(found) => {
            Err(FsError::Mismatch { device: device.to_path_buf(), found, wanted: wanted.to_string() })
        }
        None => {
            let dev = device.as_os_str().to_string_lossy();
            match wanted {
                // -F: no interactive questions; -m 0: no blocks reserved for
                // root, so the volume offers the capacity that was requested.
                "ext4" | "ext3" => run(&format!("mkfs.{wanted}"), &["-F", "-q", "-m", "0", &dev], wanted)?,
                // No -f: mkfs.xfs then refuses to overwrite a signature we
                // might have missed, a second line of defence.
                "xfs" => run("mkfs.xfs", &["-q", &dev], wanted)?,
                other => return Err(FsError::Unsupported(other.to_string())),
            }
            info!(device = %device.display(), fs_type = wanted, "formatted device");
            Ok(true)
        }
    }
}
// ANCHOR_END: ensure-formatted

// ANCHOR: fs-grow
/// Grow the filesystem to fill its (already enlarged) device, online.
///
/// ext: `resize2fs <device>`; xfs: `xfs_growfs -d <mount_point>` (xfs only
/// grows while mounted). Call it while the volume is mounted: offline ext
/// growth would additionally require a fresh `e2fsck -f`. Online ext
/// resize needs `CAP_SYS_RESOURCE` (resize2fs then reports "Permission
/// denied", which the error points out).
pub fn grow(device: &Path, mount_point: &Path, fs_type: &str) -> Result<(), FsError> {
    let wanted = validate_fs_type(fs_type)?;
    match wanted {
        "ext4" | "ext3" => {
            run("resize2fs", &[&device.as_os_str().to_string_lossy()], wanted).map_err(|mut err| {
                // resize2fs only says "Permission denied" when the
                // online-resize ioctl is refused.
                if let FsError::CommandFailed { stderr, .. } = &mut err
                    && stderr.contains("Permission denied")
                {
                    stderr.push_str(" (online resize needs CAP_SYS_RESOURCE)");
                }
                err
            })?
        }
        "xfs" => run("xfs_growfs", &["-d", &mount_point.as_os_str().to_string_lossy()], wanted)?,
        other => return Err(FsError::Unsupported(other.to_string())),
    }
    info!(device = %device.display(), mount_point = %mount_point.display(), fs_type = wanted, "grew filesystem");
    Ok(())
}
// ANCHOR_END: fs-grow

/// Capacity and inode counts of the filesystem holding `path`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub total_bytes: u64,
    /// Free bytes usable by unprivileged users (excludes reserved blocks).
    pub available_bytes: u64,
    pub used_bytes: u64,
    pub total_inodes: u64,
    pub free_inodes: u64,
    pub used_inodes: u64,
}

/// `statvfs(path)` turned into byte and inode counts.
pub fn usage(path: &Path) -> Result<Usage, FsError> {
    let stat = nix::sys::statvfs::statvfs(path)
        .map_err(|source| FsError::Statvfs { path: path.to_path_buf(), source })?;
    // Block counts are in units of the fragment size (f_frsize).
    let unit = to_u64(stat.fragment_size());
    let blocks = to_u64(stat.blocks());
    let free = to_u64(stat.blocks_free());
    let total_inodes = to_u64(stat.files());
    let free_inodes = to_u64(stat.files_free());
    Ok(Usage {
        total_bytes: blocks.saturating_mul(unit),
        available_bytes: to_u64(stat.blocks_available()).saturating_mul(unit),
        used_bytes: blocks.saturating_sub(free).saturating_mul(unit),
        total_inodes,
        free_inodes,
        used_inodes: total_inodes.saturating_sub(free_inodes),
    })
}

// The statvfs field types differ between platforms.
fn to_u64(value: impl Into<u64>) -> u64 {
    value.into()
}

/// Run an external tool, capturing stderr for the error.
fn run(tool: &str, args: &[&str], fs_type: &str) -> Result<(), FsError> {
    let cmd = std::iter::once(tool).chain(args.iter().copied()).collect::<Vec<_>>().join(" ");
    debug!(%cmd, "running");
    let output = Command::new(resolve(tool)).args(args).stdin(Stdio::null()).output().map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound {
            FsError::ToolMissing {
                tool: tool.to_string(),
                package: package_of(tool),
                fs_type: fs_type.to_string(),
            }
        } else {
            FsError::Spawn { cmd: cmd.clone(), source }
        }
    })?;
    if output.status.success() {
        return Ok(());
    }
    // Some tools (resize2fs) explain failures on stdout.
    let mut stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
    if stderr.is_empty() {
        stderr = String::from_utf8_lossy(&output.stdout).trim().to_string();
    }
    Err(FsError::CommandFailed { cmd, status: output.status, stderr })
}

/// The tool itself if it is on `PATH`, else `/usr/sbin/<tool>` or
/// `/sbin/<tool>` when present: drivers often run with a minimal `PATH`
/// that lacks the sbin directories where mkfs lives.
fn resolve(tool: &str) -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()));
    if !on_path {
        for dir in ["/usr/sbin", "/sbin"] {
            let candidate = Path::new(dir).join(tool);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    PathBuf::from(tool)
}

fn package_of(tool: &str) -> &'static str {
    if tool.starts_with("xfs") || tool == "mkfs.xfs" { "xfsprogs" } else { "e2fsprogs" }
}

/// Read up to `len` bytes at `offset` (less at end of device).
fn read_up_to(file: &File, offset: u64, len: u64) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; usize::try_from(len).unwrap_or(usize::MAX)];
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    buf.truncate(filled);
    Ok(buf)
}

/// Size of a block device (or regular file, for images).
fn device_size(file: &File) -> io::Result<u64> {
    let meta = file.metadata()?;
    if std::os::unix::fs::FileTypeExt::is_block_device(&meta.file_type()) {
        crate::sys::blkgetsize64(file).map_err(io::Error::from)
    } else {
        Ok(meta.len())
    }
}

// ext2/3/4 superblock: starts at 1024; offsets below are absolute.
const EXT_MAGIC_OFFSET: usize = 1024 + 0x38;
const EXT_MAGIC: u16 = 0xEF53;
const EXT_COMPAT_OFFSET: usize = 1024 + 0x5C;
const EXT_INCOMPAT_OFFSET: usize = 1024 + 0x60;
const EXT_RO_COMPAT_OFFSET: usize = 1024 + 0x64;
const EXT_COMPAT_HAS_JOURNAL: u32 = 0x0004;
const EXT_INCOMPAT_JOURNAL_DEV: u32 = 0x0008;
/// incompat features ext3 understands: filetype, recover, meta_bg.
const EXT3_INCOMPAT_OK: u32 = 0x0002 | 0x0004 | 0x0010;
/// ro_compat features ext3 understands: sparse_super, large_file, btree_dir.
const EXT3_RO_COMPAT_OK: u32 = 0x0001 | 0x0002 | 0x0004;

/// Recognise a signature in the first bytes of a device.
fn identify(head: &[u8]) -> Option<&'static str> {
    let at = |offset: usize, magic: &[u8]| head.get(offset..offset + magic.len()) == Some(magic);
    let le32 = |offset: usize| {
        head.get(offset..offset + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).unwrap_or(0)
    };

    if at(EXT_MAGIC_OFFSET, &EXT_MAGIC.to_le_bytes()) {
        let compat = le32(EXT_COMPAT_OFFSET);
        let incompat = le32(EXT_INCOMPAT_OFFSET);
        let ro_compat = le32(EXT_RO_COMPAT_OFFSET);
        return Some(if incompat & EXT_INCOMPAT_JOURNAL_DEV != 0 {
            "jbd"
        } else if incompat & !EXT3_INCOMPAT_OK != 0 || ro_compat & !EXT3_RO_COMPAT_OK != 0 {
            "ext4"
        } else if compat & EXT_COMPAT_HAS_JOURNAL != 0 {
            "ext3"
        } else {
            "ext2"
        });
    }
    if at(0, b"XFSB") {
        return Some("xfs");
    }
    if at(0, b"LUKS\xba\xbe") {
        return Some("crypto_LUKS");
    }
    if at(65536 + 64, b"_BHRfS_M") {
        return Some("btrfs");
    }
    // The swap signature ends the first page, whatever the page size.
    for page in [4096usize, 8192, 16384, 65536] {
        if at(page - 10, b"SWAPSPACE2") || at(page - 10, b"SWAP-SPACE") {
            return Some("swap");
        }
    }
    if at(512, b"EFI PART") {
        return Some("gpt");
    }
    if at(510, &[0x55, 0xAA]) {
        return Some("dos");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext_superblock(compat: u32, incompat: u32, ro_compat: u32) -> Vec<u8> {
        let mut buf = vec![0u8; 4096];
        buf[EXT_MAGIC_OFFSET..EXT_MAGIC_OFFSET + 2].copy_from_slice(&EXT_MAGIC.to_le_bytes());
        buf[EXT_COMPAT_OFFSET..EXT_COMPAT_OFFSET + 4].copy_from_slice(&compat.to_le_bytes());
        buf[EXT_INCOMPAT_OFFSET..EXT_INCOMPAT_OFFSET + 4].copy_from_slice(&incompat.to_le_bytes());
        buf[EXT_RO_COMPAT_OFFSET..EXT_RO_COMPAT_OFFSET + 4].copy_from_slice(&ro_compat.to_le_bytes());
        buf
    }

    #[test]
    fn empty_fs_type_defaults_to_ext4() {
        assert_eq!(validate_fs_type("").unwrap(), "ext4");
    }

    #[test]
    fn supported_fs_types_are_accepted() {
        for t in SUPPORTED {
            assert_eq!(validate_fs_type(t).unwrap(), *t);
        }
    }

    #[test]
    fn unsupported_fs_types_are_rejected_by_name() {
        for bad in ["btrfs", "EXT4", "ext4 ", "vfat", "ext2"] {
            match validate_fs_type(bad) {
                Err(FsError::Unsupported(name)) => assert_eq!(name, bad),
                other => panic!("{bad}: {other:?}"),
            }
        }
        let text = FsError::Unsupported("ntfs".into()).to_string();
        assert!(text.contains("ext4, ext3, xfs"), "{text}");
    }

    #[test]
    fn ext_flavours_are_told_apart_by_feature_flags() {
        // mke2fs defaults: ext4 has extents (incompat 0x40) and more.
        assert_eq!(identify(&ext_superblock(0x3C, 0x2C2, 0x46B)), Some("ext4"));
        // ext3: has_journal + filetype + sparse_super/large_file.
        assert_eq!(identify(&ext_superblock(0x3C, 0x2, 0x3)), Some("ext3"));
        assert_eq!(identify(&ext_superblock(0x38, 0x2, 0x3)), Some("ext2"));
        assert_eq!(identify(&ext_superblock(0, 0x8, 0)), Some("jbd"));
    }

    #[test]
    fn other_signatures_are_recognised() {
        let mut xfs = vec![0u8; 4096];
        xfs[..4].copy_from_slice(b"XFSB");
        assert_eq!(identify(&xfs), Some("xfs"));

        let mut swap = vec![0u8; 4096];
        swap[4086..].copy_from_slice(b"SWAPSPACE2");
        assert_eq!(identify(&swap), Some("swap"));

        let mut mbr = vec![0u8; 4096];
        mbr[510] = 0x55;
        mbr[511] = 0xAA;
        assert_eq!(identify(&mbr), Some("dos"));

        assert_eq!(identify(&[0u8; 4096]), None);
        assert_eq!(identify(&[]), None);
    }

    #[test]
    fn probe_reports_blank_and_unknown_data_on_image_files() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("disk.img");
        let file = File::create(&image).unwrap();
        file.set_len(4 * BLANK_CHECK_BYTES).unwrap();
        assert_eq!(probe(&image).unwrap(), None);

        // Non-zero bytes near the end are not "blank" either.
        file.write_all_at(b"data", 4 * BLANK_CHECK_BYTES - 100).unwrap();
        assert_eq!(probe(&image).unwrap().as_deref(), Some("unknown"));
    }

    #[test]
    fn usage_reports_consistent_numbers() {
        let u = usage(Path::new("/")).unwrap();
        assert!(u.total_bytes > 0);
        assert!(u.used_bytes <= u.total_bytes);
        assert!(u.available_bytes <= u.total_bytes);
        assert_eq!(u.used_inodes, u.total_inodes - u.free_inodes);
    }

    #[test]
    fn missing_tools_are_reported_with_their_package() {
        let err = run("mkfs.definitely-not-here", &["/dev/null"], "xfs").unwrap_err();
        assert!(matches!(err, FsError::ToolMissing { .. }), "{err:?}");
        assert!(package_of("mkfs.xfs") == "xfsprogs" && package_of("resize2fs") == "e2fsprogs");
    }

    #[test]
    fn failed_commands_carry_their_stderr() {
        let err = run("sh", &["-c", "echo boom >&2; exit 3"], "ext4").unwrap_err();
        match err {
            FsError::CommandFailed { cmd, status, stderr } => {
                assert!(cmd.starts_with("sh -c"));
                assert_eq!(status.code(), Some(3));
                assert_eq!(stderr, "boom");
            }
            other => panic!("{other:?}"),
        }
    }
}
