//! A Kubernetes API faked at the HTTP level: kube-rs's `Client` talks to a
//! `tower_test::mock` service (or, for the binary, to [`serve_http`]), and
//! this task answers with JSON from an in-memory store. Just enough API server for csi-migrate: get, list,
//! create, merge patch, delete with finalizers, pod logs, and the one bit of
//! controller behaviour the tool waits for (scaling a Deployment or
//! StatefulSet to 0 removes its Pods; the tool's checksum Pods succeed at
//! once; optionally, the PV controller marking a claim Lost while its PV is
//! away).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};

const COLLECTIONS: &[&str] =
    &["persistentvolumes", "persistentvolumeclaims", "pods", "deployments", "statefulsets", "configmaps"];

#[derive(Default)]
pub struct State {
    /// Objects by path: `/api/v1/persistentvolumes/legacy-1`.
    pub objects: BTreeMap<String, Value>,
    /// Every write, as `METHOD path`.
    pub writes: Vec<String>,
    /// Fail the write with this number (1-based, counted over the run).
    pub fail_write: Option<usize>,
    /// Things a safe migration must never do.
    pub violations: Vec<String>,
    /// What the checksum Pods print, one per Pod (the last one repeats).
    pub checksums: Vec<String>,
    /// How the PV controller treats a Bound claim whose PV disappears.
    pub pv_controller: PvController,
    counter: u64,
}

/// What happens to a Bound claim while its PV is deleted and recreated.
#[derive(Default, Clone, Copy, PartialEq, Eq, Debug)]
pub enum PvController {
    /// Too slow to notice: the claim stays Bound throughout.
    #[default]
    Idle,
    /// Marks the claim Lost, and Bound again once a PV of the same name
    /// with the claim's UID in its claimRef is back (what kube-controller-
    /// manager's syncBoundClaim does).
    LosesAndRebinds,
    /// Marks the claim Lost and never rebinds it.
    LosesForGood,
}

pub type Shared = Arc<Mutex<State>>;

pub const PV: &str = "/api/v1/persistentvolumes/legacy-1";
pub const DEPLOYMENT: &str = "/apis/apps/v1/namespaces/legacy/deployments/writer";
pub const CLAIM: &str = "/api/v1/namespaces/legacy/persistentvolumeclaims/data";
pub const WRITER_POD: &str = "/api/v1/namespaces/legacy/pods/writer-0";
pub const JOURNAL: &str = "/api/v1/namespaces/csi-workshop/configmaps/csi-migrate-journal";
pub const STATEFULSET: &str = "/apis/apps/v1/namespaces/legacy/statefulsets/db";
pub const STS_CLAIM: &str = "/api/v1/namespaces/legacy/persistentvolumeclaims/data-db-0";
pub const STS_POD: &str = "/api/v1/namespaces/legacy/pods/db-0";
pub const SUM: &str = "5f1a5b8c9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f809112";

/// The legacy setup: a Flex PV bound to claim legacy/data, used by the
/// Deployment writer (1 replica, one running Pod).
pub fn legacy_cluster() -> Shared {
    let mut s = State { checksums: vec![SUM.into()], ..Default::default() };
    s.objects.insert(PV.into(), json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": "legacy-1", "uid": "pv-uid-0", "resourceVersion": "1",
                     "finalizers": ["kubernetes.io/pv-protection"],
                     "annotations": {"pv.kubernetes.io/bound-by-controller": "yes"}},
        "spec": {
            "capacity": {"storage": "64Mi"}, "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Delete", "storageClassName": "legacy-flex",
            "claimRef": {"kind": "PersistentVolumeClaim", "namespace": "legacy", "name": "data", "uid": "claim-uid", "resourceVersion": "3"},
            "flexVolume": {"driver": "csi.workshop.dev/flex", "fsType": "ext4",
                           "options": {"volumeId": "vol-1", "type": "block", "backendDir": "/var/lib/csi-workshop/backend"}}
        },
        "status": {"phase": "Bound"}
    }));
    s.objects.insert(CLAIM.into(), json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data", "namespace": "legacy", "uid": "claim-uid", "resourceVersion": "3",
                     "finalizers": ["kubernetes.io/pvc-protection"]},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "legacy-flex", "volumeName": "legacy-1",
                 "resources": {"requests": {"storage": "64Mi"}}},
        "status": {"phase": "Bound"}
    }));
    s.objects.insert(
        DEPLOYMENT.into(),
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "writer", "namespace": "legacy", "uid": "dep-uid"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "writer"}},
                     "template": {"metadata": {"labels": {"app": "writer"}}, "spec": pod_spec()}}
        }),
    );
    s.objects.insert(WRITER_POD.into(), writer_pod());
    Arc::new(Mutex::new(s))
}

