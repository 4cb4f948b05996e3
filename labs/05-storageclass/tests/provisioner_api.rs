//! The provisioner's controller glue against a fake API server (tower-test
//! mock answering canned JSON) and the real lab 02 driver on a temp socket
//! over a temp backend: create, refuse, expand and delete flows, request by
//! request. No cluster, no root.

mod fake_http;

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::CSINode;
use kube::Client;
use kube::client::Body;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector;
use kube::runtime::watcher;
use lab01_identity::csi::controller_client::ControllerClient;
use lab01_identity::csi::controller_server::ControllerServer;
use lab01_identity::csi::{CapacityRange, CreateVolumeRequest};
use lab01_identity::testing::TestServer;
use lab02_controller::backend::Backend;
use lab02_controller::controller::ControllerService;
use lab02_controller::topology::TopologyKeys;
use lab05_storageclass::provisioner::controller::{self, Context};
use lab05_storageclass::provisioner::decide::FINALIZER;
use serde_json::{Value, json};

const DRIVER: &str = "csi.workshop.dev";
const BACKEND_KEY: &str = "topology.csi.workshop.dev/backend";
const NODE_KEY: &str = "topology.csi.workshop.dev/node";
const MIB: i64 = 1 << 20;

/// One request the fake API server received.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path: String,
    body: Value,
}

/// The lab 02 driver on `<tmp>/csi.sock`, over `<tmp>/backend`.
struct Driver {
    _dir: tempfile::TempDir,
    _server: TestServer,
    backend: Backend,
    client: ControllerClient<tonic::transport::Channel>,
}

impl Driver {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let backend = Backend::open(&dir.path().join("backend")).unwrap();
        let service = ControllerService::new(backend.clone(), TopologyKeys::for_driver(DRIVER), 1 << 40);
        let router = lab01_identity::server::grpc_server().add_service(ControllerServer::new(service));
        let server = TestServer::start(router, dir.path()).await;
        let client = ControllerClient::new(server.channel().await);
        Self { _dir: dir, _server: server, backend, client }
    }

    /// A volume made directly with CreateVolume, as if provisioned before.
    async fn existing_volume(&self, name: &str, kind: &str, bytes: i64) {
        let cap = lab02_controller::capability::capability(
            lab01_identity::csi::volume_capability::access_mode::Mode::SingleNodeWriter,
            kind == "block",
            "ext4",
        );
        let request = CreateVolumeRequest {
            name: name.into(),
            capacity_range: Some(CapacityRange { required_bytes: bytes, limit_bytes: 0 }),
            volume_capabilities: vec![cap],
            parameters: [("type".to_owned(), kind.to_owned())].into(),
            ..Default::default()
        };
        self.client.clone().create_volume(request).await.expect("CreateVolume for the test setup");
    }
}

/// A fake API server: `answer(method, path, body)` gives status and JSON.
/// Returns the client and the task that yields every request, in order,
/// once all clients are dropped.
fn fake_api(
    answer: impl Fn(&Method, &str, &Value) -> (u16, Value) + Send + 'static,
) -> (Client, tokio::task::JoinHandle<Vec<Seen>>) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let server = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some((request, respond)) = handle.next_request().await {
            let (parts, body) = fake_http::read_json(request).await;
            let path = parts.uri.path().to_owned();
            let (status, json) = answer(&parts.method, &path, &body);
            seen.push(Seen { method: parts.method, path, body });
            let response = Response::builder()
                .status(StatusCode::from_u16(status).unwrap())
                .body(Body::from(serde_json::to_vec(&json).unwrap()))
                .unwrap();
            respond.send_response(response);
        }
        seen
    });
    (Client::new(service, "default"), server)
}

fn not_found(what: &str) -> (u16, Value) {
    (
        404,
        json!({"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
               "message": format!("{what} not found"), "reason": "NotFound", "code": 404}),
    )
}

/// POST echoes the object back, as the API server would.
fn echo(body: &Value) -> (u16, Value) {
    let mut created = body.clone();
    created["metadata"]["uid"] = json!("created-uid");
    created["metadata"]["resourceVersion"] = json!("1");
    (201, created)
}

fn context(client: Client, driver: &Driver) -> Arc<Context> {
    context_with(client, driver, &[("worker1", Some(driver.backend.id()))])
}

