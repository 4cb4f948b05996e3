//! The FlexVolume call-out protocol (C28), for the same backend as the CSI
//! driver.
//!
//! kubelet runs `<plugin-dir>/csi.workshop.dev~flex/flex <command> <args>`
//! and reads one JSON object from stdout:
//!
//! ```text
//! flex init                              {"status":"Success","capabilities":{"attach":false}}
//! flex mount <mount-dir> <json-options>  {"status":"Success"}
//! flex unmount <mount-dir>               {"status":"Success"}
//! flex <anything else> ...               {"status":"Not supported","message":"..."}
//! ```
//!
//! With `attach: false` only kubelet calls the driver: kube-controller-manager
//! needs no binary, and `mount` does the whole job (attach the loop device,
//! format a blank image, mount) that CSI splits into ControllerPublish,
//! NodeStage and NodePublish.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lab02_controller::backend::{Backend, VolumeKind};
use lab03_node::{fs, loopdev, mount};
use serde::{Deserialize, Serialize};

/// Where the driver remembers what it mounted (`FLEX_WORKSHOP_STATE_DIR`
/// overrides it; kubelet passes no flags, so the default is what runs).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/csi-workshop/flex";
/// The backend directory when the PV's options do not name one.
pub const DEFAULT_BACKEND_DIR: &str = "/var/lib/csi-workshop/backend";
/// The driver name as PVs spell it: `<vendor>/<driver>`; the directory on
/// the node is `<vendor>~<driver>`.
pub const DRIVER_NAME: &str = "csi.workshop.dev/flex";

// ANCHOR: flex-reply
/// One reply, printed as a single JSON object on stdout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    pub status: Status,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Capabilities>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    Success,
    Failure,
    #[serde(rename = "Not supported")]
    NotSupported,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// `false`: no attach/detach call-outs, so no binary on the control plane.
    pub attach: bool,
}
// ANCHOR_END: flex-reply

