//! The scene of every lab 04 test: the lab 03 driver (`--mode node`) on a
//! real unix socket, the registrar in-process, and kubelet's plugin watcher,
//! all in one temporary directory. Every wait is bounded, so a missing piece
//! fails with a message instead of hanging.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use lab01_identity::server::bind_unix_socket;
use lab01_identity::testing::TestServer;
use lab03_node::driver::{Mode, NodeArgs, router};
use lab04_registration::Error;
use lab04_registration::kubelet::{Attempt, Event, Options, PluginWatcher};
use lab04_registration::pluginregistration::registration_server::{Registration, RegistrationServer};
use lab04_registration::pluginregistration::{
    InfoRequest, PluginInfo, RegistrationStatus, RegistrationStatusResponse,
};
use lab04_registration::registrar::{Config, Registrar, Status};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response};

pub const DRIVER: &str = "csi.workshop.dev";
pub const NODE: &str = "node-a";
/// The longest any step may take before the test gives up.
pub const WAIT: Duration = Duration::from_secs(20);

/// One temporary directory with the driver's directory, the registry
/// directory kubelet watches, and the driver's backend and state.
pub struct Scene {
    pub dir: tempfile::TempDir,
}

impl Scene {
    pub fn new() -> Self {
        // Short paths: a unix socket path must fit in 108 bytes.
        let dir = tempfile::Builder::new().prefix("lab04-").tempdir_in("/tmp").unwrap();
        Self { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The directory the driver serves `csi.sock` in.
    pub fn plugin_dir(&self) -> PathBuf {
        self.path("plugin")
    }

    pub fn csi_socket(&self) -> PathBuf {
        self.plugin_dir().join("csi.sock")
    }

    /// Stands for `/var/lib/kubelet/plugins_registry`.
    pub fn registry(&self) -> PathBuf {
        self.path("registry")
    }

    pub fn registration_socket(&self) -> PathBuf {
        self.registry().join(format!("{DRIVER}-reg.sock"))
    }

    /// The lab 03 driver, serving Identity and Node as in the DaemonSet.
    pub async fn start_driver(&self) -> TestServer {
        std::fs::create_dir_all(self.plugin_dir()).unwrap();
        let mut args = NodeArgs::in_dir(DRIVER, &self.dir.path(), NODE, Mode::Node);
        args.controller.max_volume_size = 1 << 30;
        TestServer::start(router(&args).expect("the lab 03 driver starts"), &self.plugin_dir()).await
    }

    /// The registrar's flags for this scene; kubelet's view of the driver
    /// socket is the real path, as both run on this machine.
    pub fn config(&self) -> Config {
        Config {
            plugin_registration_path: self.registry(),
            retry_interval: Duration::from_millis(100),
            ..Config::new(format!("unix://{}", self.csi_socket().display()), self.csi_socket())
        }
    }

    pub fn watcher(&self) -> PluginWatcher {
        self.watcher_with(Options { call_timeout: Duration::from_secs(3), ..Options::default() })
    }

    pub fn watcher_with(&self, options: Options) -> PluginWatcher {
        PluginWatcher::new(self.registry(), options)
    }
}

/// A registrar running in the background, as `csi-registrar` would.
pub struct RunningRegistrar {
    pub status: watch::Receiver<Status>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), Error>>,
}

impl RunningRegistrar {
    pub fn start(config: Config) -> Self {
        let registrar = Registrar::new(config);
        let status = registrar.status();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(registrar.run(async {
            let _ = stopped.await;
        }));
        Self { status, stop: Some(stop), task }
    }

    /// Waits until the registrar's status satisfies `ready`; panics with
    /// `what` (and the registrar's status or its exit) otherwise.
    pub async fn wait_for(&mut self, what: &str, ready: impl FnMut(&Status) -> bool) -> Status {
        let waited =
            tokio::time::timeout(WAIT, async { self.status.wait_for(ready).await.map(|s| s.clone()) }).await;
        match waited {
            Ok(Ok(status)) => status,
            Ok(Err(_)) => {
                let exit = tokio::time::timeout(WAIT, &mut self.task).await;
                panic!("{what}, but the registrar stopped: {exit:?}")
            }
            Err(_) => panic!("{what}; after {WAIT:?} the registrar's status is {:?}", *self.status.borrow()),
        }
    }

