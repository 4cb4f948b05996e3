//! kubelet's side of plugin registration, played over real sockets.
//!
//! kubelet's plugin manager watches `/var/lib/kubelet/plugins_registry` and,
//! for every new socket there, runs this sequence (see `RegisterPlugin` in
//! kubelet's operation executor and the CSI plugin's `RegistrationHandler`):
//!
//! 1. dial the socket and call GetInfo;
//! 2. pick the handler for the plugin type (`CSIPlugin` here), then validate:
//!    a name, and a supported version (CSI 1.x);
//! 3. dial the advertised endpoint (empty means the registration socket) and
//!    call the driver's NodeGetInfo;
//! 4. write the CSINode entry, the node-id annotation and the topology labels;
//! 5. call NotifyRegistrationStatus with the outcome.
//!
//! When a socket disappears, kubelet deregisters the plugin.
//!
//! kubelet keeps one registration per driver *name*. A second socket that
//! announces a name already registered is refused at validation unless its
//! highest supported version is strictly higher ("another driver with the
//! same name is already registered with a higher supported version"); a
//! higher one replaces the registration. [`PluginWatcher`] models that rule.
//! Two quirks of kubelet it does not model: a deregistration removes the
//! name whichever socket registered it last, and a replacement that then
//! fails at NodeGetInfo removes the name altogether.
//!
//! Differences, on purpose: kubelet uses inotify; [`PluginWatcher`] polls the
//! directory every [`POLL_INTERVAL`] (200 ms), which needs no extra crate and
//! sees the same creations and removals, a little later. It does not descend
//! into subdirectories, does not retry a failed socket until it is replaced
//! (kubelet retries with a back-off), and prints what it *would* write to
//! the API server instead of writing it.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::Future;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use lab01_identity::client::connect;
use lab01_identity::csi::NodeGetInfoRequest;
use lab01_identity::csi::node_client::NodeClient;
use tonic::transport::Channel;

use crate::pluginregistration::registration_client::RegistrationClient;
use crate::pluginregistration::{InfoRequest, PluginInfo, RegistrationStatus};
use crate::registration::CSI_PLUGIN_TYPE;

/// The directory kubelet watches for registration sockets.
pub const DEFAULT_REGISTRY_DIR: &str = "/var/lib/kubelet/plugins_registry";

/// How often [`PluginWatcher`] looks at the directory.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Why kubelet did not register a plugin. Each case names its step.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("dial failed at socket {socket}: {reason}")]
    DialRegistration { socket: PathBuf, reason: String },
    #[error("GetInfo failed at socket {socket}: {reason}")]
    GetInfo { socket: PathBuf, reason: String },
    #[error("no handler registered for plugin type {0:?} (this kubelet handles {CSI_PLUGIN_TYPE:?})")]
    UnknownType(String),
    #[error("plugin validation failed: {0}")]
    Validation(String),
    #[error(
        "plugin validation failed: another driver with the same name {name:?} is already registered \
         with a higher supported version: {existing:?} (a second registration needs a strictly higher one, {offered:?} is not)"
    )]
    AlreadyRegistered { name: String, existing: String, offered: String },
    #[error(
        "dialing the driver at {endpoint} failed: {reason} (kubelet dials the advertised endpoint \
         on the host: is --kubelet-registration-path the driver socket's host path?)"
    )]
    DialDriver { endpoint: String, reason: String },
    #[error("NodeGetInfo on {endpoint} failed: {reason}")]
    NodeGetInfo { endpoint: String, reason: String },
    #[error("NodeGetInfo returned unusable node info: {0}")]
    InvalidNodeInfo(String),
    #[error("NotifyRegistrationStatus failed at socket {socket}: {reason}")]
    Notify { socket: PathBuf, reason: String },
}