/// The same Flex PV, but its claim `data-db-0` comes from the
/// volumeClaimTemplate `data` of the StatefulSet `db` (1 replica, Pod db-0).
pub fn legacy_statefulset_cluster() -> Shared {
    let state = legacy_cluster();
    {
        let mut s = state.lock().unwrap();
        for path in [DEPLOYMENT, WRITER_POD] {
            s.objects.remove(path);
        }
        let mut claim = s.objects.remove(CLAIM).unwrap();
        claim["metadata"]["name"] = json!("data-db-0");
        claim["metadata"]["labels"] = json!({"app": "db"});
        s.objects.insert(STS_CLAIM.into(), claim);
        s.objects.get_mut(PV).unwrap()["spec"]["claimRef"]["name"] = json!("data-db-0");
        s.objects.insert(
            STATEFULSET.into(),
            json!({
                "apiVersion": "apps/v1", "kind": "StatefulSet",
                "metadata": {"name": "db", "namespace": "legacy", "uid": "sts-uid"},
                "spec": {"replicas": 1, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                         "template": {"metadata": {"labels": {"app": "db"}}, "spec": sts_pod_spec()},
                         "volumeClaimTemplates": [{"metadata": {"name": "data"},
                             "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "legacy-flex",
                                      "resources": {"requests": {"storage": "64Mi"}}}}]}
            }),
        );
        s.objects.insert(STS_POD.into(), sts_pod());
    }
    state
}

fn sts_pod_spec() -> Value {
    json!({"containers": [{"name": "db", "image": "csi-workshop:0.1.0",
                           "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]})
}

/// The StatefulSet controller adds the template's claim as a volume.
fn sts_pod() -> Value {
    let mut spec = sts_pod_spec();
    spec["volumes"] = json!([{"name": "data", "persistentVolumeClaim": {"claimName": "data-db-0"}}]);
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "db-0", "namespace": "legacy", "labels": {"app": "db"}},
           "spec": spec, "status": {"phase": "Running"}})
}

fn pod_spec() -> Value {
    json!({"containers": [{"name": "writer", "image": "csi-workshop:0.1.0"}],
           "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]})
}

fn writer_pod() -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "writer-0", "namespace": "legacy", "labels": {"app": "writer"}},
           "spec": pod_spec(), "status": {"phase": "Running"}})
}

/// A kube client whose every request this fake answers.
pub fn client(state: Shared) -> kube::Client {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let bytes = body.collect_bytes().await.unwrap_or_default();
            let body: Option<Value> = serde_json::from_slice(&bytes).ok();
            let (status, reply) = state.lock().unwrap().answer(&parts.method, parts.uri.path(), body);
            let response = Response::builder().status(status).header("content-type", "application/json");
            let bytes = match reply {
                Value::String(text) => text.into_bytes(),
                other => serde_json::to_vec(&other).unwrap(),
            };
            send.send_response(response.body(Body::from(bytes)).unwrap());
        }
    });
    kube::Client::new(service, "default")
}

