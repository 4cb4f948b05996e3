//! `/healthz`: the registrar is healthy while kubelet could register it.
//!
//! That means: the registration socket exists *and* answers GetInfo. A
//! socket deleted by hand, or a server that stopped answering, makes the
//! check fail, so the Pod's livenessProbe restarts the container and a
//! fresh socket is served (node-driver-registrar checks the same).

use std::net::SocketAddr;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use lab01_identity::client::connect;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::pluginregistration::registration_client::RegistrationClient;
use crate::pluginregistration::{InfoRequest, PluginInfo};
use crate::registrar::Status;

/// `:9809` means every interface, as in Go's `net.Listen`.
pub fn listen_address(endpoint: &str) -> String {
    match endpoint.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => endpoint.to_owned(),
    }
}

// ANCHOR: check-registration-socket
/// Healthy means: `socket` is a unix socket and answers GetInfo in time.
pub async fn check_registration_socket(socket: &Path, timeout: Duration) -> Result<PluginInfo, String> {
    let meta = std::fs::symlink_metadata(socket)
        .map_err(|e| format!("registration socket {}: {e}", socket.display()))?;
    if !meta.file_type().is_socket() {
        return Err(format!("{} is not a socket", socket.display()));
    }
    let call = async {
        let channel = connect(&socket.display().to_string()).await.map_err(|e| e.to_string())?;
        RegistrationClient::new(channel)
            .get_info(InfoRequest {})
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| format!("GetInfo on {}: {}", socket.display(), status.message()))
    };
    tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| format!("GetInfo on {} did not answer within {timeout:?}", socket.display()))?
}
// ANCHOR_END: check-registration-socket

#[derive(Clone)]
struct Probe {
    status: watch::Receiver<Status>,
    timeout: Duration,
}

async fn healthz(State(probe): State<Probe>) -> (StatusCode, String) {
    let socket = probe.status.borrow().socket.clone();
    let Some(socket) = socket else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "no registration socket yet: still waiting for the CSI driver\n".to_owned(),
        );
    };
    match check_registration_socket(&socket, probe.timeout).await {
        Ok(info) => (StatusCode::OK, format!("ok: {} served on {}\n", info.name, socket.display())),
        Err(reason) => {
            tracing::warn!(%reason, "health check failed");
            (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n"))
        }
    }
}

/// The `/healthz` HTTP server, running in the background.
pub struct HealthServer {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl HealthServer {
    /// Listens on `endpoint` (`host:port` or `:port`; port 0 picks a free one).
    pub async fn start(endpoint: &str, status: watch::Receiver<Status>, timeout: Duration) -> Result<Self> {
        let health_error = |source| Error::Health { endpoint: endpoint.to_owned(), source };
        let listener = TcpListener::bind(listen_address(endpoint)).await.map_err(health_error)?;
        let addr = listener.local_addr().map_err(health_error)?;
        let app = Router::new().route("/healthz", get(healthz)).with_state(Probe { status, timeout });
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
        });
        tracing::info!(%addr, "serving /healthz");
        Ok(Self { addr, stop, task })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub async fn stop(self) {
        let Self { stop, mut task, .. } = self;
        let _ = stop.send(());
        match tokio::time::timeout(Duration::from_secs(5), &mut task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "the health server failed"),
            Ok(Err(e)) => tracing::warn!(error = %e, "the health server panicked"),
            Err(_) => {
                tracing::warn!("the health server did not stop in time; dropping it");
                task.abort();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_port_listens_on_every_interface() {
        assert_eq!(listen_address(":9809"), "0.0.0.0:9809");
        assert_eq!(listen_address("127.0.0.1:0"), "127.0.0.1:0");
    }

    #[tokio::test]
    async fn a_missing_socket_is_unhealthy() {
        let dir = tempfile::tempdir().unwrap();
        let err = check_registration_socket(&dir.path().join("x-reg.sock"), Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(err.contains("x-reg.sock"), "{err}");
    }
}
