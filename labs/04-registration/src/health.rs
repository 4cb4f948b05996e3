//! `/healthz`: the registrar is healthy while kubelet could register it.
//!
//! That means what node-driver-registrar's `/healthz` checks: the
//! registration socket exists, *and* it answers GetInfo with the name of
//! our driver. A socket deleted by hand, a server that stopped answering, or
//! another plugin's server on our socket make the check fail, so the Pod's
//! livenessProbe restarts the container and a fresh socket is served. The
//! status codes are upstream's too: 404 when there is no socket, 500 for
//! every other failure, 200 when healthy.
//!
//! One difference on purpose: node-driver-registrar starts its HTTP server
//! only once the driver has answered, so before that a probe finds nothing
//! listening; ours listens from the start and answers 404 until the socket
//! is served, which says the same thing more clearly.

use std::net::SocketAddr;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
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

/// Why `/healthz` is not OK.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unhealthy {
    /// Nothing at the socket's path (or no socket served yet).
    #[error("registration socket does not exist: {0}")]
    NoSocket(String),
    /// Something is there, but it is not a socket, or cannot be looked at.
    #[error("{0}")]
    NotASocket(String),
    /// The socket is there but GetInfo failed or took too long.
    #[error("{0}")]
    NoAnswer(String),
    /// Another plugin answers on our socket.
    #[error("invalid driver name {got:?} from {socket}: expected {expected:?}")]
    WrongName { socket: PathBuf, expected: String, got: String },
}

impl Unhealthy {
    /// node-driver-registrar's status codes: 404 for a missing socket, 500
    /// for everything else.
    pub fn status_code(&self) -> StatusCode {
        match self {
            Self::NoSocket(_) => StatusCode::NOT_FOUND,
            Self::NotASocket(_) | Self::NoAnswer(_) | Self::WrongName { .. } => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }
}

// ANCHOR: check-registration-socket
/// Healthy means: `socket` is a unix socket and answers GetInfo in time,
/// with `driver_name`, the name the driver gave us.
pub async fn check_registration_socket(
    socket: &Path,
    driver_name: &str,
    timeout: Duration,
) -> Result<PluginInfo, Unhealthy> {
    match std::fs::symlink_metadata(socket) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Unhealthy::NoSocket(socket.display().to_string()));
        }
        Err(e) => {
            return Err(Unhealthy::NotASocket(format!("registration socket {}: {e}", socket.display())));
        }
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(Unhealthy::NotASocket(format!("{} exists but is not a socket", socket.display())));
        }
        Ok(_) => {}
    }
    let call = async {
        let channel = connect(&socket.display().to_string()).await.map_err(|e| e.to_string())?;
        RegistrationClient::new(channel)
            .get_info(InfoRequest {})
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| format!("GetInfo on {}: {}", socket.display(), status.message()))
    };
    let info = tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| {
            Unhealthy::NoAnswer(format!("GetInfo on {} did not answer within {timeout:?}", socket.display()))
        })?
        .map_err(Unhealthy::NoAnswer)?;
    if info.name != driver_name {
        return Err(Unhealthy::WrongName {
            socket: socket.to_owned(),
            expected: driver_name.to_owned(),
            got: info.name,
        });
    }
    Ok(info)
}
// ANCHOR_END: check-registration-socket

#[derive(Clone)]
struct Probe {
    status: watch::Receiver<Status>,
    timeout: Duration,
}

async fn healthz(State(probe): State<Probe>) -> (StatusCode, String) {
    let (socket, name) = {
        let status = probe.status.borrow();
        (status.socket.clone(), status.driver_name.clone())
    };
    let (Some(socket), Some(name)) = (socket, name) else {
        let reason = Unhealthy::NoSocket("none yet: still waiting for the CSI driver to answer".to_owned());
        return (reason.status_code(), format!("{reason}\n"));
    };
    match check_registration_socket(&socket, &name, probe.timeout).await {
        Ok(info) => (StatusCode::OK, format!("ok: {} answers GetInfo on {}\n", info.name, socket.display())),
        Err(reason) => {
            tracing::warn!(%reason, "health check failed");
            (reason.status_code(), format!("{reason}\n"))
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
    use crate::pluginregistration::registration_server::{Registration, RegistrationServer};
    use crate::pluginregistration::{RegistrationStatus, RegistrationStatusResponse};
    use crate::registration::csi_plugin_info;
    use lab01_identity::server::bind_unix_socket;
    use tokio_stream::wrappers::UnixListenerStream;
    use tonic::{Request, Response};

    /// A registration server of the test's own, so these tests do not
    /// depend on the lab's `RegistrationService` (a trainee's task).
    struct Answers(PluginInfo);

    #[tonic::async_trait]
    impl Registration for Answers {
        async fn get_info(&self, _: Request<InfoRequest>) -> Result<Response<PluginInfo>, tonic::Status> {
            Ok(Response::new(self.0.clone()))
        }
        async fn notify_registration_status(
            &self,
            _: Request<RegistrationStatus>,
        ) -> Result<Response<RegistrationStatusResponse>, tonic::Status> {
            Ok(Response::new(RegistrationStatusResponse {}))
        }
    }

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn a_bare_port_listens_on_every_interface() {
        assert_eq!(listen_address(":9809"), "0.0.0.0:9809");
        assert_eq!(listen_address("127.0.0.1:0"), "127.0.0.1:0");
    }

    #[tokio::test]
    async fn a_missing_socket_is_not_found_like_upstream_answers_404() {
        let dir = tempfile::tempdir().unwrap();
        let err = check_registration_socket(&dir.path().join("x-reg.sock"), "x", SECOND).await.unwrap_err();
        assert!(matches!(err, Unhealthy::NoSocket(_)), "{err:?}");
        assert_eq!(err.status_code(), StatusCode::NOT_FOUND);
        assert!(err.to_string().contains("x-reg.sock"), "{err}");
    }

    #[tokio::test]
    async fn a_plain_file_in_place_of_the_socket_is_a_500() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x-reg.sock");
        std::fs::write(&path, b"not a socket").unwrap();
        let err = check_registration_socket(&path, "x", SECOND).await.unwrap_err();
        assert!(matches!(err, Unhealthy::NotASocket(_)), "{err:?}");
        assert_eq!(err.status_code(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[tokio::test]
    async fn a_socket_nobody_serves_is_a_500() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x-reg.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let err = check_registration_socket(&path, "x", SECOND).await.unwrap_err();
        assert!(matches!(err, Unhealthy::NoAnswer(_)), "{err:?}");
        assert_eq!(err.status_code(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[tokio::test]
    async fn another_plugins_name_on_our_socket_is_a_500() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("csi.workshop.dev-reg.sock");
        let listener = bind_unix_socket(&path).unwrap();
        let service = Answers(csi_plugin_info("other.example.com", Path::new("/x/csi.sock")));
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(RegistrationServer::new(service))
                .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async {
                    let _ = stopped.await;
                }),
        );

        let err = check_registration_socket(&path, "csi.workshop.dev", SECOND).await.unwrap_err();
        assert_eq!(
            err,
            Unhealthy::WrongName {
                socket: path.clone(),
                expected: "csi.workshop.dev".into(),
                got: "other.example.com".into()
            }
        );
        assert_eq!(err.status_code(), StatusCode::INTERNAL_SERVER_ERROR);
        let info = check_registration_socket(&path, "other.example.com", SECOND).await.unwrap();
        assert_eq!(info.name, "other.example.com");

        let _ = stop.send(());
        let _ = server.await;
    }
}