/// The same fake as a plain HTTP/1.1 server on 127.0.0.1, for running the
/// `csi-migrate` binary against it (a kubeconfig pointing at the address).
/// Just enough HTTP for kube's client: keep-alive, Content-Length bodies.
pub async fn serve_http(state: Shared) -> std::net::SocketAddr {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let state = state.clone();
            // One write per reply and no Nagle: else each reply waits for a delayed ACK.
            let _ = socket.set_nodelay(true);
            tokio::spawn(async move {
                let mut conn = BufReader::new(socket);
                loop {
                    let mut line = String::new();
                    if conn.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return; // the client hung up (or was killed)
                    }
                    let mut parts = line.split_whitespace();
                    let (Some(method), Some(target)) = (parts.next(), parts.next()) else { return };
                    let method: Method = method.parse().unwrap();
                    let path = target.split('?').next().unwrap_or_default().to_owned();
                    let mut length = 0;
                    loop {
                        let mut header = String::new();
                        if conn.read_line(&mut header).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let header = header.trim_end();
                        if header.is_empty() {
                            break;
                        }
                        if let Some((name, value)) = header.split_once(':')
                            && name.eq_ignore_ascii_case("content-length")
                        {
                            length = value.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut bytes = vec![0; length];
                    if conn.read_exact(&mut bytes).await.is_err() {
                        return;
                    }
                    let body: Option<Value> = serde_json::from_slice(&bytes).ok();
                    let (status, reply) = state.lock().unwrap().answer(&method, &path, body);
                    let bytes = match reply {
                        Value::String(text) => text.into_bytes(),
                        other => serde_json::to_vec(&other).unwrap(),
                    };
                    let mut reply = format!(
                        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                        status.as_u16(),
                        status.canonical_reason().unwrap_or("Status"),
                        bytes.len()
                    )
                    .into_bytes();
                    reply.extend(bytes);
                    let socket = conn.get_mut();
                    if socket.write_all(&reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// A kubeconfig for [`serve_http`]'s address.
pub fn kubeconfig(addr: std::net::SocketAddr) -> String {
    format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: fake\n\
         clusters: [{{name: fake, cluster: {{server: 'http://{addr}'}}}}]\n\
         users: [{{name: fake, user: {{}}}}]\n\
         contexts: [{{name: fake, context: {{cluster: fake, user: fake}}}}]\n"
    )
}

fn status(code: StatusCode, reason: &str, message: String) -> (StatusCode, Value) {
    (
        code,
        json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "reason": reason, "message": message, "code": code.as_u16()}),
    )
}

/// RFC 7386 JSON merge patch.
pub fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(fields) => {
            if !target.is_object() {
                *target = json!({});
            }
            let map = target.as_object_mut().unwrap();
            for (k, v) in fields {
                if v.is_null() {
                    map.remove(k);
                } else {
                    merge(map.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

impl State {
    pub fn get(&self, path: &str) -> Option<&Value> {
        self.objects.get(path)
    }

    fn answer(&mut self, method: &Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let reply = self.handle(method, path, body);
        if *method == Method::GET {
            // The pvc-protection controller lifts the finalizer of a deleted
            // claim soon after: it is seen terminating once, then it is gone.
            if path.contains("/persistentvolumeclaims/")
                && self.objects.get(path).is_some_and(|c| c["metadata"]["deletionTimestamp"].is_string())
            {
                self.objects.remove(path);
            }
        } else {
            self.sync_claims();
        }
        reply
    }

    fn handle(&mut self, method: &Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
        let last = *segments.last().unwrap();
        if *method != Method::GET {
            self.writes.push(format!("{method} {path}"));
            if self.fail_write == Some(self.writes.len()) {
                return status(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalError",
                    "injected failure (the run is interrupted here)".into(),
                );
            }
        }
        if last == "log" {
            let n =
                self.writes.iter().filter(|w| w.starts_with("POST") && w.contains("/pods")).count().max(1);
            let sum = self.checksums.get(n - 1).or(self.checksums.last()).cloned().unwrap_or_default();
            return (StatusCode::OK, Value::String(format!("{sum}\n")));
        }
        if COLLECTIONS.contains(&last) {
            return match *method {
                Method::GET => {
                    let prefix = format!("{path}/");
                    let items: Vec<Value> = self
                        .objects
                        .iter()
                        .filter(|(k, _)| k.strip_prefix(&prefix).is_some_and(|rest| !rest.contains('/')))
                        .map(|(_, v)| v.clone())
                        .collect();
                    (
                        StatusCode::OK,
                        json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": items}),
                    )
                }
                Method::POST => self.create(path, body.unwrap_or_default()),
                _ => status(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", format!("{method} {path}")),
            };
        }
        let name = last.to_owned();
        let Some(current) = self.objects.get(path).cloned() else {
            return status(StatusCode::NOT_FOUND, "NotFound", format!("{path} not found ({name})"));
        };
        match *method {
            Method::GET => (StatusCode::OK, current),
            Method::PATCH => {
                let mut object = current;
                merge(&mut object, &body.unwrap_or_default());
                self.bump(&mut object);
                self.after_patch(path, &object);
                let finalizers_left =
                    object["metadata"]["finalizers"].as_array().is_some_and(|f| !f.is_empty());
                if object["metadata"]["deletionTimestamp"].is_string() && !finalizers_left {
                    self.objects.remove(path);
                } else {
                    self.objects.insert(path.to_owned(), object.clone());
                }
                (StatusCode::OK, object)
            }
            Method::DELETE => {
                if path.contains("/persistentvolumes/")
                    && current["spec"]["persistentVolumeReclaimPolicy"] != "Retain"
                {
                    self.violations.push(format!(
                        "deleted {path} with reclaim policy {}",
                        current["spec"]["persistentVolumeReclaimPolicy"]
                    ));
                }
                if path.contains("/persistentvolumes/") {
                    for pod in self.pods_using(&current) {
                        self.violations.push(format!("deleted {path} while pod {pod} uses its claim"));
                    }
                }
                if current["metadata"]["finalizers"].as_array().is_some_and(|f| !f.is_empty()) {
                    let mut object = current;
                    object["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
                    self.objects.insert(path.to_owned(), object.clone());
                    (StatusCode::OK, object)
                } else {
                    self.objects.remove(path);
                    (StatusCode::OK, current)
                }
            }
            _ => status(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", format!("{method} {path}")),
        }
    }

    /// The Pods (but the tool's own, and finished ones) that mount the
    /// claim a PV is bound to.
    pub fn pods_using(&self, pv: &Value) -> Vec<String> {
        let claim = &pv["spec"]["claimRef"];
        let (Some(ns), Some(name)) = (claim["namespace"].as_str(), claim["name"].as_str()) else {
            return vec![];
        };
        let prefix = format!("/api/v1/namespaces/{ns}/pods/");
        self.objects
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .filter(|(_, p)| p["metadata"]["labels"]["app.kubernetes.io/managed-by"] != "csi-migrate")
            .filter(|(_, p)| !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed")))
            .filter(|(_, p)| {
                p["spec"]["volumes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|v| v["persistentVolumeClaim"]["claimName"] == name)
            })
            .map(|(k, _)| k.trim_start_matches(&prefix).to_owned())
            .collect()
    }

    fn bump(&mut self, object: &mut Value) {
        self.counter += 1;
        object["metadata"]["resourceVersion"] = json!(format!("{}", 100 + self.counter));
    }

    fn create(&mut self, collection: &str, mut object: Value) -> (StatusCode, Value) {
        let name = object["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        let path = format!("{collection}/{name}");
        if self.objects.contains_key(&path) {
            return status(StatusCode::CONFLICT, "AlreadyExists", format!("{path} already exists"));
        }
        self.bump(&mut object);
        object["metadata"]["uid"] = json!(format!("uid-{}", self.counter));
        if let Some(ns) = collection.split('/').skip_while(|s| *s != "namespaces").nth(1) {
            object["metadata"]["namespace"] = json!(ns);
        }
        if collection.ends_with("/persistentvolumes") {
            object["metadata"]["finalizers"] = json!(["kubernetes.io/pv-protection"]);
            object["status"] = json!({"phase": "Bound"});
        }
        if collection.ends_with("/persistentvolumeclaims") {
            object["metadata"]["finalizers"] = json!(["kubernetes.io/pvc-protection"]);
            object["status"] = json!({"phase": "Pending"});
        }
        if collection.ends_with("/pods")
            && object["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "csi-migrate"
        {
            object["status"] = json!({"phase": "Succeeded"});
        }
        self.objects.insert(path, object.clone());
        (StatusCode::CREATED, object)
    }

    /// Deployment and StatefulSet controllers, reduced: 0 replicas removes
    /// the Pod, more brings it back.
    fn after_patch(&mut self, path: &str, object: &Value) {
        let (pod_path, pod) = match path {
            DEPLOYMENT => (WRITER_POD, writer_pod()),
            STATEFULSET => (STS_POD, sts_pod()),
            _ => return,
        };
        if object["spec"]["replicas"] == 0 {
            self.objects.remove(pod_path);
        } else if !self.objects.contains_key(pod_path) {
            self.objects.insert(pod_path.into(), pod);
        }
    }

    /// PV controller, reduced, run after every write: a pre-bound Pending
    /// claim binds once the PV's claimRef carries its UID; a Bound claim
    /// whose PV is gone becomes Lost, and (if the mode says so) Bound again
    /// once the PV is back with its UID.
    fn sync_claims(&mut self) {
        let claims: Vec<String> =
            self.objects.keys().filter(|k| k.contains("/persistentvolumeclaims/")).cloned().collect();
        for path in claims {
            let claim = &self.objects[&path];
            let Some(volume) = claim["spec"]["volumeName"].as_str() else { continue };
            let pv = self.objects.get(&format!("/api/v1/persistentvolumes/{volume}"));
            let ours = pv.is_some_and(|pv| {
                let uid = &pv["spec"]["claimRef"]["uid"];
                uid.is_null() || *uid == claim["metadata"]["uid"]
            });
            let phase = match (claim["status"]["phase"].as_str().unwrap_or("Pending"), self.pv_controller) {
                ("Pending", _) if ours => "Bound",
                ("Bound", PvController::LosesAndRebinds | PvController::LosesForGood) if pv.is_none() => {
                    "Lost"
                }
                ("Lost", PvController::LosesAndRebinds) if ours => "Bound",
                (phase, _) => phase,
            }
            .to_owned();
            self.objects.get_mut(&path).unwrap()["status"]["phase"] = json!(phase);
        }
    }
}
