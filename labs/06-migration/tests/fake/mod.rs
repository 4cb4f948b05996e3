//! A Kubernetes API faked at the HTTP level: kube-rs's `Client` talks to a
//! `tower_test::mock` service, and this task answers with JSON from an
//! in-memory store. Just enough API server for csi-migrate: get, list,
//! create, merge patch, delete with finalizers, pod logs, and the one bit of
//! controller behaviour the tool waits for (scaling a Deployment to 0 removes
//! its Pods; the tool's checksum Pods succeed at once).
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
    counter: u64,
}

pub type Shared = Arc<Mutex<State>>;

pub const PV: &str = "/api/v1/persistentvolumes/legacy-1";
pub const DEPLOYMENT: &str = "/apis/apps/v1/namespaces/legacy/deployments/writer";
pub const CLAIM: &str = "/api/v1/namespaces/legacy/persistentvolumeclaims/data";
pub const WRITER_POD: &str = "/api/v1/namespaces/legacy/pods/writer-0";
pub const JOURNAL: &str = "/api/v1/namespaces/csi-workshop/configmaps/csi-migrate-journal";
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
        "metadata": {"name": "data", "namespace": "legacy", "uid": "claim-uid", "resourceVersion": "3"},
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
        if collection.ends_with("/pods")
            && object["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "csi-migrate"
        {
            object["status"] = json!({"phase": "Succeeded"});
        }
        self.objects.insert(path, object.clone());
        (StatusCode::CREATED, object)
    }

    /// Deployment controller, reduced: 0 replicas removes the Pods, more
    /// brings one back.
    fn after_patch(&mut self, path: &str, object: &Value) {
        if path != DEPLOYMENT {
            return;
        }
        if object["spec"]["replicas"] == 0 {
            self.objects.remove(WRITER_POD);
        } else if !self.objects.contains_key(WRITER_POD) {
            self.objects.insert(WRITER_POD.into(), writer_pod());
        }
    }
}
