//! Serving gRPC on a unix socket the way kubelet and the sidecars expect.
//!
//! - `unix://` endpoints only: CSI plugins talk to their callers through a
//!   socket file in a shared directory, never over the network;
//! - a stale socket left by a crashed plugin is replaced, but a socket that a
//!   live plugin still answers on is not stolen;
//! - the socket is `0660`: only root and the socket's group may call us;
//! - SIGTERM or SIGINT stop the server gracefully and remove the socket.

use std::future::Future;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::Server;
use tonic::transport::server::Router;

use crate::client::{ConnectError, parse_endpoint};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Endpoint(#[from] ConnectError),
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    #[error("another plugin is already serving on {0}")]
    AlreadyServing(PathBuf),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> ServeError + '_ {
    move |source| ServeError::Io { path: path.to_owned(), source }
}

// ANCHOR: grpc-server
/// A tonic server that opens one `tracing` span per RPC. Handlers fill in the
/// `volume_id` field with [`record_volume_id`], so every log line of one call
/// carries the method and the volume it is about. Requests themselves are
/// never logged: their secrets maps would end up in the logs.
pub fn grpc_server() -> Server {
    Server::builder().trace_fn(|request| {
        tracing::info_span!(
            "rpc",
            method = request.uri().path().rsplit('/').next().unwrap_or_default(),
            volume_id = tracing::field::Empty,
        )
    })
}
// ANCHOR_END: grpc-server

/// Records the volume an RPC is about on the current RPC span.
pub fn record_volume_id(volume_id: &str) {
    tracing::Span::current().record("volume_id", volume_id);
}

// ANCHOR: bind-unix-socket
/// Binds the socket, replacing a stale socket file but never a live one.
pub fn bind_unix_socket(path: &Path) -> Result<UnixListener, ServeError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(ServeError::NotASocket(path.to_owned()));
        }
        Ok(_) => {
            // A plugin that still answers owns the socket. Nobody answering
            // means its owner died without cleaning up.
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(ServeError::AlreadyServing(path.to_owned()));
            }
            tracing::info!(socket = %path.display(), "removing stale socket");
            std::fs::remove_file(path).map_err(io_error(path))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error(path)(e)),
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io_error(parent))?;
    }
    let listener = UnixListener::bind(path).map_err(io_error(path))?;
    // Write permission on a socket is what lets a client connect. Until this
    // chmod the socket has the umask's mode (0755 under the usual 022: only
    // the owner may connect), so there is no moment when others can.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(io_error(path))?;
    Ok(listener)
}
// ANCHOR_END: bind-unix-socket

// ANCHOR: serve
/// Serves `router` on the `unix://` `endpoint` until `shutdown` completes,
/// then removes the socket.
pub async fn serve(
    router: Router,
    endpoint: &str,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let path = parse_endpoint(endpoint)?;
    let listener = bind_unix_socket(&path)?;
    tracing::info!(socket = %path.display(), "serving CSI");
    let result = router.serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown).await;
    // Remove the socket even when serving failed, so the next start is clean.
    match std::fs::remove_file(&path) {
        Ok(()) => tracing::info!(socket = %path.display(), "socket removed"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(socket = %path.display(), error = %e, "could not remove socket"),
    }
    Ok(result?)
}
// ANCHOR_END: serve

/// Completes on SIGTERM (what kubelet sends a container) or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
        _ = int.recv() => tracing::info!("SIGINT received, shutting down"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stale_socket_is_replaced_and_a_live_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("csi.sock");
        let live = bind_unix_socket(&path).unwrap();
        assert!(matches!(bind_unix_socket(&path), Err(ServeError::AlreadyServing(_))));
        drop(live); // the file stays behind, like after a crash
        assert!(path.exists());
        let _again = bind_unix_socket(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
    }

    #[test]
    fn a_regular_file_is_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("csi.sock");
        std::fs::write(&path, b"data").unwrap();
        assert!(matches!(bind_unix_socket(&path), Err(ServeError::NotASocket(_))));
        assert_eq!(std::fs::read(&path).unwrap(), b"data");
    }
}
