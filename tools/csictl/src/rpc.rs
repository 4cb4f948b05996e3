//! One connection to a plugin, with a deadline on every call.

use std::future::Future;
use std::time::{Duration, Instant};

use lab01_identity::csi::controller_client::ControllerClient;
use lab01_identity::csi::identity_client::IdentityClient;
use lab01_identity::csi::node_client::NodeClient;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// Clients for the three services, sharing one HTTP/2 connection.
#[derive(Debug, Clone)]
pub struct Csi {
    pub identity: IdentityClient<Channel>,
    pub controller: ControllerClient<Channel>,
    pub node: NodeClient<Channel>,
    pub timeout: Duration,
}

impl Csi {
    pub async fn connect(endpoint: &str, timeout: Duration) -> anyhow::Result<Self> {
        // The most common trainee mistake gets a plain answer instead of a
        // transport error chain.
        let path = lab01_identity::client::parse_endpoint(endpoint)?;
        if !path.exists() {
            anyhow::bail!(
                "no socket at {} (is the plugin running? set --endpoint or CSI_ENDPOINT)",
                path.display()
            );
        }
        let channel = match tokio::time::timeout(timeout, lab01_identity::client::connect(endpoint)).await {
            Ok(result) => result?,
            Err(_) => anyhow::bail!("no connection to {endpoint} within {timeout:?}"),
        };
        Ok(Self {
            identity: IdentityClient::new(channel.clone()),
            controller: ControllerClient::new(channel.clone()),
            node: NodeClient::new(channel),
            timeout,
        })
    }

    /// Wraps a message in a request that tells the server our deadline.
    pub fn req<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.set_timeout(self.timeout);
        request
    }

    /// Awaits a call, enforcing the deadline on our side too: a plugin stuck
    /// in a syscall would otherwise hang csictl forever.
    pub async fn call<T>(
        &self,
        call: impl Future<Output = Result<Response<T>, Status>>,
    ) -> Result<T, Status> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result.map(Response::into_inner),
            Err(_) => Err(Status::deadline_exceeded(format!(
                "no answer within {:?} (csictl --timeout)",
                self.timeout
            ))),
        }
    }

    /// Like [`Csi::call`], also returning how long the call took.
    pub async fn timed<T>(
        &self,
        call: impl Future<Output = Result<Response<T>, Status>>,
    ) -> (Result<T, Status>, Duration) {
        let start = Instant::now();
        let result = self.call(call).await;
        (result, start.elapsed())
    }
}

/// `error: code=NotFound message=...`: the one-line form scripts grep for.
pub fn status_line(status: &Status) -> String {
    format!("code={:?} message={}", status.code(), status.message())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_use_code_names_without_spaces() {
        assert_eq!(
            status_line(&Status::not_found("volume v1 does not exist")),
            "code=NotFound message=volume v1 does not exist"
        );
        assert_eq!(status_line(&Status::failed_precondition("busy")), "code=FailedPrecondition message=busy");
        assert!(status_line(&Status::invalid_argument("x")).starts_with("code=InvalidArgument "));
    }
}