impl RegisterError {
    /// The step that failed, as printed by `kubelet-sim`.
    pub fn step(&self) -> &'static str {
        match self {
            Self::DialRegistration { .. } => "dial-registration",
            Self::GetInfo { .. } => "get-info",
            Self::UnknownType(_) | Self::Validation(_) | Self::AlreadyRegistered { .. } => "validate",
            Self::DialDriver { .. } => "dial-driver",
            Self::NodeGetInfo { .. } | Self::InvalidNodeInfo(_) => "node-get-info",
            Self::Notify { .. } => "notify",
        }
    }
}

/// Rewrites endpoints under `host` to the same path under `local`: for a
/// harness in a container that sees the host's `/var/lib/kubelet` elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixMap {
    pub host: PathBuf,
    pub local: PathBuf,
}

impl FromStr for PrefixMap {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (host, local) =
            text.split_once('=').ok_or_else(|| format!("{text:?}: expected HOSTPREFIX=LOCALPREFIX"))?;
        let (host, local) = (PathBuf::from(host), PathBuf::from(local));
        if !host.is_absolute() || !local.is_absolute() {
            return Err(format!("{text:?}: both prefixes must be absolute paths"));
        }
        Ok(Self { host, local })
    }
}

impl PrefixMap {
    /// `path` under `local` if it lies under `host` (whole components only).
    pub fn translate(&self, path: &Path) -> Option<PathBuf> {
        let rest = path.strip_prefix(&self.host).ok()?;
        Some(if rest.as_os_str().is_empty() { self.local.clone() } else { self.local.join(rest) })
    }
}

/// The path to dial for an advertised endpoint: the first map that applies.
pub fn translate(maps: &[PrefixMap], endpoint: &Path) -> PathBuf {
    maps.iter().find_map(|m| m.translate(endpoint)).unwrap_or_else(|| endpoint.to_owned())
}

/// How the harness talks to plugins.
#[derive(Debug, Clone)]
pub struct Options {
    /// The longest one dial or RPC may take.
    pub call_timeout: Duration,
    /// Host-to-local path rewrites for advertised endpoints.
    pub prefix_maps: Vec<PrefixMap>,
}

impl Default for Options {
    fn default() -> Self {
        Self { call_timeout: Duration::from_secs(5), prefix_maps: Vec::new() }
    }
}

/// A plugin kubelet registered, and what it learnt from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub name: String,
    /// The registration socket it came through.
    pub socket: PathBuf,
    /// The endpoint as advertised (a host path).
    pub endpoint: String,
    /// The path actually dialled (after `--endpoint-prefix-map`).
    pub dialed: PathBuf,
    /// The CSI version kubelet picked.
    pub version: String,
    pub node_id: String,
    pub max_volumes: i64,
    pub topology: BTreeMap<String, String>,
}

/// A registration attempt that failed.
#[derive(Debug)]
pub struct Failure {
    pub socket: PathBuf,
    /// The plugin's name, if GetInfo got that far.
    pub name: Option<String>,
    pub error: RegisterError,
    /// Whether the plugin was told (NotifyRegistrationStatus false).
    pub notified: bool,
}

impl Failure {
    pub fn event(&self) -> Event {
        Event::Failed {
            socket: self.socket.clone(),
            name: self.name.clone(),
            step: self.error.step(),
            error: self.error.to_string(),
        }
    }
}

/// One step of the watcher's work; `Display` gives `kubelet-sim`'s line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Found {
        socket: PathBuf,
    },
    Ignored {
        path: PathBuf,
        reason: &'static str,
    },
    Info {
        socket: PathBuf,
        info: PluginInfo,
    },
    Validated {
        name: String,
        version: String,
    },
    NodeInfo {
        name: String,
        dialed: PathBuf,
        node_id: String,
        max_volumes: i64,
        topology: BTreeMap<String, String>,
    },
    WouldWrite(Registration),
    Notified {
        name: String,
        registered: bool,
        error: String,
    },
    Registered(Registration),
    Failed {
        socket: PathBuf,
        name: Option<String>,
        step: &'static str,
        error: String,
    },
    Deregistered {
        name: String,
        socket: PathBuf,
    },
    Removed {
        socket: PathBuf,
    },
}

