//! Mounts: option allowlist, mount/bind/unmount syscalls, and
//! `/proc/self/mountinfo` parsing.
//!
//! Mount options come from users (StorageClass `mountOptions`, PV
//! `mountOptions`), so they are checked against an allowlist and never passed
//! to the kernel verbatim.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use nix::sys::statvfs::{FsFlags, statvfs};
use tracing::{debug, info, warn};

const MOUNTINFO: &str = "/proc/self/mountinfo";

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("mount option {0:?} is not allowed")]
    UnknownOption(String),
    #[error("mount option {option:?} is refused: {reason}")]
    RejectedOption { option: String, reason: &'static str },
    #[error("mount {source_path} on {target} (type {fs_type}): {errno}")]
    Mount { source_path: PathBuf, target: PathBuf, fs_type: String, errno: Errno },
    #[error("bind mount {source_path} on {target}: {errno}")]
    Bind { source_path: PathBuf, target: PathBuf, errno: Errno },
    #[error("remount {target} read-only: {errno}")]
    RemountReadOnly { target: PathBuf, errno: Errno },
    #[error("unmount {target}: {errno}")]
    Unmount { target: PathBuf, errno: Errno },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Parsed, allowlisted mount options: syscall flags plus the filesystem
/// specific `data` string (joined with commas for the kernel).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountOptions {
    pub flags: MsFlags,
    pub data: Vec<String>,
}

impl Default for MountOptions {
    fn default() -> Self {
        Self { flags: MsFlags::empty(), data: Vec::new() }
    }
}

impl MountOptions {
    /// The `data` argument for mount(2), `None` when empty.
    pub fn data_string(&self) -> Option<String> {
        (!self.data.is_empty()).then(|| self.data.join(","))
    }
}

// ANCHOR: mount-option-allowlist
/// Options that map to `MS_*` flags. `rw` clears `MS_RDONLY`.
const FLAG_OPTIONS: &[(&str, MsFlags)] = &[
    ("ro", MsFlags::MS_RDONLY),
    ("rw", MsFlags::empty()),
    ("noatime", MsFlags::MS_NOATIME),
    ("nodiratime", MsFlags::MS_NODIRATIME),
    ("relatime", MsFlags::MS_RELATIME),
    ("strictatime", MsFlags::MS_STRICTATIME),
    ("nosuid", MsFlags::MS_NOSUID),
    ("nodev", MsFlags::MS_NODEV),
    ("noexec", MsFlags::MS_NOEXEC),
    ("sync", MsFlags::MS_SYNCHRONOUS),
    ("dirsync", MsFlags::MS_DIRSYNC),
    ("lazytime", MsFlags::MS_LAZYTIME),
];

/// Options handed to the filesystem as `data` (ext4 semantics; xfs rejects
/// the ext4-only ones itself with EINVAL, which surfaces as a mount error).
const DATA_OPTIONS: &[&str] = &[
    "discard",
    "nodiscard",
    "errors=remount-ro",
    "errors=continue",
    "data=ordered",
    "data=journal",
    "data=writeback",
    "barrier",
    "nobarrier",
    "noquota",
];

/// Known options we refuse on purpose, with the reason shown to the user.
const REJECTED_OPTIONS: &[(&str, &str)] =
    &[("errors=panic", "a filesystem error on one volume would crash the whole node")];
// ANCHOR_END: mount-option-allowlist

/// Parse user mount options against the allowlist.
///
/// Each entry may itself be comma separated (`"noatime,discard"`); blanks
/// are ignored, duplicates collapse, and for `ro`/`rw` the last one wins.
/// Anything not on the list is [`MountError::UnknownOption`]; `errors=panic`
/// is [`MountError::RejectedOption`].
pub fn parse_mount_options(options: &[String]) -> Result<MountOptions, MountError> {
    let mut parsed = MountOptions::default();
    for option in options.iter().flat_map(|o| o.split(',')).map(str::trim) {
        if option.is_empty() {
            continue;
        }
        if let Some((_, flag)) = FLAG_OPTIONS.iter().find(|(name, _)| *name == option) {
            match option {
                "rw" => parsed.flags.remove(MsFlags::MS_RDONLY),
                _ => parsed.flags.insert(*flag),
            }
        } else if DATA_OPTIONS.contains(&option) {
            if !parsed.data.iter().any(|d| d == option) {
                parsed.data.push(option.to_string());
            }
        } else if let Some((_, reason)) = REJECTED_OPTIONS.iter().find(|(name, _)| *name == option) {
            return Err(MountError::RejectedOption { option: option.to_string(), reason });
        } else {
            return Err(MountError::UnknownOption(option.to_string()));
        }
    }
    Ok(parsed)
}

