//! The backend: a directory that plays the storage system (a SAN for block
//! volumes, an NFS server for file volumes). On kind, the same host directory
//! is shared into every node, so every node sees the same volumes.
//!
//! ```text
//! <backend>/backend-id                 which storage system this is (topology)
//! <backend>/nodes/<node-id>.json       hosts that joined the storage network
//! <backend>/volumes/<id>/volume.json   the volume's record, attachments included
//! <backend>/volumes/<id>/disk.img      a block volume: a sparse image file
//! <backend>/volumes/<id>/data/         a file volume: a shared directory
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::state::{read_json, write_json_atomic};

/// The two kinds of volume, chosen by the StorageClass parameter `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VolumeKind {
    /// A sparse image file: attached (ControllerPublish), formatted on first
    /// stage, one node at a time.
    Block,
    /// A directory: no attach, no format, many nodes at once. Its capacity is
    /// recorded but not enforced.
    File,
}

impl VolumeKind {
    pub fn parse(value: &str) -> Result<Self> {
        match value {
            "" | "block" => Ok(Self::Block),
            "file" => Ok(Self::File),
            other => Err(Error::InvalidArgument(format!(
                "parameter type={other:?} is unknown; use \"block\" or \"file\""
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Block => "block",
            Self::File => "file",
        }
    }
}

/// One node's attachment of a volume: the backend's "LUN mapping".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub readonly: bool,
    /// The CSI access mode name, e.g. `SINGLE_NODE_WRITER`.
    pub access_mode: String,
}

/// What the backend knows about one volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRecord {
    pub id: String,
    pub name: String,
    pub kind: VolumeKind,
    pub capacity_bytes: i64,
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
    /// Attachments by node id.
    #[serde(default)]
    pub attachments: BTreeMap<String, Attachment>,
}

/// A host that joined the storage network (the node plugin registers it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub node_id: String,
    /// How many volumes may be attached to it at once (0: no limit).
    #[serde(default)]
    pub max_volumes: i64,
}

#[derive(Debug, Clone)]
pub struct Backend {
    root: PathBuf,
    id: String,
}

const RECORD: &str = "volume.json";
const IMAGE: &str = "disk.img";
const DATA: &str = "data";
const CREATING: &str = ".creating-";
const DELETING: &str = ".deleting-";

impl Backend {
    /// Opens (and on first use, initialises) the backend at `root`.
    pub fn open(root: &Path) -> Result<Self> {
        for dir in [root.to_owned(), root.join("volumes"), root.join("nodes")] {
            std::fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
        }
        let backend = Self { root: root.to_owned(), id: Self::load_or_create_id(root)? };
        backend.remove_interrupted_operations()?;
        Ok(backend)
    }

