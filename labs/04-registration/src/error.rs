//! Errors of the registrar, and the one place that maps them to gRPC codes.

use std::path::PathBuf;

use tonic::Status;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag that cannot work, caught at start-up.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// One attempt to reach the driver failed (the registrar retries).
    #[error("the CSI driver at {endpoint} did not answer: {reason}")]
    DriverUnavailable { endpoint: String, reason: String },
    /// The driver answered GetPluginInfo with a name kubelet cannot use.
    #[error("the CSI driver at {endpoint} reported an unusable name {name:?}: {reason}")]
    InvalidDriverName { endpoint: String, name: String, reason: String },
    /// The registration socket could not be served.
    #[error("serving the registration socket: {0}")]
    Serve(#[from] lab01_identity::server::ServeError),
    /// kubelet answered NotifyRegistrationStatus with `plugin_registered: false`.
    #[error("kubelet rejected the registration: {0}")]
    RegistrationRejected(String),
    /// The gRPC server on the registration socket stopped on its own.
    #[error("the registration server stopped unexpectedly: {0}")]
    ServerStopped(String),
    /// The `/healthz` listener could not be opened.
    #[error("--http-endpoint {endpoint}: {source}")]
    Health { endpoint: String, source: std::io::Error },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        match error {
            Error::InvalidConfig(_) => Status::invalid_argument(error.to_string()),
            Error::RegistrationRejected(_) | Error::InvalidDriverName { .. } => {
                Status::failed_precondition(error.to_string())
            }
            Error::DriverUnavailable { .. } | Error::ServerStopped(_) => {
                Status::unavailable(error.to_string())
            }
            Error::Serve(_) | Error::Health { .. } | Error::Io { .. } => {
                tracing::error!(%error, "registrar failure");
                Status::internal(error.to_string())
            }
        }
    }
}
