//! The host side: list the discovery directory, classify each entry against
//! the mount table, measure the disks, and clean a released disk.

use std::fs;
use std::path::{Path, PathBuf};

use lab03_node::mount::MountInfo;

use super::decide::{Discovered, Disk, Entry, Refusal, classify};
use super::{Error, Result};

/// What one scan of the discovery directory found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scan {
    /// Mount points, with their capacity: one PV each.
    pub disks: Vec<Disk>,
    /// Everything else, with the reason.
    pub refused: Vec<Refused>,
}

/// An entry that does not become a PV.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    pub name: String,
    pub path: PathBuf,
    pub reason: Refusal,
}

/// The entries of `dir`, sorted by name, with canonical paths (mountinfo
/// holds resolved paths). Symlinks are not followed: they are refused.
pub fn entries(dir: &Path) -> Result<Vec<Entry>> {
    let io = |source| Error::Io { path: dir.to_path_buf(), source };
    let dir = dir.canonicalize().map_err(io)?;
    let mut entries = Vec::new();
    for item in fs::read_dir(&dir).map_err(io)? {
        let item = item.map_err(io)?;
        let file_type = item.file_type().map_err(io)?;
        entries.push(Entry {
            name: item.file_name().to_string_lossy().into_owned(),
            path: dir.join(item.file_name()),
            is_dir: file_type.is_dir(),
        });
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(entries)
}

// ANCHOR: scan
/// Lists `dir`, classifies each entry against `mounts` and measures each disk
/// with statvfs (the filesystem's total size becomes the PV's capacity).
pub fn scan(dir: &Path, mounts: &[MountInfo]) -> Result<Scan> {
    let mut found = Scan::default();
    for entry in entries(dir)? {
        match classify(&entry, mounts) {
            Discovered::Disk { name, path } => {
                let usage = lab03_node::fs::usage(&path)
                    .map_err(|e| Error::Usage { path: path.clone(), message: e.to_string() })?;
                found.disks.push(Disk { name, path, capacity_bytes: usage.total_bytes });
            }
            Discovered::Refused { name, path, reason } => found.refused.push(Refused { name, path, reason }),
        }
    }
    Ok(found)
}
// ANCHOR_END: scan

/// [`scan`] against this process's mount table.
pub fn scan_host(dir: &Path) -> Result<Scan> {
    let mounts = lab03_node::mount::read_mountinfo().map_err(|e| Error::Mounts(e.to_string()))?;
    scan(dir, &mounts)
}

// ANCHOR: clean-disk
/// Empties a released disk: removes everything inside `path`, but not `path`
/// itself, which is the mount point. Returns how many entries were removed.
pub fn clean_disk(path: &Path) -> Result<usize> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| Error::Io { path: p, source }
    };
    let mut removed = 0;
    for item in fs::read_dir(path).map_err(io(path))? {
        let item = item.map_err(io(path))?;
        let child = item.path();
        // file_type does not follow symlinks: a link is removed, not its target.
        if item.file_type().map_err(io(&child))?.is_dir() {
            fs::remove_dir_all(&child).map_err(io(&child))?;
        } else {
            fs::remove_file(&child).map_err(io(&child))?;
        }
        removed += 1;
    }
    Ok(removed)
}
// ANCHOR_END: clean-disk

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_refuses_plain_directories_and_files() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("plain")).unwrap();
        fs::write(dir.path().join("image.img"), b"").unwrap();
        let found = scan(dir.path(), &[]).unwrap();
        assert!(found.disks.is_empty());
        let reasons: Vec<(&str, Refusal)> =
            found.refused.iter().map(|r| (r.name.as_str(), r.reason)).collect();
        assert_eq!(reasons, [("image.img", Refusal::NotADirectory), ("plain", Refusal::NotAMountPoint)]);
    }

    #[test]
    fn scan_measures_a_mounted_entry() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("disk1")).unwrap();
        let path = dir.path().canonicalize().unwrap().join("disk1");
        // A fake mount table saying disk1 is a mount point; statvfs then
        // measures the filesystem the temp dir is on.
        let mounts = lab03_node::mount::parse_mountinfo(&format!(
            "99 1 7:3 / {} rw - ext4 /dev/loop3 rw\n",
            path.display()
        ));
        let found = scan(dir.path(), &mounts).unwrap();
        assert_eq!(found.disks.len(), 1);
        assert_eq!(found.disks[0].path, path);
        assert!(found.disks[0].capacity_bytes > 0);
    }

    #[test]
    fn clean_disk_empties_the_directory_but_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("a/b")).unwrap();
        fs::write(dir.path().join("a/b/file"), b"data").unwrap();
        fs::write(dir.path().join("top"), b"data").unwrap();
        std::os::unix::fs::symlink("/etc", dir.path().join("link")).unwrap();
        assert_eq!(clean_disk(dir.path()).unwrap(), 3);
        assert!(dir.path().is_dir());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
        assert!(Path::new("/etc").is_dir());
    }
}