/// A Context whose caches hold these nodes, each running our node plugin
/// (a CSINode entry with both topology keys), labelled with the backend id
/// given (`None`: the Node lacks the backend label).
fn context_with(client: Client, driver: &Driver, workers: &[(&str, Option<&str>)]) -> Arc<Context> {
    let (nodes, mut nodes_writer) = reflector::store::<Node>();
    let (csinodes, mut csinodes_writer) = reflector::store::<CSINode>();
    for (name, backend) in workers {
        let mut labels = json!({NODE_KEY: name});
        if let Some(backend) = backend {
            labels[BACKEND_KEY] = json!(backend);
        }
        let node: Node =
            serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap();
        let csinode: CSINode = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"drivers": [{"name": DRIVER, "nodeID": name, "topologyKeys": [BACKEND_KEY, NODE_KEY]}]}
        }))
        .unwrap();
        nodes_writer.apply_watcher_event(&watcher::Event::Apply(node));
        csinodes_writer.apply_watcher_event(&watcher::Event::Apply(csinode));
    }
    Arc::new(Context {
        recorder: Recorder::new(
            client.clone(),
            Reporter { controller: "csi-provisioner-rs".into(), instance: Some("test".into()) },
        ),
        client,
        csi: driver.client.clone(),
        driver: DRIVER.into(),
        nodes,
        csinodes,
        timeout: Duration::from_secs(10),
        expansion: true,
    })
}

fn class(params: Value, extra: Value) -> Value {
    let mut class = json!({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": "workshop-block"},
        "provisioner": DRIVER,
        "parameters": params,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
    });
    class.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    class
}

fn claim(class: &str, size: &str, volume_name: Option<&str>) -> PersistentVolumeClaim {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data", "namespace": "apps", "uid": "0a1b2c", "resourceVersion": "7",
                     "annotations": {"volume.kubernetes.io/storage-provisioner": DRIVER}},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": class,
                 "resources": {"requests": {"storage": size}}, "volumeName": volume_name},
    }))
    .unwrap()
}

fn calls(seen: &[Seen]) -> Vec<String> {
    seen.iter().map(|s| format!("{} {}", s.method, s.path)).collect()
}

/// A VolumeAttachmentList with one attachment of `pvc-0a1b2c` per node.
fn attachments(nodes: &[&str]) -> Value {
    let items: Vec<Value> = nodes
        .iter()
        .map(|node| {
            json!({"metadata": {"name": format!("csi-{node}")},
                   "spec": {"attacher": DRIVER, "nodeName": node, "source": {"persistentVolumeName": "pvc-0a1b2c"}},
                   "status": {"attached": true}})
        })
        .collect();
    json!({"apiVersion": "storage.k8s.io/v1", "kind": "VolumeAttachmentList", "metadata": {}, "items": items})
}