fn segments(topology: &BTreeMap<String, String>) -> String {
    if topology.is_empty() {
        return "none".to_owned();
    }
    topology.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

// ANCHOR: event-lines
impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Found { socket } => write!(f, "found {}", socket.display()),
            Self::Ignored { path, reason } => write!(f, "ignored {}: {reason}", path.display()),
            Self::Info { socket, info } => write!(
                f,
                "getinfo {} type={} name={} endpoint={} versions={}",
                socket.display(),
                info.r#type,
                info.name,
                info.endpoint,
                info.supported_versions.join(",")
            ),
            Self::Validated { name, version } => write!(f, "validated {name} version={version}"),
            Self::NodeInfo { name, dialed, node_id, max_volumes, topology } => write!(
                f,
                "nodegetinfo {name} dialed={} node_id={node_id} max_volumes={max_volumes} topology={}",
                dialed.display(),
                segments(topology)
            ),
            Self::WouldWrite(r) => {
                let keys: Vec<&str> = r.topology.keys().map(String::as_str).collect();
                let allocatable =
                    if r.max_volumes > 0 { r.max_volumes.to_string() } else { "unset".to_owned() };
                writeln!(
                    f,
                    "would-write csinode driver={} nodeID={} topologyKeys=[{}] allocatable.count={allocatable}",
                    r.name,
                    r.node_id,
                    keys.join(",")
                )?;
                writeln!(f, "would-write node-labels {}", segments(&r.topology))?;
                write!(
                    f,
                    "would-write node-annotation csi.volume.kubernetes.io/nodeid={{\"{}\":\"{}\"}}",
                    r.name, r.node_id
                )
            }
            Self::Notified { name, registered: true, .. } => {
                write!(f, "notified {name} plugin_registered=true")
            }
            Self::Notified { name, error, .. } => {
                write!(f, "notified {name} plugin_registered=false error={error:?}")
            }
            Self::Registered(r) => write!(
                f,
                "registered {} endpoint={} node_id={} topology={} max_volumes={}",
                r.name,
                r.endpoint,
                r.node_id,
                segments(&r.topology),
                r.max_volumes
            ),
            Self::Failed { socket, name, step, error } => write!(
                f,
                "failed {} name={} step={step}: {error}",
                socket.display(),
                name.as_deref().unwrap_or("-")
            ),
            Self::Deregistered { name, socket } => {
                write!(f, "deregistered {name} socket={}", socket.display())
            }
            Self::Removed { socket } => {
                write!(f, "removed {} (it was never registered)", socket.display())
            }
        }
    }
}
// ANCHOR_END: event-lines

/// A version as kubelet reads the ones a plugin offers: with the generic
/// parser of `k8s.io/apimachinery/pkg/util/version` (`ParseGeneric`).
#[derive(Debug, Clone)]
pub struct Version {
    components: Vec<u64>,
}

impl Version {
    pub fn major(&self) -> u64 {
        self.components[0]
    }

    pub fn components(&self) -> &[u64] {
        &self.components
    }
}

/// Like Go's `compareInternal` for generic versions: component by
/// component, a missing one counting as 0 (`1.2` equals `1.2.0`).
impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        let n = self.components.len().max(other.components.len());
        let at = |v: &Self, i: usize| v.components.get(i).copied().unwrap_or(0);
        (0..n).map(|i| at(self, i).cmp(&at(other, i))).find(|o| o.is_ne()).unwrap_or(Ordering::Equal)
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for Version {}

/// The numbers only, as Go's `Version.String()` prints a generic version:
/// `v1.0.0-rc1` prints `1.0.0`.
impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.components.iter().map(u64::to_string).collect();
        f.write_str(&parts.join("."))
    }
}

