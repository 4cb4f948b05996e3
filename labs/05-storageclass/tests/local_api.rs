//! The local provisioner's sync against a fake API server (tower-test mock):
//! which requests it sends for a new disk, a refused directory, and a
//! released PV. No cluster, no root.

mod fake_http;

use std::path::{Path, PathBuf};

use http::{Method, Request, Response};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeStatus};
use kube::Client;
use kube::client::Body;
use lab05_storageclass::local::decide::{MANAGED_BY_LABEL, NODE_LABEL};
use lab05_storageclass::local::scan::Refused;
use lab05_storageclass::local::{Agent, Disk, PvConfig, Refusal, Scan, desired_pv};
use serde_json::{Value, json};

fn config() -> PvConfig {
    PvConfig {
        node_name: "worker1".into(),
        storage_class: "local-disks".into(),
        reclaim_policy: "Delete".into(),
    }
}

/// One request the fake API server received: method, path and query, body.
#[derive(Debug)]
struct Seen {
    method: Method,
    uri: String,
    body: Value,
}

/// Runs `agent.sync(scan)` against a fake API server whose PV list is
/// `existing`; returns the sync's result and every request, in order.
async fn sync_with(
    existing: Vec<PersistentVolume>,
    scan: Scan,
) -> (lab05_storageclass::local::SyncReport, Vec<Seen>) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let server = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some((request, respond)) = handle.next_request().await {
            let (parts, body) = fake_http::read_json(request).await;
            let uri = parts.uri.to_string();
            let answer = match (&parts.method, parts.uri.path()) {
                (&Method::GET, "/api/v1/persistentvolumes") => {
                    json!({"apiVersion": "v1", "kind": "PersistentVolumeList", "metadata": {}, "items": existing})
                }
                (&Method::POST, _) => {
                    let mut created = body.clone();
                    created["metadata"]["uid"] = json!("new-uid");
                    created["metadata"]["name"] =
                        created["metadata"]["name"].as_str().map_or(json!("ev.1"), |n| json!(n));
                    created
                }
                (&Method::DELETE, _) => {
                    json!({"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Success", "code": 200})
                }
                other => panic!("unexpected request {other:?}"),
            };
            seen.push(Seen { method: parts.method, uri, body });
            respond.send_response(
                Response::builder().body(Body::from(serde_json::to_vec(&answer).unwrap())).unwrap(),
            );
        }
        seen
    });
    let mut agent = Agent::new(Client::new(service, "default"), config());
    let report = agent.sync(&scan).await.expect("sync succeeds");
    drop(agent);
    (report, server.await.unwrap())
}

fn disk(path: &Path) -> Disk {
    Disk {
        name: path.file_name().unwrap().to_string_lossy().into_owned(),
        path: path.to_path_buf(),
        capacity_bytes: 64 << 20,
    }
}

#[tokio::test]
async fn a_new_disk_becomes_a_pv_and_a_plain_directory_an_event_on_the_node() {
    let scan = Scan {
        disks: vec![disk(Path::new("/mnt/disks/disk1"))],
        refused: vec![Refused {
            name: "plain".into(),
            path: PathBuf::from("/mnt/disks/plain"),
            reason: Refusal::NotAMountPoint,
        }],
    };
    let (report, seen) = sync_with(vec![], scan).await;
    assert_eq!(report.created, ["local-worker1-disk1"]);
    assert_eq!(report.refused_reported, ["plain"]);
    assert_eq!(seen.len(), 3, "{seen:#?}");

    // 1. the PVs of ours on this node, by label
    assert_eq!(seen[0].method, Method::GET);
    let list = &seen[0].uri;
    assert!(list.starts_with("/api/v1/persistentvolumes?"), "{list}");
    assert!(
        list.contains(&MANAGED_BY_LABEL.replace('/', "%2F"))
            && list.contains(&NODE_LABEL.replace('/', "%2F")),
        "{list}"
    );

    // 2. the PV
    assert_eq!((&seen[1].method, seen[1].uri.as_str()), (&Method::POST, "/api/v1/persistentvolumes?"));
    let pv = &seen[1].body;
    assert_eq!(pv["metadata"]["name"], "local-worker1-disk1");
    assert_eq!(pv["spec"]["local"]["path"], "/mnt/disks/disk1");
    assert_eq!(pv["spec"]["capacity"]["storage"], (64u64 << 20).to_string());
    assert_eq!(pv["spec"]["storageClassName"], "local-disks");
    let expr = &pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0];
    assert_eq!(expr, &json!({"key": "kubernetes.io/hostname", "operator": "In", "values": ["worker1"]}));

    // 3. the Event on the Node, with the reason
    assert_eq!(
        (&seen[2].method, seen[2].uri.as_str()),
        (&Method::POST, "/api/v1/namespaces/default/events?")
    );
    let event = &seen[2].body;
    assert_eq!(event["involvedObject"]["kind"], "Node");
    assert_eq!(event["involvedObject"]["name"], "worker1");
    assert_eq!(event["type"], "Warning");
    let message = event["message"].as_str().unwrap();
    assert!(message.contains("not a mount point: one PV per disk"), "{message}");
}

#[tokio::test]
async fn an_existing_pv_is_not_created_again() {
    let d = disk(Path::new("/mnt/disks/disk1"));
    let mut pv = desired_pv(&d, &config());
    pv.status = Some(PersistentVolumeStatus { phase: Some("Bound".into()), ..Default::default() });
    let (report, seen) = sync_with(vec![pv], Scan { disks: vec![d], refused: vec![] }).await;
    assert!(report.created.is_empty() && report.cleaned.is_empty());
    assert_eq!(seen.len(), 1, "only the list: {seen:#?}");
}

#[tokio::test]
async fn a_released_pv_is_cleaned_then_deleted_with_its_uid() {
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("disk1");
    std::fs::create_dir_all(mount.join("data/sub")).unwrap();
    std::fs::write(mount.join("data/sub/file"), b"the last tenant's data").unwrap();
    std::fs::write(mount.join("top"), b"more").unwrap();
    let d = disk(&mount);
    let mut pv = desired_pv(&d, &config());
    pv.metadata.uid = Some("uid-1".into());
    pv.status = Some(PersistentVolumeStatus { phase: Some("Released".into()), ..Default::default() });

    let (report, seen) = sync_with(vec![pv], Scan { disks: vec![d], refused: vec![] }).await;
    assert_eq!(report.cleaned, ["local-worker1-disk1"]);
    assert!(mount.is_dir(), "the mount point itself stays");
    assert_eq!(std::fs::read_dir(&mount).unwrap().count(), 0, "the disk is empty");

    assert_eq!(seen.len(), 2, "{seen:#?}");
    assert_eq!(
        (&seen[1].method, seen[1].uri.as_str()),
        (&Method::DELETE, "/api/v1/persistentvolumes/local-worker1-disk1?")
    );
    assert_eq!(seen[1].body["preconditions"]["uid"], "uid-1");
}

#[tokio::test]
async fn a_released_pv_with_retain_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("keep"), b"keep me").unwrap();
    let d = disk(dir.path());
    let mut pv = desired_pv(&d, &PvConfig { reclaim_policy: "Retain".into(), ..config() });
    pv.status = Some(PersistentVolumeStatus { phase: Some("Released".into()), ..Default::default() });
    let (report, seen) = sync_with(vec![pv], Scan { disks: vec![d], refused: vec![] }).await;
    assert!(report.cleaned.is_empty());
    assert!(dir.path().join("keep").exists());
    assert_eq!(seen.len(), 1);
}