    /// Waits until the registration socket is served, and returns its path.
    pub async fn wait_until_serving(&mut self) -> PathBuf {
        let status = self
            .wait_for("the registrar must serve a registration socket once the driver answers", |s| {
                s.socket.is_some()
            })
            .await;
        status.socket.unwrap()
    }

    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }

    /// Stops it as SIGTERM would and returns what `run` returned.
    pub async fn stop(mut self) -> Result<(), Error> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.exit().await
    }

    /// Waits for `run` to return on its own.
    pub async fn exit(&mut self) -> Result<(), Error> {
        tokio::time::timeout(WAIT, &mut self.task)
            .await
            .unwrap_or_else(|_| panic!("the registrar did not return within {WAIT:?}"))
            .expect("the registrar panicked")
    }
}

impl Drop for RunningRegistrar {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Polls like kubelet until a registration attempt happened; returns every
/// event and that attempt.
pub async fn watch_until_attempt(watcher: &mut PluginWatcher) -> (Vec<Event>, Attempt) {
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut attempts =
            watcher.poll(&mut |e| events.push(e)).await.expect("the registry directory can be read");
        if !attempts.is_empty() {
            return (events, attempts.remove(0));
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "kubelet found no registration socket in {} within {WAIT:?}; events: {}",
                watcher.dir().display(),
                lines(&events)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One poll; the events it produced.
pub async fn poll_once(watcher: &mut PluginWatcher) -> (Vec<Event>, Vec<Attempt>) {
    let mut events = Vec::new();
    let attempts = watcher.poll(&mut |e| events.push(e)).await.expect("the registry directory can be read");
    (events, attempts)
}

/// The events as `kubelet-sim` prints them.
pub fn lines(events: &[Event]) -> String {
    events.iter().map(|e| format!("\n  {e}")).collect()
}

/// A registration server written for the tests, independent of the lab's
/// own: it answers GetInfo with `info` and records every verdict.
pub struct FakePlugin {
    pub verdicts: mpsc::UnboundedReceiver<RegistrationStatus>,
    stop: Option<oneshot::Sender<()>>,
}

struct FakeRegistration {
    info: PluginInfo,
    verdicts: mpsc::UnboundedSender<RegistrationStatus>,
}

#[tonic::async_trait]
impl Registration for FakeRegistration {
    async fn get_info(&self, _: Request<InfoRequest>) -> Result<Response<PluginInfo>, tonic::Status> {
        Ok(Response::new(self.info.clone()))
    }

    async fn notify_registration_status(
        &self,
        request: Request<RegistrationStatus>,
    ) -> Result<Response<RegistrationStatusResponse>, tonic::Status> {
        let _ = self.verdicts.send(request.into_inner());
        Ok(Response::new(RegistrationStatusResponse {}))
    }
}

impl FakePlugin {
    pub fn start(socket: &Path, info: PluginInfo) -> Self {
        let listener = bind_unix_socket(socket).expect("bind the fake registration socket");
        let (tx, verdicts) = mpsc::unbounded_channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let service = RegistrationServer::new(FakeRegistration { info, verdicts: tx });
        tokio::spawn(tonic::transport::Server::builder().add_service(service).serve_with_incoming_shutdown(
            UnixListenerStream::new(listener),
            async {
                let _ = stopped.await;
            },
        ));
        Self { verdicts, stop: Some(stop) }
    }

    /// The verdict kubelet sent, waiting for it if needed.
    pub async fn verdict(&mut self) -> RegistrationStatus {
        tokio::time::timeout(WAIT, self.verdicts.recv())
            .await
            .expect("kubelet must call NotifyRegistrationStatus")
            .expect("the fake plugin is still running")
    }
}

impl Drop for FakePlugin {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A plugin info as node-driver-registrar would send, with changes applied.
pub fn plugin_info(name: &str, endpoint: &Path, versions: &[&str]) -> PluginInfo {
    PluginInfo {
        r#type: "CSIPlugin".into(),
        name: name.into(),
        endpoint: endpoint.display().to_string(),
        supported_versions: versions.iter().map(|v| v.to_string()).collect(),
    }
}

/// A minimal HTTP/1.1 GET; returns the status code and the body.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let call = async {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connect to /healthz on {addr}: {e} (has the registrar stopped?)"));
        let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    };
    let response = tokio::time::timeout(WAIT, call).await.expect("/healthz must answer");
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (code, body)
}
