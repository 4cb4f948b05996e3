//! Crash-safe persistence: a record is either the old version or the new one,
//! never half written.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

// ANCHOR: write-json-atomic
/// Writes `value` as JSON to `path` atomically: write a temporary file in the
/// same directory, fsync it, rename it over `path`, then fsync the directory
/// so the rename itself survives a power cut.
pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let dir = path.parent().expect("record paths have a parent");
    let bytes = serde_json::to_vec_pretty(value).expect("records always serialise");
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    // TODO(lab02): Write `bytes` to `tmp`, fsync it, rename it to `path` and
    // fsync `dir`. Hint: `File::create`, `sync_all`, `std::fs::rename`.
    // ANCHOR: solution
    let mut file = File::create(&tmp).map_err(Error::io(&tmp))?;
    file.write_all(&bytes).map_err(Error::io(&tmp))?;
    file.sync_all().map_err(Error::io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(Error::io(path))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(Error::io(dir))?;
    // ANCHOR_END: solution => std::fs::write(path, &bytes).map_err(Error::io(path))?;
    Ok(())
}
// ANCHOR_END: write-json-atomic

/// Reads a JSON record; `Ok(None)` when there is none.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| Error::CorruptRecord { path: path.to_owned(), source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path)(e)),
    }
}

/// Removes a file; a file that is already gone is fine.
pub fn remove_file_if_exists(path: &Path) -> Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io(path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_atomic_write_replaces_the_record_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rec.json");
        write_json_atomic(&path, &vec![1, 2]).unwrap();
        write_json_atomic(&path, &vec![3]).unwrap();
        assert_eq!(read_json::<Vec<i32>>(&path).unwrap(), Some(vec![3]));
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("rec.json")]);
    }

    #[test]
    fn a_missing_record_reads_as_none_and_a_corrupt_one_as_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rec.json");
        assert_eq!(read_json::<Vec<i32>>(&path).unwrap(), None);
        std::fs::write(&path, b"{not json").unwrap();
        assert!(matches!(read_json::<Vec<i32>>(&path), Err(Error::CorruptRecord { .. })));
    }
}