/// `ParseGeneric`: leading whitespace, an optional `v`, then two or more
/// dot-separated numbers (the first without a leading zero), then anything
/// at all, which is ignored: `1.2.3.4`, `1.0.0-rc1` and `v1.2abc` are
/// versions, `1`, `1.x`, `01.2` and `V1.2` are not. (Go's pattern is
/// `^\s*v?([0-9]+(?:\.[0-9]+)*)(.*)*$`, whose `.` stops at a newline, so
/// the rest may not hold one.)
pub fn parse_version(text: &str) -> Option<Version> {
    let text = text.trim_start_matches([' ', '\t', '\n', '\r', '\x0c']);
    let text = text.strip_prefix('v').unwrap_or(text);
    let bytes = text.as_bytes();
    let digits_from = |start: usize| bytes[start..].iter().take_while(|b| b.is_ascii_digit()).count();
    let mut parts: Vec<&str> = Vec::new();
    let mut at = 0;
    loop {
        let n = digits_from(at);
        if n == 0 {
            return None; // only reached for the first part: no number at all
        }
        parts.push(&text[at..at + n]);
        at += n;
        // Another part only if a digit follows the dot; else `.x` is the rest.
        if bytes.get(at) == Some(&b'.') && bytes.get(at + 1).is_some_and(u8::is_ascii_digit) {
            at += 1;
        } else {
            break;
        }
    }
    if parts.len() < 2 || text[at..].contains('\n') {
        return None;
    }
    if parts[0].len() > 1 && parts[0].starts_with('0') {
        return None;
    }
    // Go's ParseUint fails past u64 (uint on 64-bit machines).
    let components = parts.iter().map(|p| p.parse::<u64>().ok()).collect::<Option<Vec<u64>>>()?;
    Some(Version { components })
}

// ANCHOR: highest-supported-version
/// The version kubelet would use: the highest one whose major version is at
/// most 1, and it must be 1 (CSI 0.x is no longer supported; 2.x might not
/// be compatible). Versions that do not parse are skipped; kubelet reports
/// the last parse error only if nothing usable is left.
pub fn highest_supported_version(versions: &[String]) -> Result<String, String> {
    if versions.is_empty() {
        return Err("the plugin returned an empty list of supported versions".to_owned());
    }
    let best = versions.iter().filter_map(|v| parse_version(v)).filter(|v| v.major() <= 1).max();
    match best {
        None => Err(format!("none of the versions {versions:?} is usable: kubelet speaks CSI 1.x")),
        Some(v) if v.major() != 1 => {
            Err(format!("the highest supported version is {v}, but kubelet needs CSI 1.x"))
        }
        Some(v) => Ok(v.to_string()),
    }
}
// ANCHOR_END: highest-supported-version