/// Mount a block device with a filesystem. `target` must already exist.
pub fn mount_device(
    device: &Path,
    target: &Path,
    fs_type: &str,
    options: &MountOptions,
) -> Result<(), MountError> {
    let data = options.data_string();
    nix::mount::mount(Some(device), target, Some(fs_type), options.flags, data.as_deref()).map_err(
        |errno| MountError::Mount {
            source_path: device.to_path_buf(),
            target: target.to_path_buf(),
            fs_type: fs_type.to_string(),
            errno,
        },
    )?;
    info!(device = %device.display(), target = %target.display(), fs_type, flags = ?options.flags, data = ?data, "mounted");
    Ok(())
}

// ANCHOR: bind-mount
/// Bind-mount `source` onto `target` (directory onto directory, or a device
/// node onto a regular file for raw block volumes).
///
/// A plain `MS_BIND` ignores `MS_RDONLY`, so read-only takes a second
/// remount step. If that step fails the bind is undone: a writable mount
/// where a read-only one was requested must never be left behind.
///
/// Caveat for device nodes: a read-only mount protects the node, not the
/// device behind it; writes through it still reach the device. Read-only
/// raw block volumes need a read-only loop device (`loopdev::attach(.., true)`).
pub fn bind_mount(source: &Path, target: &Path, read_only: bool) -> Result<(), MountError> {
    nix::mount::mount(Some(source), target, None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(
        |errno| MountError::Bind { source_path: source.to_path_buf(), target: target.to_path_buf(), errno },
    )?;

    if read_only {
        // Keep the per-mount flags the bind inherited: inside a user
        // namespace the kernel refuses (EPERM) a remount that would drop
        // locked flags such as nosuid/nodev/noexec.
        let flags =
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | inherited_mount_flags(target);
        if let Err(errno) = nix::mount::mount(None::<&str>, target, None::<&str>, flags, None::<&str>) {
            if let Err(undo) = nix::mount::umount2(target, MntFlags::MNT_DETACH) {
                warn!(target = %target.display(), error = %undo, "could not undo bind mount after failed read-only remount");
            }
            return Err(MountError::RemountReadOnly { target: target.to_path_buf(), errno });
        }
    }
    info!(source = %source.display(), target = %target.display(), read_only, "bind mounted");
    Ok(())
}
// ANCHOR_END: bind-mount

/// Per-mount flags currently set on `target`, as `MS_*` flags.
fn inherited_mount_flags(target: &Path) -> MsFlags {
    let Ok(stat) = statvfs(target) else {
        return MsFlags::empty();
    };
    let vfs = stat.flags();
    [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ]
    .into_iter()
    .filter(|(st, _)| vfs.contains(*st))
    .fold(MsFlags::empty(), |acc, (_, ms)| acc | ms)
}

/// Unmount the topmost mount at `target`.
///
/// Returns `Ok(true)` if something was unmounted, `Ok(false)` if `target`
/// is not a mount point (EINVAL) or does not exist (ENOENT), which makes
/// unstage/unpublish naturally idempotent.
pub fn unmount(target: &Path) -> Result<bool, MountError> {
    match nix::mount::umount2(target, MntFlags::empty()) {
        Ok(()) => {
            info!(target = %target.display(), "unmounted");
            Ok(true)
        }
        Err(Errno::EINVAL | Errno::ENOENT) => {
            debug!(target = %target.display(), "not mounted, nothing to unmount");
            Ok(false)
        }
        Err(errno) => Err(MountError::Unmount { target: target.to_path_buf(), errno }),
    }
}

/// One line of `/proc/self/mountinfo` (see proc(5)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountInfo {
    pub mount_id: u32,
    pub parent_id: u32,
    /// `"major:minor"` of the filesystem's device (`st_dev`).
    pub major_minor: String,
    /// Path inside the filesystem that is mounted (not `/` for bind mounts).
    pub root: PathBuf,
    pub mount_point: PathBuf,
    /// Per-mount options (`rw`, `nosuid`, ...).
    pub options: Vec<String>,
    pub fs_type: String,
    /// `/dev/loop3`, `tmpfs`, ... (`none` is kept as-is).
    pub source: String,
    /// Per-superblock options (`rw`, `errors=remount-ro`, ...).
    pub super_options: Vec<String>,
}

/// Parse mountinfo text. Malformed lines are skipped (and logged).
pub fn parse_mountinfo(text: &str) -> Vec<MountInfo> {
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .filter_map(|line| {
            let parsed = parse_mountinfo_line(line);
            if parsed.is_none() {
                warn!(line, "skipping malformed mountinfo line");
            }
            parsed
        })
        .collect()
}

