//! Everything that can go wrong in the Controller layer, and the one place
//! that decides which CSI error code each case becomes.

use std::path::PathBuf;

use tonic::Status;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Missing or malformed input from the caller.
    #[error("{0}")]
    InvalidArgument(String),
    #[error("volume {0:?} does not exist")]
    VolumeNotFound(String),
    #[error("node {0:?} is not known to the backend")]
    NodeNotFound(String),
    /// The same name was created before with different arguments.
    #[error("volume {name:?} already exists with different arguments: {reason}")]
    NameConflict { name: String, reason: String },
    /// The volume is already published to this node, but differently.
    #[error("volume {volume:?} is already published to node {node:?} with {reason}")]
    PublishedDifferently { volume: String, node: String, reason: String },
    /// A single-node volume is published to another node.
    #[error("volume {volume:?} is published to node {other:?} and its access mode allows one node only")]
    PublishedElsewhere { volume: String, other: String },
    /// MULTI_NODE_SINGLE_WRITER allows one read-write node; the rest read.
    #[error(
        "volume {volume:?} already has a writer, node {writer:?}: MULTI_NODE_SINGLE_WRITER allows one, publish readonly"
    )]
    SecondWriter { volume: String, writer: String },
    #[error("volume {volume:?} is still published to {nodes:?}; unpublish it first")]
    StillPublished { volume: String, nodes: Vec<String> },
    #[error("node {node:?} already has its maximum of {max} volumes")]
    NodeFull { node: String, max: i64 },
    #[error("capacity out of range: {0}")]
    CapacityOutOfRange(String),
    #[error("cannot provision in the requested topology: {0}")]
    TopologyUnavailable(String),
    #[error("invalid starting_token {0:?}: start the listing again")]
    BadListToken(String),
    /// A part of the lab the trainee has not written yet (starters only).
    #[error("{0}")]
    NotWritten(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: corrupt record: {source}")]
    CorruptRecord { path: PathBuf, source: serde_json::Error },
}

impl Error {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}

// ANCHOR: error-to-status
impl From<Error> for Status {
    fn from(error: Error) -> Self {
        let message = error.to_string();
        match error {
            Error::InvalidArgument(_) => Status::invalid_argument(message),
            Error::VolumeNotFound(_) | Error::NodeNotFound(_) => Status::not_found(message),
            Error::NameConflict { .. } | Error::PublishedDifferently { .. } => {
                Status::already_exists(message)
            }
            Error::PublishedElsewhere { .. } | Error::SecondWriter { .. } | Error::StillPublished { .. } => {
                Status::failed_precondition(message)
            }
            Error::NodeFull { .. } | Error::TopologyUnavailable(_) => Status::resource_exhausted(message),
            Error::CapacityOutOfRange(_) => Status::out_of_range(message),
            Error::NotWritten(_) => Status::unimplemented(message),
            // The spec's answer to a token the plugin cannot resume from.
            Error::BadListToken(_) => Status::aborted(message),
            Error::Io { .. } | Error::CorruptRecord { .. } => {
                // The caller cannot fix these: log the cause once, here.
                tracing::error!(error = %message, "internal error");
                Status::internal(message)
            }
        }
    }
}
// ANCHOR_END: error-to-status

pub type Result<T, E = Error> = std::result::Result<T, E>;