// ANCHOR: validate-plugin-info
/// kubelet's checks on a GetInfo answer; the version it picked, or why not.
pub fn validate_plugin_info(info: &PluginInfo) -> Result<String, RegisterError> {
    // TODO(lab04): Check as kubelet does: the type must be CSIPlugin
    // (`RegisterError::UnknownType`), the name must not be empty, and
    // `highest_supported_version` must find a 1.x version
    // (`RegisterError::Validation` for both).
    // ANCHOR: solution
    if info.r#type != CSI_PLUGIN_TYPE {
        return Err(RegisterError::UnknownType(info.r#type.clone()));
    }
    if info.name.trim().is_empty() {
        return Err(RegisterError::Validation("the plugin name is empty".to_owned()));
    }
    highest_supported_version(&info.supported_versions)
        .map_err(|reason| RegisterError::Validation(format!("CSI driver {:?}: {reason}", info.name)))
    // ANCHOR_END: solution => Ok(info.supported_versions.first().cloned().unwrap_or_default())
}
// ANCHOR_END: validate-plugin-info

/// kubelet's rule for a name it has registered already: the newcomer must
/// offer a strictly higher version. `registered` maps each registered name
/// to the version kubelet picked for it.
pub fn check_supersedes(
    name: &str,
    version: &str,
    registered: &BTreeMap<String, String>,
) -> Result<(), RegisterError> {
    let Some(existing) = registered.get(name) else { return Ok(()) };
    match (parse_version(existing), parse_version(version)) {
        (Some(old), Some(new)) if old >= new => Err(RegisterError::AlreadyRegistered {
            name: name.to_owned(),
            existing: existing.clone(),
            offered: version.to_owned(),
        }),
        _ => Ok(()),
    }
}

async fn within<T, E: fmt::Display>(
    timeout: Duration,
    call: impl Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(timeout, call).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

fn status_reason(status: tonic::Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

/// One registration attempt for the socket at `socket`, step by step;
/// `registered` holds the names kubelet has registered already (name to
/// version).
pub async fn register_plugin<F: FnMut(Event)>(
    socket: &Path,
    options: &Options,
    registered: &BTreeMap<String, String>,
    emit: &mut F,
) -> Result<Registration, Failure> {
    let failure =
        |name: Option<String>, error, notified| Failure { socket: socket.to_owned(), name, error, notified };
    let channel =
        within(options.call_timeout, connect(&socket.display().to_string())).await.map_err(|reason| {
            failure(None, RegisterError::DialRegistration { socket: socket.to_owned(), reason }, false)
        })?;
    let mut client = RegistrationClient::new(channel);
    let info =
        within(options.call_timeout, async { client.get_info(InfoRequest {}).await.map_err(status_reason) })
            .await
            .map_err(|reason| {
                failure(None, RegisterError::GetInfo { socket: socket.to_owned(), reason }, false)
            })?
            .into_inner();
    emit(Event::Info { socket: socket.to_owned(), info: info.clone() });
    let name = info.name.clone();

    match node_registration(socket, &info, options, registered, emit).await {
        Ok(registration) => {
            emit(Event::WouldWrite(registration.clone()));
            if let Err(reason) = notify(&mut client, options, true, String::new()).await {
                let error = RegisterError::Notify { socket: socket.to_owned(), reason };
                return Err(failure(Some(name), error, false));
            }
            emit(Event::Notified { name, registered: true, error: String::new() });
            Ok(registration)
        }
        Err(error) => {
            let message = error.to_string();
            let notified = match notify(&mut client, options, false, message.clone()).await {
                Ok(()) => {
                    emit(Event::Notified { name: name.clone(), registered: false, error: message });
                    true
                }
                Err(reason) => {
                    tracing::warn!(socket = %socket.display(), %reason, "could not tell the plugin it was rejected");
                    false
                }
            };
            Err(failure(Some(name), error, notified))
        }
    }
}

/// Steps 2 to 4: validate, then ask the driver about the node.
async fn node_registration<F: FnMut(Event)>(
    socket: &Path,
    info: &PluginInfo,
    options: &Options,
    registered: &BTreeMap<String, String>,
    emit: &mut F,
) -> Result<Registration, RegisterError> {
    let version = validate_plugin_info(info)?;
    check_supersedes(&info.name, &version, registered)?;
    emit(Event::Validated { name: info.name.clone(), version: version.clone() });

    // ANCHOR: dial-endpoint
    // An empty endpoint means "the registration socket is the driver's socket".
    let endpoint =
        if info.endpoint.is_empty() { socket.display().to_string() } else { info.endpoint.clone() };
    let dialed = translate(&options.prefix_maps, Path::new(&endpoint));
    let channel: Channel = within(options.call_timeout, connect(&dialed.display().to_string()))
        .await
        .map_err(|reason| RegisterError::DialDriver { endpoint: endpoint.clone(), reason })?;
    let node = within(options.call_timeout, async {
        NodeClient::new(channel).node_get_info(NodeGetInfoRequest {}).await.map_err(status_reason)
    })
    .await
    .map_err(|reason| RegisterError::NodeGetInfo { endpoint: endpoint.clone(), reason })?
    .into_inner();
    // ANCHOR_END: dial-endpoint
    if node.node_id.is_empty() {
        return Err(RegisterError::InvalidNodeInfo("node_id is empty".to_owned()));
    }
    if node.max_volumes_per_node < 0 {
        return Err(RegisterError::InvalidNodeInfo(format!(
            "max_volumes_per_node is negative ({})",
            node.max_volumes_per_node
        )));
    }
    let topology: BTreeMap<String, String> =
        node.accessible_topology.map(|t| t.segments.into_iter().collect()).unwrap_or_default();
    emit(Event::NodeInfo {
        name: info.name.clone(),
        dialed: dialed.clone(),
        node_id: node.node_id.clone(),
        max_volumes: node.max_volumes_per_node,
        topology: topology.clone(),
    });
    Ok(Registration {
        name: info.name.clone(),
        socket: socket.to_owned(),
        endpoint,
        dialed,
        version,
        node_id: node.node_id,
        max_volumes: node.max_volumes_per_node,
        topology,
    })
}

async fn notify(
    client: &mut RegistrationClient<Channel>,
    options: &Options,
    registered: bool,
    error: String,
) -> Result<(), String> {
    let status = RegistrationStatus { plugin_registered: registered, error };
    within(options.call_timeout, async {
        client.notify_registration_status(status).await.map_err(status_reason)
    })
    .await
    .map(drop)
}

/// The outcome of one registration attempt.
pub type Attempt = Result<Registration, Failure>;

struct Known {
    /// (device, inode): a socket re-created at the same path is a new plugin.
    id: (u64, u64),
    /// The plugin name, if it was registered.
    registered: Option<String>,
}

/// kubelet's plugin watcher over one registry directory.
pub struct PluginWatcher {
    dir: PathBuf,
    options: Options,
    plugins: BTreeMap<PathBuf, Known>,
    ignored: BTreeSet<PathBuf>,
    /// Registered driver names and their versions, as kubelet's CSI
    /// handler keeps them (one entry per name).
    drivers: BTreeMap<String, String>,
}

impl PluginWatcher {
    pub fn new(dir: impl Into<PathBuf>, options: Options) -> Self {
        Self {
            dir: dir.into(),
            options,
            plugins: BTreeMap::new(),
            ignored: BTreeSet::new(),
            drivers: BTreeMap::new(),
        }
    }

    /// The driver names registered now, with the version kubelet picked.
    pub fn registered(&self) -> &BTreeMap<String, String> {
        &self.drivers
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Looks at the directory once: reports sockets that went away, tries to
    /// register new ones, and returns those attempts.
    pub async fn poll<F: FnMut(Event)>(&mut self, emit: &mut F) -> std::io::Result<Vec<Attempt>> {
        let sockets = self.scan(emit)?;
        let gone: Vec<PathBuf> = self
            .plugins
            .iter()
            .filter(|(path, known)| sockets.get(*path) != Some(&known.id))
            .map(|(path, _)| path.clone())
            .collect();
        for socket in gone {
            if let Some(known) = self.plugins.remove(&socket) {
                emit(match known.registered {
                    Some(name) => {
                        // kubelet forgets the name, whichever socket holds it now.
                        self.drivers.remove(&name);
                        Event::Deregistered { name, socket }
                    }
                    None => Event::Removed { socket },
                });
            }
        }
        let mut attempts = Vec::new();
        for (socket, id) in sockets {
            if self.plugins.contains_key(&socket) {
                continue;
            }
            emit(Event::Found { socket: socket.clone() });
            let attempt = register_plugin(&socket, &self.options, &self.drivers, emit).await;
            let registered = match &attempt {
                Ok(registration) => {
                    emit(Event::Registered(registration.clone()));
                    self.drivers.insert(registration.name.clone(), registration.version.clone());
                    Some(registration.name.clone())
                }
                Err(failure) => {
                    emit(failure.event());
                    None
                }
            };
            self.plugins.insert(socket, Known { id, registered });
            attempts.push(attempt);
        }
        Ok(attempts)
    }

    // ANCHOR: scan-registry
    /// The sockets in the directory, by (device, inode). Like kubelet, skips
    /// names starting with `.` and anything that is not a socket.
    fn scan<F: FnMut(Event)>(&mut self, emit: &mut F) -> std::io::Result<BTreeMap<PathBuf, (u64, u64)>> {
        std::fs::create_dir_all(&self.dir)?;
        let mut sockets = BTreeMap::new();
        let mut skipped = BTreeSet::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let path = entry.path();
            let reason = if entry.file_name().to_string_lossy().starts_with('.') {
                "kubelet skips names starting with '.'"
            } else {
                match std::fs::metadata(&path) {
                    Err(_) => continue, // vanished meanwhile
                    Ok(meta) if meta.file_type().is_socket() => {
                        sockets.insert(path, (meta.dev(), meta.ino()));
                        continue;
                    }
                    Ok(meta) if meta.is_dir() => {
                        "a directory (kubelet would look inside; this harness does not)"
                    }
                    Ok(_) => "not a unix socket",
                }
            };
            // Report each skipped path once, not on every poll.
            if self.ignored.insert(path.clone()) {
                emit(Event::Ignored { path: path.clone(), reason });
            }
            skipped.insert(path);
        }
        self.ignored.retain(|path| skipped.contains(path));
        Ok(sockets)
    }
    // ANCHOR_END: scan-registry
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(kind: &str, name: &str, versions: &[&str]) -> PluginInfo {
        PluginInfo {
            r#type: kind.into(),
            name: name.into(),
            endpoint: "/var/lib/kubelet/plugins/x/csi.sock".into(),
            supported_versions: versions.iter().map(|v| v.to_string()).collect(),
        }
    }

    #[test]
    fn versions_parse_like_kubelets_generic_parser() {
        let parsed = |text: &str| parse_version(text).map(|v| v.components().to_vec());
        assert_eq!(parsed("1.0.0"), Some(vec![1, 0, 0]));
        assert_eq!(parsed("v1.2"), Some(vec![1, 2]));
        // Two or more numbers, then anything at all (ignored).
        assert_eq!(parsed("1.2.3.4"), Some(vec![1, 2, 3, 4]));
        assert_eq!(parsed("1.0.0-rc1"), Some(vec![1, 0, 0]));
        assert_eq!(parsed("v1.2abc"), Some(vec![1, 2]));
        assert_eq!(parsed("1.2.x"), Some(vec![1, 2]));
        assert_eq!(parsed("  \tv1.3 "), Some(vec![1, 3]));
        assert_eq!(parsed("1.02"), Some(vec![1, 2]), "only the first number may not have a leading zero");
        assert_eq!(parsed("0.3.0"), Some(vec![0, 3, 0]));
        for bad in ["", "1", "1.x", "v", "01.2", "V1.2", "one", "1.2\n", "x1.2", "18446744073709551616.0"] {
            assert!(parse_version(bad).is_none(), "{bad:?} must not parse");
        }
    }

    #[test]
    fn versions_compare_with_missing_components_as_zero() {
        let v = |text: &str| parse_version(text).unwrap();
        assert_eq!(v("1.2"), v("1.2.0"));
        assert_eq!(v("1.0.0-rc1"), v("1.0.0"), "the rest after the numbers does not count");
        assert!(v("1.2.3.4") > v("1.2.3"));
        assert!(v("1.10.0") > v("1.9.9"));
        assert_eq!(v("v1.0.0-rc1").to_string(), "1.0.0");
    }

    #[test]
    fn kubelet_picks_the_highest_1_x_version() {
        let v = |list: &[&str]| {
            highest_supported_version(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        };
        assert_eq!(v(&["1.0.0"]), Ok("1.0.0".into()));
        assert_eq!(v(&["0.3.0", "1.2.0", "1.10.0", "2.0.0"]), Ok("1.10.0".into()));
        assert_eq!(v(&["1.2.3.4", "1.2.3"]), Ok("1.2.3.4".into()));
        assert_eq!(v(&["v1.1.0-rc1", "junk"]), Ok("1.1.0".into()), "unparsable entries are skipped");
        assert!(v(&["0.3.0"]).is_err(), "CSI 0.x is refused");
        assert!(v(&["2.0.0"]).is_err(), "CSI 2.x is not known to be compatible");
        assert!(v(&[]).is_err());
        assert!(v(&["one"]).is_err());
    }

    #[test]
    fn a_registered_name_is_taken_again_only_with_a_higher_version() {
        let registered = BTreeMap::from([("csi.workshop.dev".to_owned(), "1.0.0".to_owned())]);
        assert!(check_supersedes("other.example.com", "1.0.0", &registered).is_ok());
        assert!(matches!(
            check_supersedes("csi.workshop.dev", "1.0.0", &registered),
            Err(RegisterError::AlreadyRegistered { .. })
        ));
        assert!(check_supersedes("csi.workshop.dev", "1.0", &registered).is_err(), "1.0 equals 1.0.0");
        assert!(check_supersedes("csi.workshop.dev", "1.1.0", &registered).is_ok());
        let err = check_supersedes("csi.workshop.dev", "0.9.0", &registered).unwrap_err();
        assert_eq!(err.step(), "validate");
        assert!(err.to_string().contains("already registered with a higher supported version"), "{err}");
    }

    #[test]
    fn only_csi_plugins_with_a_name_and_a_1_x_version_are_valid() {
        assert_eq!(
            validate_plugin_info(&info("CSIPlugin", "csi.workshop.dev", &["1.0.0"])).unwrap(),
            "1.0.0"
        );
        assert!(
            matches!(
                validate_plugin_info(&info("DevicePlugin", "csi.workshop.dev", &["1.0.0"])),
                Err(RegisterError::UnknownType(_))
            ),
            "only the CSIPlugin type has a handler here"
        );
        assert!(
            matches!(
                validate_plugin_info(&info("CSIPlugin", "", &["1.0.0"])),
                Err(RegisterError::Validation(_))
            ),
            "an empty name is refused"
        );
        assert!(
            matches!(
                validate_plugin_info(&info("CSIPlugin", "csi.workshop.dev", &["0.3.0"])),
                Err(RegisterError::Validation(_))
            ),
            "CSI 0.x is refused"
        );
    }

    #[test]
    fn a_host_prefix_is_mapped_on_whole_path_components() {
        let map: PrefixMap = "/var/lib/kubelet=/host/kubelet".parse().unwrap();
        let maps = [map];
        assert_eq!(
            translate(&maps, Path::new("/var/lib/kubelet/plugins/x/csi.sock")),
            PathBuf::from("/host/kubelet/plugins/x/csi.sock")
        );
        assert_eq!(
            translate(&maps, Path::new("/var/lib/kubelet2/csi.sock")),
            PathBuf::from("/var/lib/kubelet2/csi.sock")
        );
        assert!("no-equals".parse::<PrefixMap>().is_err());
        assert!("relative=/x".parse::<PrefixMap>().is_err());
    }

    #[test]
    fn a_registration_prints_as_one_line() {
        let registration = Registration {
            name: "csi.workshop.dev".into(),
            socket: "/r/csi.workshop.dev-reg.sock".into(),
            endpoint: "/p/csi.sock".into(),
            dialed: "/p/csi.sock".into(),
            version: "1.0.0".into(),
            node_id: "node-a".into(),
            max_volumes: 0,
            topology: BTreeMap::from([("topology.csi.workshop.dev/node".into(), "node-a".into())]),
        };
        assert_eq!(
            Event::Registered(registration).to_string(),
            "registered csi.workshop.dev endpoint=/p/csi.sock node_id=node-a \
             topology=topology.csi.workshop.dev/node=node-a max_volumes=0"
        );
    }
}
