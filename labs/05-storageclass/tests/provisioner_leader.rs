//! Leader election against a fake API server: the Lease is created when
//! missing, renewed with the resourceVersion we read, and a lost race (409
//! Conflict) means "not the leader", not an error.

use http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::coordination::v1::Lease;
use kube::client::Body;
use kube::{Api, Client};
use lab05_storageclass::provisioner::leader::Elector;
use serde_json::{Value, json};

/// Runs one `try_acquire_or_renew` against canned answers, in order.
async fn one_round(answers: Vec<(u16, Value)>) -> (bool, Vec<(Method, Value)>) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let server = tokio::spawn(async move {
        let mut seen = Vec::new();
        let mut answers = answers.into_iter();
        while let Some((request, respond)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let bytes = body.collect_bytes().await.unwrap();
            let body: Value =
                if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
            assert_eq!(parts.uri.path().split('/').nth(6), Some("leases"), "{}", parts.uri);
            seen.push((parts.method, body));
            let (status, json) = answers.next().expect("no more requests expected");
            respond.send_response(
                Response::builder()
                    .status(StatusCode::from_u16(status).unwrap())
                    .body(Body::from(json.to_string().into_bytes()))
                    .unwrap(),
            );
        }
        seen
    });
    let elector = Elector::new(
        Api::<Lease>::namespaced(Client::new(service, "default"), "csi-workshop"),
        "csi-workshop-dev-rs-provisioner".into(),
        "pod-a".into(),
    );
    let leader = elector.try_acquire_or_renew().await.expect("no API error");
    drop(elector);
    (leader, server.await.unwrap())
}

fn status(code: u16, reason: &str) -> (u16, Value) {
    (
        code,
        json!({"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure", "reason": reason, "code": code}),
    )
}

fn lease(holder: &str, renew: &str) -> Value {
    json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
           "metadata": {"name": "csi-workshop-dev-rs-provisioner", "namespace": "csi-workshop", "resourceVersion": "42"},
           "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "renewTime": renew, "leaseTransitions": 3}})
}

#[tokio::test]
async fn a_missing_lease_is_created_with_us_as_holder() {
    let (leader, seen) =
        one_round(vec![status(404, "NotFound"), (201, lease("pod-a", "2026-01-01T00:00:00.000000Z"))]).await;
    assert!(leader);
    assert_eq!(seen[1].0, Method::POST);
    assert_eq!(seen[1].1["spec"]["holderIdentity"], "pod-a");
    assert_eq!(seen[1].1["spec"]["leaseDurationSeconds"], 15);
}

#[tokio::test]
async fn an_expired_lease_is_taken_over_with_the_resource_version_we_read() {
    let (leader, seen) = one_round(vec![
        (200, lease("pod-b", "2020-01-01T00:00:00.000000Z")),
        (200, lease("pod-a", "2026-01-01T00:00:00.000000Z")),
    ])
    .await;
    assert!(leader);
    assert_eq!(seen[1].0, Method::PUT);
    assert_eq!(seen[1].1["metadata"]["resourceVersion"], "42", "optimistic locking: the version we read");
    assert_eq!(seen[1].1["spec"]["holderIdentity"], "pod-a");
    assert_eq!(seen[1].1["spec"]["leaseTransitions"], 4, "a new holder counts a transition");
}

#[tokio::test]
async fn losing_the_race_for_the_lease_is_not_leading() {
    let (leader, seen) =
        one_round(vec![(200, lease("pod-b", "2020-01-01T00:00:00.000000Z")), status(409, "Conflict")]).await;
    assert!(!leader, "another replica wrote the Lease first");
    assert_eq!(seen.len(), 2);
}

#[tokio::test]
async fn a_lease_held_and_renewed_by_another_is_left_alone() {
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let (leader, seen) = one_round(vec![(200, lease("pod-b", &now))]).await;
    assert!(!leader);
    assert_eq!(seen.len(), 1, "only the GET: no write while another leads");
}