fn events(seen: &[Seen]) -> Vec<(String, String)> {
    seen.iter()
        .filter(|s| s.method == Method::POST && s.path.ends_with("/events"))
        .map(|s| {
            (
                s.body["reason"].as_str().unwrap_or("").to_owned(),
                s.body["note"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_claim_of_our_class_becomes_a_volume_a_pv_and_an_event() {
    let driver = Driver::start().await;
    let sc = class(json!({"type": "block"}), json!({"mountOptions": ["noatime"]}));
    let (client, server) = fake_api(move |method, path, body| match (method.as_str(), path) {
        ("GET", "/apis/storage.k8s.io/v1/storageclasses/workshop-block") => (200, sc.clone()),
        ("GET", "/api/v1/persistentvolumes/pvc-0a1b2c") => not_found("pv"),
        ("POST", "/api/v1/persistentvolumes") => echo(body),
        ("POST", "/apis/events.k8s.io/v1/namespaces/apps/events") => echo(body),
        other => panic!("unexpected request {other:?}"),
    });
    let ctx = context(client, &driver);
    controller::reconcile_claim(Arc::new(claim("workshop-block", "64Mi", None)), ctx.clone())
        .await
        .expect("the claim is provisioned");
    drop(ctx);
    let seen = server.await.unwrap();
    assert_eq!(
        calls(&seen),
        [
            "GET /apis/storage.k8s.io/v1/storageclasses/workshop-block",
            "GET /api/v1/persistentvolumes/pvc-0a1b2c",
            "POST /api/v1/persistentvolumes",
            "POST /apis/events.k8s.io/v1/namespaces/apps/events",
        ],
        "provisioning reads the class, looks for the PV, creates it and records an Event; \
         stopping after the class means decide::is_ours refused the claim"
    );

    // The volume exists on the backend, named after the claim's uid.
    let record = driver.backend.load("pvc-0a1b2c").unwrap().expect("CreateVolume made the volume");
    assert_eq!(record.capacity_bytes, 64 * MIB);

    let pv: PersistentVolume = serde_json::from_value(seen[2].body.clone()).unwrap();
    let spec = pv.spec.unwrap();
    let csi = spec.csi.unwrap();
    assert_eq!((csi.driver.as_str(), csi.volume_handle.as_str()), (DRIVER, "pvc-0a1b2c"));
    assert_eq!(csi.volume_attributes.unwrap()["type"], "block", "volume_context becomes volumeAttributes");
    assert_eq!(spec.capacity.unwrap()["storage"].0, (64 * MIB).to_string());
    assert_eq!(spec.claim_ref.unwrap().uid.as_deref(), Some("0a1b2c"));
    assert_eq!(spec.mount_options, Some(vec!["noatime".to_owned()]));
    assert_eq!(pv.metadata.finalizers, Some(vec![FINALIZER.to_owned()]));
    let term = &spec.node_affinity.unwrap().required.unwrap().node_selector_terms[0];
    let expr = &term.match_expressions.as_ref().unwrap()[0];
    assert_eq!(
        (expr.key.as_str(), expr.values.clone().unwrap()),
        (BACKEND_KEY, vec![driver.backend.id().to_owned()])
    );

    assert_eq!(
        events(&seen),
        [("ProvisioningSucceeded".to_owned(), "Successfully provisioned volume pvc-0a1b2c".to_owned())]
    );
}

#[tokio::test]
async fn a_claim_whose_pv_exists_is_left_alone() {
    let driver = Driver::start().await;
    let sc = class(json!({"type": "block"}), json!({}));
    let (client, server) = fake_api(move |method, path, _| match (method.as_str(), path) {
        ("GET", "/apis/storage.k8s.io/v1/storageclasses/workshop-block") => (200, sc.clone()),
        ("GET", "/api/v1/persistentvolumes/pvc-0a1b2c") => {
            (200, json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "pvc-0a1b2c"}}))
        }
        other => panic!("unexpected request {other:?}: the PV exists, nothing to create"),
    });
    let ctx = context(client, &driver);
    controller::reconcile_claim(Arc::new(claim("workshop-block", "64Mi", None)), ctx.clone()).await.unwrap();
    drop(ctx);
    assert_eq!(
        server.await.unwrap().len(),
        2,
        "GET class, GET PV; stopping after the class means decide::is_ours refused the claim"
    );
    assert!(driver.backend.load("pvc-0a1b2c").unwrap().is_none(), "no CreateVolume");
}

#[tokio::test]
async fn a_claim_of_a_missing_class_gets_a_warning_event_and_no_crash() {
    let driver = Driver::start().await;
    let (client, server) = fake_api(|method, path, body| match (method.as_str(), path) {
        ("GET", "/apis/storage.k8s.io/v1/storageclasses/nope") => not_found("storageclass"),
        ("POST", "/apis/events.k8s.io/v1/namespaces/apps/events") => echo(body),
        other => panic!("unexpected request {other:?}"),
    });
    let ctx = context(client, &driver);
    controller::reconcile_claim(Arc::new(claim("nope", "64Mi", None)), ctx.clone())
        .await
        .expect("a missing class is an Event, not an error");
    drop(ctx);
    let seen = server.await.unwrap();
    assert_eq!(
        events(&seen),
        [("ProvisioningFailed".to_owned(), "StorageClass \"nope\" not found".to_owned())]
    );
}

#[tokio::test]
async fn a_create_volume_error_becomes_an_event_with_its_code() {
    let driver = Driver::start().await;
    let sc = class(json!({"type": "tape"}), json!({}));
    let (client, server) = fake_api(move |method, path, body| match (method.as_str(), path) {
        ("GET", "/apis/storage.k8s.io/v1/storageclasses/workshop-block") => (200, sc.clone()),
        ("GET", "/api/v1/persistentvolumes/pvc-0a1b2c") => not_found("pv"),
        ("POST", "/apis/events.k8s.io/v1/namespaces/apps/events") => echo(body),
        other => panic!("unexpected request {other:?}: no PV after a failed CreateVolume"),
    });
    let ctx = context(client, &driver);
    let err = controller::reconcile_claim(Arc::new(claim("workshop-block", "64Mi", None)), ctx.clone())
        .await
        .expect_err("the driver refuses type=tape (if this passed, decide::is_ours refused the claim before CreateVolume)");
    drop(ctx);
    assert!(err.to_string().contains("InvalidArgument"), "{err}");
    let events = events(&server.await.unwrap());
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].0, "ProvisioningFailed");
    assert!(
        events[0].1.contains("CreateVolume failed: InvalidArgument") && events[0].1.contains("tape"),
        "{events:?}"
    );
}