fn parse_mountinfo_line(line: &str) -> Option<MountInfo> {
    // id parent maj:min root mount_point options [optional...] - fstype source super
    let mut fields = line.split(' ');
    let mount_id = fields.next()?.parse().ok()?;
    let parent_id = fields.next()?.parse().ok()?;
    let major_minor = fields.next()?.to_string();
    let root = unescape_path(fields.next()?);
    let mount_point = unescape_path(fields.next()?);
    let options = split_options(fields.next()?);
    // Optional fields (shared:N, master:N, ...) end at a lone "-".
    fields.by_ref().find(|f| *f == "-")?;
    let fs_type = unescape(fields.next()?);
    let fs_type = String::from_utf8_lossy(&fs_type).into_owned();
    let source = String::from_utf8_lossy(&unescape(fields.next()?)).into_owned();
    let super_options = fields.next().map(split_options).unwrap_or_default();
    Some(MountInfo {
        mount_id,
        parent_id,
        major_minor,
        root,
        mount_point,
        options,
        fs_type,
        source,
        super_options,
    })
}

fn split_options(text: &str) -> Vec<String> {
    text.split(',')
        .filter(|o| !o.is_empty())
        .map(|o| String::from_utf8_lossy(&unescape(o)).into_owned())
        .collect()
}

fn unescape_path(field: &str) -> PathBuf {
    PathBuf::from(OsString::from_vec(unescape(field)))
}