impl Reply {
    pub fn success(message: impl Into<String>) -> Self {
        Self { status: Status::Success, message: message.into(), capabilities: None }
    }
    pub fn failure(message: impl Into<String>) -> Self {
        Self { status: Status::Failure, message: message.into(), capabilities: None }
    }
    pub fn not_supported(message: impl Into<String>) -> Self {
        Self { status: Status::NotSupported, message: message.into(), capabilities: None }
    }
    /// kubelet treats a non-zero exit as a failed call; "Not supported" is
    /// an answer, not a failure.
    pub fn exit_code(&self) -> i32 {
        match self.status {
            Status::Success | Status::NotSupported => 0,
            Status::Failure => 1,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FlexError {
    #[error("usage: {0}")]
    Usage(String),
    #[error("the options are not a JSON object of strings: {0}")]
    MalformedOptions(String),
    #[error("option {0:?} is required (set it in the PV's spec.flexVolume.options)")]
    MissingOption(&'static str),
    #[error("option {key:?}: {message}")]
    BadOption { key: &'static str, message: String },
    #[error("backend directory {0} does not exist")]
    NoBackend(PathBuf),
    #[error(
        "volume {0:?} does not exist in the backend (Flex volumes are pre-provisioned: flex-workshop create-volume)"
    )]
    UnknownVolume(String),
    #[error("volume {id:?} is a {actual} volume, but the options say type={wanted}")]
    KindMismatch { id: String, actual: &'static str, wanted: &'static str },
    #[error("{0} is already a mount point of something this driver did not mount")]
    ForeignMount(PathBuf),
    #[error("{0}")]
    Backend(#[from] lab02_controller::Error),
    #[error("{0}")]
    Loop(#[from] loopdev::LoopError),
    #[error("{0}")]
    Fs(#[from] fs::FsError),
    #[error("{0}")]
    Mount(#[from] mount::MountError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> FlexError + '_ {
    move |source| FlexError::Io { path: path.to_owned(), source }
}

// ANCHOR: flex-options
/// The options kubelet passes to `mount`: its own `kubernetes.io/*` keys
/// plus the PV's `spec.flexVolume.options`.
///
/// | key | from | meaning |
/// |---|---|---|
/// | `volumeId` | PV options, required | the backend volume's id |
/// | `type` | PV options, default `block` | `block` or `file` |
/// | `backendDir` | PV options, default `/var/lib/csi-workshop/backend` | the backend on the node |
/// | `kubernetes.io/fsType` | `spec.flexVolume.fsType`, default `ext4` | block only |
/// | `kubernetes.io/readwrite` | `ro` or `rw` | `ro`: read-only mount |
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlexOptions {
    pub volume_id: String,
    pub kind: VolumeKind,
    pub backend_dir: PathBuf,
    pub fs_type: String,
    pub read_only: bool,
}
// ANCHOR_END: flex-options

// ANCHOR: parse-options
pub fn parse_options(json: &str) -> Result<FlexOptions, FlexError> {
    let map: BTreeMap<String, String> =
        serde_json::from_str(json).map_err(|e| FlexError::MalformedOptions(e.to_string()))?;
    let get = |key: &str| map.get(key).map(String::as_str).filter(|v| !v.is_empty());
    // TODO(lab06): Read `volumeId` (required: FlexError::MissingOption),
    // `type` (VolumeKind::parse, default block), `backendDir` (default
    // DEFAULT_BACKEND_DIR), `kubernetes.io/fsType` (fs::validate_fs_type,
    // default ext4) and `kubernetes.io/readwrite` ("ro" means read-only).
    // ANCHOR: solution
    let volume_id = get("volumeId").ok_or(FlexError::MissingOption("volumeId"))?.to_owned();
    let kind = VolumeKind::parse(get("type").unwrap_or("block"))
        .map_err(|e| FlexError::BadOption { key: "type", message: e.to_string() })?;
    let fs_type = fs::validate_fs_type(get("kubernetes.io/fsType").unwrap_or(""))
        .map_err(|e| FlexError::BadOption { key: "kubernetes.io/fsType", message: e.to_string() })?
        .to_owned();
    let read_only = match get("kubernetes.io/readwrite").unwrap_or("rw") {
        "ro" => true,
        "rw" => false,
        other => {
            return Err(FlexError::BadOption {
                key: "kubernetes.io/readwrite",
                message: format!("{other:?} is neither ro nor rw"),
            });
        }
    };
    Ok(FlexOptions {
        volume_id,
        kind,
        backend_dir: PathBuf::from(get("backendDir").unwrap_or(DEFAULT_BACKEND_DIR)),
        fs_type,
        read_only,
    })
    // ANCHOR_END: solution => { let _ = (get, VolumeKind::Block); Err(FlexError::Usage("lab06: parse_options is not written yet".into())) }
}
// ANCHOR_END: parse-options

/// What `mount` did, so that `unmount` (which gets only the directory) can
/// undo it, loop device included.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MountRecord {
    pub mount_dir: PathBuf,
    pub volume_id: String,
    pub kind: VolumeKind,
    /// The image (block) or data directory (file) in the backend.
    pub source: PathBuf,
}

pub struct Driver {
    state_dir: PathBuf,
}

impl Driver {
    pub fn new(state_dir: &Path) -> Self {
        Self { state_dir: state_dir.to_owned() }
    }

    /// From the environment, as kubelet starts us.
    pub fn from_env() -> Self {
        Self::new(Path::new(
            &std::env::var("FLEX_WORKSHOP_STATE_DIR").unwrap_or_else(|_| DEFAULT_STATE_DIR.into()),
        ))
    }

    /// Runs one call-out. Never panics on bad input: every problem becomes a
    /// Failure reply.
    pub fn call(&self, args: &[String]) -> Reply {
        let Some(command) = args.first() else {
            return Reply::failure("usage: flex <command> [args...]");
        };
        let result = match (command.as_str(), &args[1..]) {
            ("init", []) => {
                return Reply {
                    status: Status::Success,
                    message: String::new(),
                    capabilities: Some(Capabilities { attach: false }),
                };
            }
            ("mount", [dir, options]) => self.mount(Path::new(dir), options),
            ("mount", _) => Err(FlexError::Usage("mount <mount-dir> <json-options>".into())),
            ("unmount", [dir]) => self.unmount(Path::new(dir)),
            ("unmount", _) => Err(FlexError::Usage("unmount <mount-dir>".into())),
            (other, _) => {
                // getvolumename included: kubelet then names the volume
                // after the PV, which is what we want.
                return Reply::not_supported(format!(
                    "{other} is not supported by {DRIVER_NAME} (attach: false)"
                ));
            }
        };
        match result {
            Ok(message) => Reply::success(message),
            Err(e) => Reply::failure(e.to_string()),
        }
    }

    fn record_path(&self, dir: &Path) -> PathBuf {
        // The mount dir as one file name: `%` and `/` escaped (kubelet's
        // mount dirs are far shorter than NAME_MAX).
        let name = dir.to_string_lossy().replace('%', "%25").replace('/', "%2F");
        self.state_dir.join("mounts").join(format!("{name}.json"))
    }

    pub fn record(&self, dir: &Path) -> Result<Option<MountRecord>, FlexError> {
        Ok(lab02_controller::state::read_json(&self.record_path(dir))?)
    }

    // ANCHOR: flex-mount
    /// Mounts the volume at `dir`. Idempotent; on failure nothing stays
    /// mounted or attached.
    pub fn mount(&self, dir: &Path, options_json: &str) -> Result<String, FlexError> {
        let options = parse_options(options_json)?;
        if !options.backend_dir.is_dir() {
            return Err(FlexError::NoBackend(options.backend_dir));
        }
        let backend = Backend::open(&options.backend_dir)?;
        let volume = backend
            .load(&options.volume_id)?
            .ok_or_else(|| FlexError::UnknownVolume(options.volume_id.clone()))?;
        if volume.kind != options.kind {
            return Err(FlexError::KindMismatch {
                id: volume.id,
                actual: volume.kind.as_str(),
                wanted: options.kind.as_str(),
            });
        }
        let source = backend.data_path(&volume);
        if mount::is_mount_point(dir).unwrap_or(false) {
            return match self.record(dir)? {
                Some(r) if r.volume_id == volume.id && r.source == source => {
                    Ok(format!("{} already mounted at {}", volume.id, dir.display()))
                }
                _ => Err(FlexError::ForeignMount(dir.to_owned())),
            };
        }
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        // The record first: an interrupted mount can then still be undone.
        let record = MountRecord {
            mount_dir: dir.to_owned(),
            volume_id: volume.id.clone(),
            kind: volume.kind,
            source: source.clone(),
        };
        let records = self.state_dir.join("mounts");
        std::fs::create_dir_all(&records).map_err(io_err(&records))?;
        lab02_controller::state::write_json_atomic(&self.record_path(dir), &record)?;
        let mounted = match volume.kind {
            VolumeKind::File => mount::bind_mount(&source, dir, options.read_only).map_err(FlexError::from),
            VolumeKind::Block => mount_image(&source, dir, &options),
        };
        if let Err(e) = mounted {
            let _ = lab02_controller::state::remove_file_if_exists(&self.record_path(dir));
            return Err(e);
        }
        Ok(format!("{} mounted at {}", volume.id, dir.display()))
    }
    // ANCHOR_END: flex-mount

    /// Unmounts `dir` and detaches the loop device behind it. Idempotent.
    pub fn unmount(&self, dir: &Path) -> Result<String, FlexError> {
        let record = self.record(dir)?;
        let unmounted = mount::unmount(dir)?;
        if let Some(record) = &record {
            if record.kind == VolumeKind::Block
                && let Some(device) = loopdev::find_by_backing_file(&record.source)?
            {
                loopdev::detach(&device)?;
            }
            lab02_controller::state::remove_file_if_exists(&self.record_path(dir))?;
        }
        Ok(if unmounted {
            format!("{} unmounted", dir.display())
        } else {
            format!("{} was not mounted", dir.display())
        })
    }
}

// ANCHOR: mount-image
/// Block: loop device, filesystem only if blank (never reformat), mount.
/// Undoes the attach if a later step fails.
fn mount_image(image: &Path, dir: &Path, options: &FlexOptions) -> Result<(), FlexError> {
    let attached_before = loopdev::find_by_backing_file(image)?.is_some();
    let device = loopdev::attach(image, options.read_only)?;
    let result = (|| {
        // TODO(lab06): Put a filesystem on the device only if it is blank
        // (fs::ensure_formatted), then mount it at `dir`
        // (mount::mount_device, with "ro" when options.read_only).
        // ANCHOR: solution
        fs::ensure_formatted(&device, &options.fs_type)?;
        let flags: Vec<String> = if options.read_only { vec!["ro".into()] } else { vec![] };
        mount::mount_device(&device, dir, &options.fs_type, &mount::parse_mount_options(&flags)?)?;
        Ok(())
        // ANCHOR_END: solution => Err(FlexError::Usage(format!("lab06: mounting {} is not written yet", device.display())))
    })();
    if result.is_err() && !attached_before {
        let _ = loopdev::detach(&device);
    }
    result
}
// ANCHOR_END: mount-image

/// `64Mi`, `1Gi`, `512Ki` or plain bytes.
pub fn parse_size(text: &str) -> Result<i64, String> {
    let (digits, shift) = match text {
        t if t.ends_with("Ki") => (&t[..t.len() - 2], 10),
        t if t.ends_with("Mi") => (&t[..t.len() - 2], 20),
        t if t.ends_with("Gi") => (&t[..t.len() - 2], 30),
        t => (t, 0),
    };
    let n: i64 = digits.parse().map_err(|_| format!("{text:?} is not a size like 64Mi"))?;
    n.checked_shl(shift)
        .filter(|v| *v > 0 && v >> shift == n)
        .ok_or_else(|| format!("{text:?} is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_take_defaults_for_everything_but_the_volume_id() {
        let o = parse_options(r#"{"volumeId":"vol-1","kubernetes.io/pod.name":"p"}"#).unwrap();
        assert_eq!(o.volume_id, "vol-1");
        assert_eq!(o.kind, VolumeKind::Block);
        assert_eq!(o.fs_type, "ext4");
        assert!(!o.read_only);
        assert_eq!(o.backend_dir, Path::new(DEFAULT_BACKEND_DIR));
    }

    #[test]
    fn options_are_validated() {
        let table = [
            ("not json", "not a JSON object"),
            (r#"{"type":"file"}"#, "\"volumeId\" is required"),
            (r#"{"volumeId":"v","type":"tape"}"#, "option \"type\""),
            (r#"{"volumeId":"v","kubernetes.io/fsType":"ntfs"}"#, "kubernetes.io/fsType"),
            (r#"{"volumeId":"v","kubernetes.io/readwrite":"maybe"}"#, "neither ro nor rw"),
        ];
        for (json, wanted) in table {
            let err = parse_options(json).unwrap_err().to_string();
            assert!(err.contains(wanted), "{json}: {err:?} should mention {wanted:?}");
        }
        let o = parse_options(
            r#"{"volumeId":"v","type":"file","kubernetes.io/readwrite":"ro","backendDir":"/b"}"#,
        )
        .unwrap();
        assert_eq!((o.kind, o.read_only, o.backend_dir), (VolumeKind::File, true, PathBuf::from("/b")));
    }

    #[test]
    fn replies_serialise_as_kubelet_reads_them() {
        let init = Driver::new(Path::new("/nonexistent")).call(&["init".into()]);
        assert_eq!(
            serde_json::to_string(&init).unwrap(),
            r#"{"status":"Success","capabilities":{"attach":false}}"#
        );
        let ns = Reply::not_supported("x");
        assert_eq!(serde_json::to_string(&ns).unwrap(), r#"{"status":"Not supported","message":"x"}"#);
        assert_eq!((ns.exit_code(), Reply::failure("y").exit_code()), (0, 1));
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("64Mi"), Ok(64 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("0").is_err());
    }
}