fn pv_json(phase: &str, policy: &str, capacity: i64, deleting: bool) -> PersistentVolume {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": "pvc-0a1b2c", "resourceVersion": "9", "finalizers": [FINALIZER],
                     "annotations": {"pv.kubernetes.io/provisioned-by": DRIVER},
                     "deletionTimestamp": if deleting { json!("2026-01-01T00:00:00Z") } else { Value::Null }},
        "spec": {"capacity": {"storage": capacity.to_string()}, "accessModes": ["ReadWriteOnce"],
                 "persistentVolumeReclaimPolicy": policy, "storageClassName": "workshop-block",
                 "volumeMode": "Filesystem",
                 "csi": {"driver": DRIVER, "volumeHandle": "pvc-0a1b2c", "fsType": "ext4"}},
        "status": {"phase": phase},
    }))
    .unwrap()
}

#[tokio::test]
async fn a_bigger_request_expands_the_volume_and_the_pv_and_asks_the_node_to_follow() {
    let driver = Driver::start().await;
    driver.existing_volume("pvc-0a1b2c", "block", 64 * MIB).await;
    let sc = class(json!({"type": "block"}), json!({"allowVolumeExpansion": true}));
    let pv = serde_json::to_value(pv_json("Bound", "Delete", 64 * MIB, false)).unwrap();
    let (client, server) = fake_api(move |method, path, body| match (method.as_str(), path) {
        ("GET", "/api/v1/persistentvolumes/pvc-0a1b2c") => (200, pv.clone()),
        ("GET", "/apis/storage.k8s.io/v1/storageclasses/workshop-block") => (200, sc.clone()),
        ("PATCH", "/api/v1/persistentvolumes/pvc-0a1b2c") => (200, pv.clone()),
        ("PATCH", "/api/v1/namespaces/apps/persistentvolumeclaims/data/status") => {
            (200, serde_json::to_value(claim("workshop-block", "128Mi", Some("pvc-0a1b2c"))).unwrap())
        }
        ("POST", "/apis/events.k8s.io/v1/namespaces/apps/events") => echo(body),
        other => panic!("unexpected request {other:?}"),
    });
    let ctx = context(client, &driver);
    controller::reconcile_claim(Arc::new(claim("workshop-block", "128Mi", Some("pvc-0a1b2c"))), ctx.clone())
        .await
        .expect("expanded");
    drop(ctx);
    let seen = server.await.unwrap();
    assert_eq!(
        driver.backend.load("pvc-0a1b2c").unwrap().unwrap().capacity_bytes,
        128 * MIB,
        "ControllerExpandVolume ran"
    );
    let patch_pv = seen
        .iter()
        .find(|s| s.method == Method::PATCH && s.path.ends_with("/pvc-0a1b2c"))
        .expect("PV patched");
    assert_eq!(patch_pv.body, json!({"spec": {"capacity": {"storage": (128 * MIB).to_string()}}}));
    let patch_pvc = seen.iter().find(|s| s.path.ends_with("/status")).expect("claim status patched");
    assert_eq!(
        patch_pvc.body["status"]["allocatedResourceStatuses"]["storage"], "NodeResizePending",
        "a block volume needs NodeExpandVolume: kubelet looks for NodeResizePending"
    );
    assert_eq!(events(&seen)[0].0, "VolumeResizeSuccessful");
}

