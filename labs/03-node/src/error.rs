//! Everything that can go wrong in the Node layer, and the one place that
//! decides which CSI error code each case becomes.

use std::path::PathBuf;

use tonic::Status;

use crate::fs::FsError;
use crate::loopdev::LoopError;
use crate::mount::MountError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Errors shared with the Controller layer (validation, backend records).
    #[error(transparent)]
    Controller(#[from] lab02_controller::Error),
    #[error("{0}")]
    InvalidArgument(String),
    /// The capability asks for something this volume cannot do.
    #[error("{0}")]
    ExceedsCapabilities(String),
    #[error(
        "volume {volume:?} is already published at {other} and its access mode {mode} allows one target only"
    )]
    PublishedAtOtherTarget { volume: String, other: PathBuf, mode: String },
    #[error("volume {volume:?} is not attached to node {node:?}: ControllerPublishVolume must run first")]
    NotAttached { volume: String, node: String },
    #[error("volume {volume:?} is not staged at {path}: NodeStageVolume must run first")]
    NotStaged { volume: String, path: PathBuf },
    #[error("volume {volume:?} is already staged with {reason}")]
    StagedDifferently { volume: String, reason: String },
    #[error("volume {volume:?} is already published at {target} with {reason}")]
    PublishedDifferently { volume: String, target: PathBuf, reason: String },
    #[error("volume {volume:?} is still published at {targets:?}; unpublish it first")]
    StillPublished { volume: String, targets: Vec<String> },
    #[error("volume {volume:?} is not staged or published at {path}")]
    NotAtPath { volume: String, path: PathBuf },
    #[error(
        "the backend volume is {have} bytes, less than the {want} requested: ControllerExpandVolume must run first"
    )]
    NotExpandedYet { have: i64, want: i64 },
    #[error("volume {0:?} is attached read-only and has no filesystem yet; it cannot be formatted")]
    ReadOnlyBlank(String),
    #[error(
        "volume {0:?} is attached read-write: a read-only raw block publish needs a read-only attachment (ControllerPublishVolume with readonly, or a reader-only access mode)"
    )]
    ReadOnlyRawBlock(String),
    #[error(transparent)]
    Loop(#[from] LoopError),
    #[error(transparent)]
    Mount(#[from] MountError),
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

impl Error {
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}

// ANCHOR: node-error-to-status
impl From<Error> for Status {
    fn from(error: Error) -> Self {
        let message = error.to_string();
        match error {
            Error::Controller(inner) => inner.into(),
            Error::InvalidArgument(_) | Error::Mount(MountError::UnknownOption(_)) => {
                Status::invalid_argument(message)
            }
            Error::Mount(MountError::RejectedOption { .. }) | Error::Fs(FsError::Unsupported(_)) => {
                Status::invalid_argument(message)
            }
            Error::NotAtPath { .. } => Status::not_found(message),
            Error::StagedDifferently { .. } | Error::PublishedDifferently { .. } => {
                Status::already_exists(message)
            }
            // The caller skipped a step, or the disk holds something we must
            // not destroy: retrying the same call will not help.
            Error::NotAttached { .. }
            | Error::NotStaged { .. }
            | Error::ExceedsCapabilities(_)
            | Error::PublishedAtOtherTarget { .. }
            | Error::StillPublished { .. }
            | Error::ReadOnlyBlank(_)
            | Error::ReadOnlyRawBlock(_)
            | Error::Fs(FsError::Mismatch { .. }) => Status::failed_precondition(message),
            Error::NotExpandedYet { .. } => Status::out_of_range(message),
            Error::Loop(_) | Error::Mount(_) | Error::Fs(_) | Error::Io { .. } => {
                tracing::error!(error = %message, "internal error");
                Status::internal(message)
            }
        }
    }
}
// ANCHOR_END: node-error-to-status

pub type Result<T, E = Error> = std::result::Result<T, E>;