/// Decode the kernel's octal escapes (`\040` space, `\011` tab, `\012`
/// newline, `\134` backslash). Bytes, because paths need not be UTF-8.
fn unescape(field: &str) -> Vec<u8> {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(digits) = bytes.get(i + 1..i + 4)
            && digits.iter().all(|d| (b'0'..=b'7').contains(d))
        {
            let value = digits.iter().fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
            if let Ok(byte) = u8::try_from(value) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// The mount table of this process's mount namespace.
pub fn read_mountinfo() -> Result<Vec<MountInfo>, MountError> {
    let text =
        fs::read_to_string(MOUNTINFO).map_err(|source| MountError::Io { path: MOUNTINFO.into(), source })?;
    Ok(parse_mountinfo(&text))
}

// ANCHOR: is-mount-point
/// The topmost mount at exactly `mount_point` (mountinfo lists mounts in
/// mount order, so the last match is the one visible to path lookups).
///
/// `mount_point` is canonicalised when it exists, because mountinfo only
/// holds resolved paths.
pub fn find_mount(mount_point: &Path) -> Result<Option<MountInfo>, MountError> {
    let wanted = mount_point.canonicalize().unwrap_or_else(|_| mount_point.to_path_buf());
    Ok(read_mountinfo()?.into_iter().rfind(|m| m.mount_point == wanted))
}

/// Whether something is mounted exactly at `path` (bind mounts included,
/// which a `st_dev` comparison with the parent would miss).
pub fn is_mount_point(path: &Path) -> Result<bool, MountError> {
    Ok(find_mount(path)?.is_some())
}
// ANCHOR_END: is-mount-point

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(options: &[&str]) -> Vec<String> {
        options.iter().map(|o| o.to_string()).collect()
    }

    #[test]
    fn allowlisted_flags_become_ms_flags() {
        let parsed = parse_mount_options(&strings(&[
            "ro",
            "noatime",
            "nodiratime",
            "nosuid",
            "nodev",
            "noexec",
            "sync",
            "dirsync",
            "lazytime",
        ]))
        .unwrap();
        assert_eq!(
            parsed.flags,
            MsFlags::MS_RDONLY
                | MsFlags::MS_NOATIME
                | MsFlags::MS_NODIRATIME
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV
                | MsFlags::MS_NOEXEC
                | MsFlags::MS_SYNCHRONOUS
                | MsFlags::MS_DIRSYNC
                | MsFlags::MS_LAZYTIME
        );
        assert!(parsed.data.is_empty());
        assert_eq!(parsed.data_string(), None);
    }

    #[test]
    fn data_options_are_kept_in_order_without_duplicates() {
        let parsed = parse_mount_options(&strings(&[
            "discard",
            "errors=remount-ro",
            "data=ordered",
            "discard",
            "noquota",
        ]))
        .unwrap();
        assert_eq!(parsed.flags, MsFlags::empty());
        assert_eq!(parsed.data_string().as_deref(), Some("discard,errors=remount-ro,data=ordered,noquota"));
    }

    #[test]
    fn comma_separated_strings_are_split() {
        let parsed = parse_mount_options(&strings(&["noatime,discard", " relatime , ,barrier"])).unwrap();
        assert_eq!(parsed.flags, MsFlags::MS_NOATIME | MsFlags::MS_RELATIME);
        assert_eq!(parsed.data, strings(&["discard", "barrier"]));
    }

    #[test]
    fn the_last_of_ro_and_rw_wins() {
        let parsed = parse_mount_options(&strings(&["ro", "rw"])).unwrap();
        assert!(!parsed.flags.contains(MsFlags::MS_RDONLY));
        let parsed = parse_mount_options(&strings(&["rw,ro"])).unwrap();
        assert!(parsed.flags.contains(MsFlags::MS_RDONLY));
    }

    #[test]
    fn no_options_means_no_flags_and_no_data() {
        assert_eq!(parse_mount_options(&[]).unwrap(), MountOptions::default());
        assert_eq!(parse_mount_options(&strings(&["", ","])).unwrap(), MountOptions::default());
    }

    #[test]
    fn unknown_options_are_rejected_by_name() {
        for bad in ["suid", "dev", "remount", "bind", "context=foo", "ro,loop", "uid=0", "DISCARD"] {
            match parse_mount_options(&strings(&[bad])) {
                Err(MountError::UnknownOption(name)) => {
                    assert!(bad.split(',').any(|b| b == name), "{bad}: {name}")
                }
                other => panic!("{bad}: expected UnknownOption, got {other:?}"),
            }
        }
    }

    #[test]
    fn errors_panic_is_refused_with_a_reason() {
        let err = parse_mount_options(&strings(&["noatime", "errors=panic"])).unwrap_err();
        assert!(matches!(err, MountError::RejectedOption { ref option, .. } if option == "errors=panic"));
        assert!(err.to_string().contains("crash"), "{err}");
    }

    const SAMPLE: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard
120 27 7:3 / /var/lib/kubelet/plugins/staging/my\\040vol rw,noatime shared:80 master:2 - ext4 /dev/loop3 rw,errors=remount-ro
121 120 7:3 /sub\\011dir /mnt/back\\134slash ro,relatime - ext4 /dev/loop3 rw
122 27 0:5 /loop3 /tmp/raw\\012file rw - devtmpfs udev rw,size=10k
";

    #[test]
    fn mountinfo_fields_are_parsed() {
        let mounts = parse_mountinfo(SAMPLE);
        assert_eq!(mounts.len(), 5);
        let proc = &mounts[0];
        assert_eq!(proc.mount_id, 22);
        assert_eq!(proc.parent_id, 27);
        assert_eq!(proc.major_minor, "0:21");
        assert_eq!(proc.root, Path::new("/"));
        assert_eq!(proc.mount_point, Path::new("/proc"));
        assert_eq!(proc.options, strings(&["rw", "relatime"]));
        assert_eq!(proc.fs_type, "proc");
        assert_eq!(proc.source, "proc");
        assert_eq!(proc.super_options, strings(&["rw"]));

        let root = &mounts[1];
        assert_eq!(root.fs_type, "ext4");
        assert_eq!(root.source, "/dev/vda");
        assert_eq!(root.super_options, strings(&["rw", "discard"]));
    }

    #[test]
    fn optional_fields_before_the_separator_are_skipped() {
        let mounts = parse_mountinfo(SAMPLE);
        let staged = &mounts[2];
        assert_eq!(staged.major_minor, "7:3");
        assert_eq!(staged.options, strings(&["rw", "noatime"]));
        assert_eq!(staged.fs_type, "ext4");
        assert_eq!(staged.source, "/dev/loop3");
        assert_eq!(staged.super_options, strings(&["rw", "errors=remount-ro"]));
    }

    #[test]
    fn octal_escapes_are_decoded() {
        let mounts = parse_mountinfo(SAMPLE);
        assert_eq!(mounts[2].mount_point, Path::new("/var/lib/kubelet/plugins/staging/my vol"));
        assert_eq!(mounts[3].root, Path::new("/sub\tdir"));
        assert_eq!(mounts[3].mount_point, Path::new("/mnt/back\\slash"));
        assert_eq!(mounts[4].mount_point, Path::new("/tmp/raw\nfile"));
    }

    #[test]
    fn broken_escapes_are_kept_literally() {
        assert_eq!(unescape("a\\04"), b"a\\04");
        assert_eq!(unescape("a\\xyz"), b"a\\xyz");
        assert_eq!(unescape("\\"), b"\\");
        // \777 does not fit in a byte.
        assert_eq!(unescape("\\777"), b"\\777");
    }

    #[test]
    fn malformed_lines_are_skipped() {
        let text = "garbage\n1 2 3:4 / /x rw no-separator\n5 6 7:8 / /ok rw - ext4 /dev/x rw\n";
        let mounts = parse_mountinfo(text);
        assert_eq!(mounts.len(), 1);
        assert_eq!(mounts[0].mount_point, Path::new("/ok"));
    }

    #[test]
    fn the_topmost_mount_is_found_for_a_real_path() {
        // "/" is always mounted; this needs no privileges.
        let root = find_mount(Path::new("/")).unwrap().expect("/ is mounted");
        assert_eq!(root.mount_point, Path::new("/"));
        assert!(is_mount_point(Path::new("/")).unwrap());
        assert!(!is_mount_point(Path::new("/definitely/not/here")).unwrap());
    }
}