#[tokio::test]
async fn a_released_delete_pv_loses_its_volume_then_its_object() {
    let driver = Driver::start().await;
    driver.existing_volume("pvc-0a1b2c", "file", 64 * MIB).await;
    let (client, server) = fake_api(|method, path, _| match (method.as_str(), path) {
        ("GET", "/apis/storage.k8s.io/v1/volumeattachments") => (200, attachments(&[])),
        ("DELETE", "/api/v1/persistentvolumes/pvc-0a1b2c") => {
            (200, serde_json::to_value(pv_json("Released", "Delete", 64 * MIB, true)).unwrap())
        }
        other => panic!("unexpected request {other:?}"),
    });
    let ctx = context(client, &driver);
    controller::reconcile_volume(Arc::new(pv_json("Released", "Delete", 64 * MIB, false)), ctx.clone())
        .await
        .expect("deleted");
    drop(ctx);
    let seen = server.await.unwrap();
    assert_eq!(
        calls(&seen),
        ["GET /apis/storage.k8s.io/v1/volumeattachments", "DELETE /api/v1/persistentvolumes/pvc-0a1b2c"],
        "no attachment left, so DeleteVolume, then DELETE the PV: decide::on_released must answer Delete"
    );
    assert!(
        driver.backend.load("pvc-0a1b2c").unwrap().is_none(),
        "DeleteVolume removed the volume from the backend"
    );
}

#[tokio::test]
async fn a_deleted_pv_gets_its_finalizer_removed_after_delete_volume() {
    let driver = Driver::start().await;
    driver.existing_volume("pvc-0a1b2c", "file", 64 * MIB).await;
    let (client, server) = fake_api(|method, path, _| match (method.as_str(), path) {
        ("GET", "/apis/storage.k8s.io/v1/volumeattachments") => (200, attachments(&[])),
        ("PATCH", "/api/v1/persistentvolumes/pvc-0a1b2c") => {
            (200, serde_json::to_value(pv_json("Released", "Delete", 64 * MIB, true)).unwrap())
        }
        other => panic!("unexpected request {other:?}"),
    });
    let ctx = context(client, &driver);
    controller::reconcile_volume(Arc::new(pv_json("Released", "Delete", 64 * MIB, true)), ctx.clone())
        .await
        .expect("finalized");
    drop(ctx);
    let seen = server.await.unwrap();
    assert_eq!(seen.len(), 2, "{seen:#?}");
    assert_eq!(
        seen[1].body[1],
        json!({"op": "remove", "path": "/metadata/finalizers/0"}),
        "kube's finalizer helper"
    );
    assert!(driver.backend.load("pvc-0a1b2c").unwrap().is_none(), "the volume went first");
}

#[tokio::test]
async fn retain_and_bound_pvs_are_left_alone() {
    let driver = Driver::start().await;
    driver.existing_volume("pvc-0a1b2c", "file", 64 * MIB).await;
    let (client, server) = fake_api(|method, path, _| panic!("unexpected request {method} {path}"));
    let ctx = context(client, &driver);
    let mut retained = pv_json("Released", "Retain", 64 * MIB, false);
    retained.metadata.finalizers = None;
    controller::reconcile_volume(Arc::new(retained), ctx.clone()).await.unwrap();
    controller::reconcile_volume(Arc::new(pv_json("Bound", "Delete", 64 * MIB, false)), ctx.clone())
        .await
        .unwrap();
    drop(ctx);
    assert!(server.await.unwrap().is_empty());
    assert!(driver.backend.load("pvc-0a1b2c").unwrap().is_some(), "the volume stays");
}

fn wffc_class() -> Value {
    class(json!({"type": "block"}), json!({"volumeBindingMode": "WaitForFirstConsumer"}))
}

/// A claim of `class` with extra annotations (the storage-provisioner one is always there).
fn annotated(class: &str, annotations: Value) -> PersistentVolumeClaim {
    let mut pvc = claim(class, "64Mi", None);
    let map = pvc.metadata.annotations.get_or_insert_default();
    for (k, v) in annotations.as_object().unwrap() {
        map.insert(k.clone(), v.as_str().unwrap().to_owned());
    }
    pvc
}