    /// The backend's identity. Nodes that share this directory share this id,
    /// so it is what topology segments name.
    fn load_or_create_id(root: &Path) -> Result<String> {
        let path = root.join("backend-id");
        if let Ok(id) = std::fs::read_to_string(&path) {
            return Ok(id.trim().to_owned());
        }
        let id = format!("san-{:08x}", std::process::id() ^ nanos());
        // `create_new` wins only once, even when two plugins start together.
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut file) => {
                use std::io::Write;
                file.write_all(id.as_bytes()).and_then(|()| file.sync_all()).map_err(Error::io(&path))?;
                Ok(id)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Ok(std::fs::read_to_string(&path).map_err(Error::io(&path))?.trim().to_owned())
            }
            Err(e) => Err(Error::io(&path)(e)),
        }
    }

    /// A crash can leave a half-created or half-deleted volume behind under a
    /// hidden name; neither is a volume anybody was told about.
    fn remove_interrupted_operations(&self) -> Result<()> {
        let dir = self.root.join("volumes");
        for entry in std::fs::read_dir(&dir).map_err(Error::io(&dir))? {
            let entry = entry.map_err(Error::io(&dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(CREATING) || name.starts_with(DELETING) {
                tracing::warn!(leftover = %name, "removing an interrupted create or delete");
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        Ok(())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn volume_dir(&self, id: &str) -> PathBuf {
        self.root.join("volumes").join(id)
    }

    /// Where a block volume's image lives.
    pub fn image_path(&self, id: &str) -> PathBuf {
        self.volume_dir(id).join(IMAGE)
    }

    /// Where a file volume's data lives.
    pub fn data_dir(&self, id: &str) -> PathBuf {
        self.volume_dir(id).join(DATA)
    }

    /// The image or directory that holds the volume's data.
    pub fn data_path(&self, record: &VolumeRecord) -> PathBuf {
        match record.kind {
            VolumeKind::Block => self.image_path(&record.id),
            VolumeKind::File => self.data_dir(&record.id),
        }
    }

    pub fn load(&self, id: &str) -> Result<Option<VolumeRecord>> {
        read_json(&self.volume_dir(id).join(RECORD))
    }

    /// Loads a volume that must exist.
    pub fn get(&self, id: &str) -> Result<VolumeRecord> {
        self.load(id)?.ok_or_else(|| Error::VolumeNotFound(id.to_owned()))
    }

    pub fn save(&self, record: &VolumeRecord) -> Result<()> {
        write_json_atomic(&self.volume_dir(&record.id).join(RECORD), record)
    }

    // ANCHOR: backend-create
    /// Creates the volume's data and record under a hidden name, then renames
    /// the whole directory into place: a crash never leaves a volume that has
    /// a record but no data, or data but no record.
    pub fn create(&self, record: &VolumeRecord) -> Result<()> {
        let staging = self.root.join("volumes").join(format!("{CREATING}{}", record.id));
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir(&staging).map_err(Error::io(&staging))?;
        // TODO(lab02): Create the data: for a block volume a sparse file of
        // `record.capacity_bytes` (`File::create` + `set_len`), for a file
        // volume the `DATA` directory. Then write the record into `staging`.
        // ANCHOR: solution
        match record.kind {
            VolumeKind::Block => {
                let image = staging.join(IMAGE);
                let file = std::fs::File::create(&image).map_err(Error::io(&image))?;
                // set_len on an empty file makes it sparse: no blocks are
                // written until the filesystem on it writes them.
                file.set_len(record.capacity_bytes as u64).map_err(Error::io(&image))?;
                file.sync_all().map_err(Error::io(&image))?;
            }
            VolumeKind::File => {
                let data = staging.join(DATA);
                std::fs::create_dir(&data).map_err(Error::io(&data))?;
            }
        }
        write_json_atomic(&staging.join(RECORD), record)?;
        // ANCHOR_END: solution
        let target = self.volume_dir(&record.id);
        std::fs::rename(&staging, &target).map_err(Error::io(&target))?;
        sync_dir(&self.root.join("volumes"))
    }
    // ANCHOR_END: backend-create

    /// Deletes the volume's record and data. `Ok(false)` if it did not exist.
    pub fn delete(&self, id: &str) -> Result<bool> {
        let dir = self.volume_dir(id);
        if !dir.exists() {
            return Ok(false);
        }
        // Rename first, so the volume disappears at once even if removing
        // a large directory tree is interrupted.
        let doomed = self.root.join("volumes").join(format!("{DELETING}{id}"));
        std::fs::rename(&dir, &doomed).map_err(Error::io(&dir))?;
        sync_dir(&self.root.join("volumes"))?;
        std::fs::remove_dir_all(&doomed).map_err(Error::io(&doomed))?;
        Ok(true)
    }

    /// Every volume, sorted by id.
    pub fn list(&self) -> Result<Vec<VolumeRecord>> {
        let dir = self.root.join("volumes");
        let mut records = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(Error::io(&dir))? {
            let entry = entry.map_err(Error::io(&dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            if let Some(record) = self.load(&name)? {
                records.push(record);
            }
        }
        records.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(records)
    }

    /// Grows a block volume's image; the node then grows the loop device and
    /// the filesystem (NodeExpandVolume).
    pub fn grow_image(&self, id: &str, capacity_bytes: i64) -> Result<()> {
        let image = self.image_path(id);
        let file = std::fs::OpenOptions::new().write(true).open(&image).map_err(Error::io(&image))?;
        let current = file.metadata().map_err(Error::io(&image))?.len();
        if (capacity_bytes as u64) > current {
            file.set_len(capacity_bytes as u64).map_err(Error::io(&image))?;
            file.sync_all().map_err(Error::io(&image))?;
        }
        Ok(())
    }

    /// Whether the volume's data is still there (for volume health).
    pub fn data_present(&self, record: &VolumeRecord) -> bool {
        let path = self.data_path(record);
        match record.kind {
            VolumeKind::Block => path.is_file(),
            VolumeKind::File => path.is_dir(),
        }
    }

    pub fn register_node(&self, node: &NodeRecord) -> Result<()> {
        write_json_atomic(&self.root.join("nodes").join(format!("{}.json", node.node_id)), node)
    }

    pub fn node(&self, node_id: &str) -> Result<Option<NodeRecord>> {
        read_json(&self.root.join("nodes").join(format!("{node_id}.json")))
    }

    /// Free bytes on the backend's filesystem.
    pub fn available_bytes(&self) -> Result<i64> {
        let stat = nix::sys::statvfs::statvfs(&self.root)
            .map_err(|e| Error::io(&self.root)(std::io::Error::from(e)))?;
        Ok((stat.blocks_available() as u64).saturating_mul(stat.fragment_size() as u64) as i64)
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(Error::io(dir))
}

fn nanos() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, kind: VolumeKind) -> VolumeRecord {
        VolumeRecord {
            id: id.into(),
            name: id.into(),
            kind,
            capacity_bytes: 1 << 20,
            parameters: Default::default(),
            attachments: Default::default(),
        }
    }

    #[test]
    fn a_block_volume_is_a_sparse_image_of_the_requested_size() {
        let dir = tempfile::tempdir().unwrap();
        let backend = Backend::open(dir.path()).unwrap();
        backend.create(&record("v1", VolumeKind::Block)).unwrap();
        let meta = std::fs::metadata(backend.image_path("v1")).unwrap();
        assert_eq!(meta.len(), 1 << 20);
        use std::os::unix::fs::MetadataExt;
        assert!(meta.blocks() * 512 < meta.len(), "the image should be sparse");
        assert_eq!(backend.get("v1").unwrap().kind, VolumeKind::Block);
    }

    #[test]
    fn the_backend_id_is_stable_across_opens() {
        let dir = tempfile::tempdir().unwrap();
        let first = Backend::open(dir.path()).unwrap().id().to_owned();
        assert_eq!(Backend::open(dir.path()).unwrap().id(), first);
    }

    #[test]
    fn interrupted_creates_are_cleaned_up_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let backend = Backend::open(dir.path()).unwrap();
        std::fs::create_dir(dir.path().join("volumes/.creating-v9")).unwrap();
        Backend::open(dir.path()).unwrap();
        assert!(!dir.path().join("volumes/.creating-v9").exists());
        assert!(backend.list().unwrap().is_empty());
    }

    #[test]
    fn deleting_twice_reports_whether_something_was_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let backend = Backend::open(dir.path()).unwrap();
        backend.create(&record("v1", VolumeKind::File)).unwrap();
        assert!(backend.delete("v1").unwrap());
        assert!(!backend.delete("v1").unwrap());
    }
}
