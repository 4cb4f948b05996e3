//! Errors of the Identity layer, and the one place that maps them to gRPC codes.

use tonic::Status;

// ANCHOR: identity-error
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid driver name {name:?}: {reason}")]
    InvalidDriverName { name: String, reason: &'static str },
    #[error("invalid vendor version {0:?}: it must not be empty")]
    InvalidVersion(String),
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        match error {
            // Both are configuration mistakes caught at start-up; if one ever
            // reaches a caller it is the plugin's fault, not the caller's.
            Error::InvalidDriverName { .. } | Error::InvalidVersion(_) => {
                tracing::error!(%error, "misconfigured plugin");
                Status::internal(error.to_string())
            }
        }
    }
}
// ANCHOR_END: identity-error