#[tokio::test]
async fn a_wait_for_first_consumer_claim_waits_for_its_node_then_gets_a_volume_for_that_node() {
    let driver = Driver::start().await;
    let sc = wffc_class();
    let (client, server) = fake_api(move |method, path, body| match (method.as_str(), path) {
        ("GET", "/apis/storage.k8s.io/v1/storageclasses/workshop-block") => (200, sc.clone()),
        ("GET", "/api/v1/persistentvolumes/pvc-0a1b2c") => not_found("pv"),
        ("POST", "/api/v1/persistentvolumes") => echo(body),
        ("POST", "/apis/events.k8s.io/v1/namespaces/apps/events") => echo(body),
        other => panic!("unexpected request {other:?}"),
    });
    let ctx = context_with(
        client,
        &driver,
        &[("worker1", Some(driver.backend.id())), ("worker2", Some(driver.backend.id()))],
    );

    // Before the scheduler has chosen: nothing happens, not even an Event.
    controller::reconcile_claim(Arc::new(annotated("workshop-block", json!({}))), ctx.clone())
        .await
        .expect("waiting is not an error");
    assert!(
        driver.backend.load("pvc-0a1b2c").unwrap().is_none(),
        "no CreateVolume before a node is selected"
    );

    // The scheduler wrote selected-node=worker2.
    let selected = annotated("workshop-block", json!({"volume.kubernetes.io/selected-node": "worker2"}));
    controller::reconcile_claim(Arc::new(selected), ctx.clone()).await.expect("provisioned");
    drop(ctx);
    let seen = server.await.unwrap();
    assert_eq!(
        calls(&seen),
        [
            "GET /apis/storage.k8s.io/v1/storageclasses/workshop-block",
            "GET /api/v1/persistentvolumes/pvc-0a1b2c",
            "GET /apis/storage.k8s.io/v1/storageclasses/workshop-block",
            "GET /api/v1/persistentvolumes/pvc-0a1b2c",
            "POST /api/v1/persistentvolumes",
            "POST /apis/events.k8s.io/v1/namespaces/apps/events",
        ],
        "the first pass stops at WaitingForNode; the second provisions"
    );
    assert!(driver.backend.load("pvc-0a1b2c").unwrap().is_some(), "CreateVolume ran once the node was known");
    let pv: PersistentVolume = serde_json::from_value(seen[4].body.clone()).unwrap();
    let spec = pv.spec.unwrap();
    let term =
        &spec.node_affinity.expect("pinned to the volume's topology").required.unwrap().node_selector_terms
            [0];
    let expr = &term.match_expressions.as_ref().unwrap()[0];
    assert_eq!(
        (expr.key.as_str(), expr.values.clone().unwrap()),
        (BACKEND_KEY, vec![driver.backend.id().to_owned()]),
        "the driver answered with the backend segment of worker2's requisite"
    );
    assert_eq!(events(&seen)[0].0, "ProvisioningSucceeded");
}

/// The API a claim handed back to the scheduler sees: its WaitForFirstConsumer
/// class, no PV, Events, and the PATCH that removes selected-node. Anything
/// else (a PV above all) is a test failure.
fn rescheduling_api() -> (Client, tokio::task::JoinHandle<Vec<Seen>>) {
    let sc = wffc_class();
    fake_api(move |method, path, body| match (method.as_str(), path) {
        ("GET", "/apis/storage.k8s.io/v1/storageclasses/workshop-block") => (200, sc.clone()),
        ("GET", "/api/v1/persistentvolumes/pvc-0a1b2c") => not_found("pv"),
        ("POST", "/apis/events.k8s.io/v1/namespaces/apps/events") => echo(body),
        ("PATCH", "/api/v1/namespaces/apps/persistentvolumeclaims/data") => {
            (200, serde_json::to_value(claim("workshop-block", "64Mi", None)).unwrap())
        }
        other => panic!("unexpected request {other:?}: a rescheduled claim gets no PV"),
    })
}

/// The PATCH that took the selected node back, if any.
fn unselect(seen: &[Seen]) -> Option<&Value> {
    seen.iter()
        .find(|s| {
            s.method == Method::PATCH && s.path == "/api/v1/namespaces/apps/persistentvolumeclaims/data"
        })
        .map(|s| &s.body)
}

