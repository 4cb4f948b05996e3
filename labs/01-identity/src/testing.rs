//! A real gRPC server on a real unix socket in a temporary directory, for the
//! labs' acceptance tests. Later labs use it too, so it lives in the library.

use std::path::{Path, PathBuf};

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic::transport::server::Router;

use crate::server::{self, ServeError};

/// A server running in the background on `<dir>/csi.sock`.
pub struct TestServer {
    socket: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServeError>>>,
}

impl TestServer {
    /// Starts `router` on `<dir>/csi.sock` and waits until it accepts calls.
    pub async fn start(router: Router, dir: &Path) -> Self {
        let socket = dir.join("csi.sock");
        let endpoint = format!("unix://{}", socket.display());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server::serve(router, &endpoint, async {
                let _ = stopped.await;
            })
            .await
        });
        for _ in 0..200 {
            if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        Self { socket, stop: Some(stop), task: Some(task) }
    }

    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// A fresh client channel to the server.
    pub async fn channel(&self) -> Channel {
        crate::client::connect(&self.endpoint()).await.expect("connect to test server")
    }

    /// Stops the server as SIGTERM would, and waits until it has removed its socket.
    pub async fn stop(mut self) {
        self.shutdown().await;
    }

    async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task panicked").expect("server failed");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
