//! What this node has staged and published, persisted so that a restarted
//! node plugin can still unpublish and unstage what its predecessor set up.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lab02_controller::backend::VolumeKind;
use lab02_controller::state::{read_json, remove_file_if_exists, write_json_atomic};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A volume staged on this node (one per volume).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Staged {
    pub staging_path: PathBuf,
    /// The loop device, for block volumes.
    pub device: Option<PathBuf>,
    /// Raw block access: the device is not mounted at the staging path.
    pub raw_block: bool,
    /// Empty for raw block and file volumes.
    pub fs_type: String,
    pub readonly: bool,
    pub mount_flags: Vec<String>,
    pub access_mode: String,
}

/// One bind mount of the volume into a pod (many per volume).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    pub readonly: bool,
    pub raw_block: bool,
    pub access_mode: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeVolume {
    pub volume_id: String,
    pub kind: VolumeKind,
    pub staged: Option<Staged>,
    /// Published targets, by target path.
    #[serde(default)]
    pub published: BTreeMap<PathBuf, Published>,
}

impl NodeVolume {
    pub fn new(volume_id: &str, kind: VolumeKind) -> Self {
        Self { volume_id: volume_id.to_owned(), kind, staged: None, published: BTreeMap::new() }
    }

    pub fn is_empty(&self) -> bool {
        self.staged.is_none() && self.published.is_empty()
    }
}

/// Records under `<state-dir>/volumes/<volume-id>.json`.
#[derive(Debug, Clone)]
pub struct NodeState {
    dir: PathBuf,
}

impl NodeState {
    pub fn open(state_dir: &Path) -> Result<Self> {
        let dir = state_dir.join("volumes");
        std::fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
        Ok(Self { dir })
    }

    fn path(&self, volume_id: &str) -> PathBuf {
        self.dir.join(format!("{volume_id}.json"))
    }

    pub fn load(&self, volume_id: &str) -> Result<Option<NodeVolume>> {
        Ok(read_json(&self.path(volume_id))?)
    }

    /// Saves the record, or removes it once nothing is staged or published.
    pub fn save(&self, volume: &NodeVolume) -> Result<()> {
        if volume.is_empty() {
            remove_file_if_exists(&self.path(&volume.volume_id))?;
        } else {
            write_json_atomic(&self.path(&volume.volume_id), volume)?;
        }
        Ok(())
    }

    pub fn list(&self) -> Result<Vec<NodeVolume>> {
        let mut volumes = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(Error::io(&self.dir))? {
            let name = entry.map_err(Error::io(&self.dir))?.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.strip_suffix(".json").filter(|n| !n.starts_with('.')) {
                volumes.extend(self.load(id)?);
            }
        }
        Ok(volumes)
    }
}