#[tokio::test]
async fn a_selected_node_without_our_plugin_is_handed_back_to_the_scheduler() {
    let driver = Driver::start().await;
    let (client, server) = rescheduling_api();
    let ctx = context(client, &driver);
    let pvc = annotated("workshop-block", json!({"volume.kubernetes.io/selected-node": "control-plane"}));
    controller::reconcile_claim(Arc::new(pvc), ctx.clone()).await.expect("rescheduling is not an error");
    drop(ctx);
    let seen = server.await.unwrap();
    assert_eq!(
        unselect(&seen),
        Some(
            &json!({"metadata": {"resourceVersion": "7", "annotations": {"volume.kubernetes.io/selected-node": null}}})
        ),
        "selected-node removed, guarded by the resourceVersion we read: {:#?}",
        calls(&seen)
    );
    let events = events(&seen);
    assert_eq!(events.len(), 1);
    assert!(
        events[0].1.contains("does not run our node plugin") && events[0].1.contains("scheduler"),
        "{events:?}"
    );
    assert!(
        driver.backend.load("pvc-0a1b2c").unwrap().is_none(),
        "no CreateVolume for a node without the plugin"
    );
}

#[tokio::test]
async fn resource_exhausted_for_the_selected_node_hands_it_back_to_the_scheduler() {
    let driver = Driver::start().await;
    let (client, server) = rescheduling_api();
    // worker2 is on another backend: the lab 02 driver cannot place a
    // volume there and answers RESOURCE_EXHAUSTED.
    let ctx = context_with(
        client,
        &driver,
        &[("worker1", Some(driver.backend.id())), ("worker2", Some("san-elsewhere"))],
    );
    let pvc = annotated("workshop-block", json!({"volume.kubernetes.io/selected-node": "worker2"}));
    controller::reconcile_claim(Arc::new(pvc), ctx.clone()).await.expect("rescheduling is not an error");
    drop(ctx);
    let seen = server.await.unwrap();
    assert!(unselect(&seen).is_some(), "selected-node removed: {:#?}", calls(&seen));
    let events = events(&seen);
    assert!(events[0].1.contains("ResourceExhausted"), "{events:?}");
    assert!(driver.backend.load("pvc-0a1b2c").unwrap().is_none());
}

#[tokio::test]
async fn claims_with_a_selector_or_a_data_source_get_an_event_and_no_volume() {
    for (what, extra, wanted) in [
        ("selector", json!({"selector": {"matchLabels": {"disk": "ssd"}}}), "spec.selector"),
        (
            "snapshot",
            json!({"dataSourceRef": {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": "snap-1"}}),
            "snapshot.storage.k8s.io/VolumeSnapshot snap-1",
        ),
    ] {
        let driver = Driver::start().await;
        let sc = class(json!({"type": "block"}), json!({}));
        let (client, server) = fake_api(move |method, path, body| match (method.as_str(), path) {
            ("GET", "/apis/storage.k8s.io/v1/storageclasses/workshop-block") => (200, sc.clone()),
            ("GET", "/api/v1/persistentvolumes/pvc-0a1b2c") => not_found("pv"),
            ("POST", "/apis/events.k8s.io/v1/namespaces/apps/events") => echo(body),
            other => panic!("unexpected request {other:?}"),
        });
        let ctx = context(client, &driver);
        let mut pvc = serde_json::to_value(claim("workshop-block", "64Mi", None)).unwrap();
        pvc["spec"].as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let pvc: PersistentVolumeClaim = serde_json::from_value(pvc).unwrap();
        controller::reconcile_claim(Arc::new(pvc), ctx.clone())
            .await
            .expect("a refusal is an Event, not an error");
        drop(ctx);
        let events = events(&server.await.unwrap());
        assert_eq!(events.len(), 1, "{what}: {events:?}");
        assert_eq!(events[0].0, "ProvisioningFailed", "{what}");
        assert!(events[0].1.contains(wanted), "{what}: {events:?}");
        assert!(driver.backend.load("pvc-0a1b2c").unwrap().is_none(), "{what}: no CreateVolume");
    }
}

#[tokio::test]
async fn an_immediate_claim_whose_only_node_lacks_a_topology_label_gets_an_event() {
    let driver = Driver::start().await;
    let sc = class(json!({"type": "block"}), json!({}));
    let (client, server) = fake_api(move |method, path, body| match (method.as_str(), path) {
        ("GET", "/apis/storage.k8s.io/v1/storageclasses/workshop-block") => (200, sc.clone()),
        ("GET", "/api/v1/persistentvolumes/pvc-0a1b2c") => not_found("pv"),
        ("POST", "/apis/events.k8s.io/v1/namespaces/apps/events") => echo(body),
        other => panic!("unexpected request {other:?}"),
    });
    let ctx = context_with(client, &driver, &[("worker1", None)]);
    controller::reconcile_claim(Arc::new(claim("workshop-block", "64Mi", None)), ctx.clone()).await.unwrap();
    drop(ctx);
    let events = events(&server.await.unwrap());
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(events[0].1.contains("worker1") && events[0].1.contains(BACKEND_KEY), "{events:?}");
    assert!(driver.backend.load("pvc-0a1b2c").unwrap().is_none(), "no volume for a partial topology");
}

#[tokio::test]
async fn a_released_pv_still_attached_waits_for_the_detach_before_delete_volume() {
    let driver = Driver::start().await;
    driver.existing_volume("pvc-0a1b2c", "block", 64 * MIB).await;
    let (client, server) = fake_api(|method, path, _| match (method.as_str(), path) {
        ("GET", "/apis/storage.k8s.io/v1/volumeattachments") => (200, attachments(&["worker1"])),
        other => panic!("unexpected request {other:?}: no DELETE while attached"),
    });
    let ctx = context(client, &driver);
    let requeue =
        controller::reconcile_volume(Arc::new(pv_json("Released", "Delete", 64 * MIB, false)), ctx.clone())
            .await
            .expect("waiting for a detach is not an error");
    assert_eq!(
        requeue,
        kube::runtime::controller::Action::requeue(Duration::from_secs(10)),
        "looked at again soon"
    );

    // Deleted by someone while attached: the finalizer stays until the detach.
    let err =
        controller::reconcile_volume(Arc::new(pv_json("Released", "Delete", 64 * MIB, true)), ctx.clone())
            .await
            .expect_err("the finalizer must stay while attached");
    assert!(err.to_string().contains("still attached to node(s) worker1"), "{err}");
    drop(ctx);
    assert_eq!(
        calls(&server.await.unwrap()),
        ["GET /apis/storage.k8s.io/v1/volumeattachments"; 2],
        "no DeleteVolume, no DELETE, no finalizer patch"
    );
    assert!(driver.backend.load("pvc-0a1b2c").unwrap().is_some(), "the volume stays while attached");
}

#[tokio::test]
async fn deleting_a_retain_pv_with_our_finalizer_removes_the_finalizer_and_keeps_the_volume() {
    let driver = Driver::start().await;
    driver.existing_volume("pvc-0a1b2c", "file", 64 * MIB).await;
    let (client, server) = fake_api(|method, path, _| match (method.as_str(), path) {
        ("PATCH", "/api/v1/persistentvolumes/pvc-0a1b2c") => {
            (200, serde_json::to_value(pv_json("Released", "Retain", 64 * MIB, true)).unwrap())
        }
        other => panic!("unexpected request {other:?}"),
    });
    let ctx = context(client, &driver);
    // Provisioned with Delete (so it has our finalizer), switched to Retain,
    // then deleted by an administrator.
    controller::reconcile_volume(Arc::new(pv_json("Released", "Retain", 64 * MIB, true)), ctx.clone())
        .await
        .expect("finalized");
    // The same PV before anybody deletes it: the finalizer goes as well.
    controller::reconcile_volume(Arc::new(pv_json("Released", "Retain", 64 * MIB, false)), ctx.clone())
        .await
        .expect("finalizer released");
    drop(ctx);
    let seen = server.await.unwrap();
    assert_eq!(calls(&seen), ["PATCH /api/v1/persistentvolumes/pvc-0a1b2c"; 2], "no DeleteVolume, no DELETE");
    assert_eq!(
        seen[0].body[1],
        json!({"op": "remove", "path": "/metadata/finalizers/0"}),
        "being deleted: kube's finalizer helper lets it go"
    );
    assert_eq!(
        seen[1].body,
        json!({"metadata": {"finalizers": [], "resourceVersion": "9"}}),
        "not being deleted: removed, guarded by the resourceVersion"
    );
    assert!(driver.backend.load("pvc-0a1b2c").unwrap().is_some(), "Retain: the volume stays");
}
