//! Leader election against a fake API server: the Lease is created when
//! missing, renewed with the resourceVersion we read, and a lost race (409
//! Conflict) means "not the leader", not an error. Then, over time (tokio's
//! paused clock, so the seconds pass at once): the leader renews every retry
//! period, gives up at the renew deadline when it cannot renew (before the
//! Lease expires), stops at once when another replica took the Lease, and
//! stops its controllers when it loses the Lease.

mod fake_http;

use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::storage::v1::CSINode;
use kube::client::Body;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector;
use kube::{Api, Client};
use lab01_identity::csi::controller_client::ControllerClient;
use lab05_storageclass::provisioner::controller;
use lab05_storageclass::provisioner::leader::{
    Elector, LEASE_DURATION, LostLease, RENEW_DEADLINE, RETRY_PERIOD,
};
use serde_json::{Value, json};
use tokio::time::Instant;

/// Runs one `try_acquire_or_renew` against canned answers, in order.
async fn one_round(answers: Vec<(u16, Value)>) -> (bool, Vec<(Method, Value)>) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let server = tokio::spawn(async move {
        let mut seen = Vec::new();
        let mut answers = answers.into_iter();
        while let Some((request, respond)) = handle.next_request().await {
            let (parts, body) = fake_http::read_json(request).await;
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

// ---------------------------------------------------------------- a Lease that lives on

/// How the fake API answers, switchable while a test runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api5 {
    /// Like the API server: GET, POST and PUT with resourceVersion checks.
    Works,
    /// 500 Internal Server Error for every Lease request.
    Fails,
    /// Never answers a Lease request (a partitioned API server).
    Hangs,
}

#[derive(Debug)]
struct LeaseServer {
    lease: Option<Value>,
    version: u64,
    api: Api5,
    /// Lease writes that succeeded, with the holder they wrote.
    writes: Vec<String>,
    /// The controllers' requests (lists and watches of claims and PVs).
    watched: Vec<String>,
}

type Shared = std::sync::Arc<std::sync::Mutex<LeaseServer>>;

/// A stateful fake API server for one Lease (and, for the controllers,
/// empty lists of claims and PVs whose watches never send an event).
fn lease_api() -> (Client, Shared) {
    let state: Shared = std::sync::Arc::new(std::sync::Mutex::new(LeaseServer {
        lease: None,
        version: 0,
        api: Api5::Works,
        writes: vec![],
        watched: vec![],
    }));
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let shared = state.clone();
    tokio::spawn(async move {
        let mut unanswered = Vec::new();
        while let Some((request, respond)) = handle.next_request().await {
            let (parts, body) = fake_http::read_json(request).await;
            let path = parts.uri.path().to_owned();
            let query = parts.uri.query().unwrap_or_default().to_owned();
            if !path.contains("/leases") {
                // The controllers' list + watch of claims and PVs.
                shared.lock().unwrap().watched.push(path.clone());
                if query.contains("watch=true") {
                    unanswered.push(respond); // an open watch with nothing to say
                } else {
                    let list = json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": []});
                    respond.send_response(Response::new(Body::from(list.to_string().into_bytes())));
                }
                continue;
            }
            let mut s = shared.lock().unwrap();
            let (code, json) = match (s.api, parts.method.as_str()) {
                (Api5::Hangs, _) => {
                    unanswered.push(respond);
                    continue;
                }
                (Api5::Fails, _) => status(500, "InternalError"),
                (Api5::Works, "GET") => match &s.lease {
                    Some(lease) => (200, lease.clone()),
                    None => status(404, "NotFound"),
                },
                (Api5::Works, "POST") if s.lease.is_some() => status(409, "AlreadyExists"),
                (Api5::Works, "PUT")
                    if s.lease.as_ref().map(|l| &l["metadata"]["resourceVersion"])
                        != Some(&body["metadata"]["resourceVersion"]) =>
                {
                    status(409, "Conflict")
                }
                (Api5::Works, "POST" | "PUT") => {
                    s.version += 1;
                    let mut lease = body.clone();
                    lease["metadata"]["resourceVersion"] = json!(s.version.to_string());
                    s.writes.push(lease["spec"]["holderIdentity"].as_str().unwrap_or_default().to_owned());
                    s.lease = Some(lease.clone());
                    (200, lease)
                }
                (_, other) => panic!("unexpected {other} {path}"),
            };
            drop(s);
            respond.send_response(
                Response::builder()
                    .status(StatusCode::from_u16(code).unwrap())
                    .body(Body::from(json.to_string().into_bytes()))
                    .unwrap(),
            );
        }
    });
    (Client::new(service, "default"), state)
}

fn elector(client: &Client, me: &str) -> Elector {
    Elector::new(
        Api::<Lease>::namespaced(client.clone(), "csi-workshop"),
        "csi-workshop-dev-rs-provisioner".into(),
        me.into(),
    )
}

/// Another replica writes the Lease as its own, freshly renewed.
fn steal(state: &Shared, thief: &str) {
    let mut guard = state.lock().unwrap();
    let s = &mut *guard;
    s.version += 1;
    let lease = s.lease.as_mut().expect("a Lease to steal");
    lease["spec"]["holderIdentity"] = json!(thief);
    lease["spec"]["renewTime"] = json!(k8s_openapi::jiff::Timestamp::now().to_string());
    lease["metadata"]["resourceVersion"] = json!(s.version.to_string());
}

fn set_api(state: &Shared, api: Api5) {
    state.lock().unwrap().api = api;
}

#[tokio::test(start_paused = true)]
async fn the_leader_renews_every_retry_period() {
    let (client, state) = lease_api();
    let me = elector(&client, "pod-a");
    me.acquire().await;
    let renewing = tokio::time::timeout(Duration::from_secs(7), me.keep_renewing()).await;
    assert!(renewing.is_err(), "nothing went wrong, so it keeps leading: {renewing:?}");
    let writes = state.lock().unwrap().writes.clone();
    assert_eq!(writes, ["pod-a"; 4], "acquired at 0 s, renewed at 2, 4 and 6 s");
}

#[tokio::test(start_paused = true)]
async fn a_leader_that_cannot_renew_gives_up_at_the_renew_deadline_before_the_lease_expires() {
    for api in [Api5::Fails, Api5::Hangs] {
        let (client, state) = lease_api();
        let me = elector(&client, "pod-a");
        me.acquire().await;
        let renewed = Instant::now();
        set_api(&state, api);
        let lost = me.keep_renewing().await;
        let after = renewed.elapsed();
        assert_eq!(lost, LostLease::NotRenewed(RENEW_DEADLINE), "{api:?}");
        assert!(
            after >= RENEW_DEADLINE && after < LEASE_DURATION,
            "{api:?}: gave up after {after:?}; it must be at the renew deadline ({RENEW_DEADLINE:?}), \
             before a standby may take the Lease ({LEASE_DURATION:?})"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_leader_whose_lease_was_taken_over_stops_at_its_next_renewal() {
    let (client, state) = lease_api();
    let me = elector(&client, "pod-a");
    me.acquire().await;
    steal(&state, "pod-b");
    let t0 = Instant::now();
    assert_eq!(me.keep_renewing().await, LostLease::TakenOver("pod-b".into()));
    assert!(t0.elapsed() <= RETRY_PERIOD + Duration::from_millis(100), "{:?}", t0.elapsed());
}

#[tokio::test(start_paused = true)]
async fn lost_the_lease_so_it_stops() {
    let (client, state) = lease_api();
    let me = elector(&client, "pod-a");
    me.acquire().await;

    // The real controllers, on a fake API with no claims and no PVs.
    let ctx = context(client.clone());
    let stopped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stopped.clone();
    let thief = state.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(5)).await;
        steal(&thief, "pod-b");
    });
    let t0 = Instant::now();
    let result = me
        .lead(std::future::pending(), |stop| async move {
            controller::run(ctx, stop.wait()).await;
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        })
        .await;
    assert_eq!(result, Err(LostLease::TakenOver("pod-b".into())), "the caller exits non-zero on this");
    assert!(
        stopped.load(std::sync::atomic::Ordering::SeqCst),
        "controller::run returned on the stop signal (not aborted)"
    );
    let watched = state.lock().unwrap().watched.clone();
    for resource in ["/api/v1/persistentvolumeclaims", "/api/v1/persistentvolumes"] {
        assert!(watched.iter().any(|p| p == resource), "the controllers were running: {watched:?}");
    }
    assert!(
        t0.elapsed() < Duration::from_secs(5) + RETRY_PERIOD + Duration::from_millis(500),
        "stopped {:?} after leading began; the Lease was taken at 5 s",
        t0.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn reconciliations_still_running_after_the_lease_is_lost_are_cut_off_before_it_expires() {
    let (client, state) = lease_api();
    let me = elector(&client, "pod-a");
    me.acquire().await;
    set_api(&state, Api5::Fails);
    let t0 = Instant::now();
    // Controllers that ignore the stop signal: a reconcile that never ends.
    let result = me.lead(std::future::pending(), |_stop| std::future::pending::<()>()).await;
    assert_eq!(result, Err(LostLease::NotRenewed(RENEW_DEADLINE)));
    let after = t0.elapsed();
    assert!(
        after >= RENEW_DEADLINE && after <= LEASE_DURATION,
        "aborted after {after:?}: between the renew deadline and the end of the Lease"
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_the_controllers_and_releases_the_lease_for_a_standby() {
    let (client, state) = lease_api();
    let me = elector(&client, "pod-a");
    me.acquire().await;
    let result = me
        .lead(tokio::time::sleep(Duration::from_secs(3)), |stop| async move {
            stop.wait().await;
        })
        .await;
    assert_eq!(result, Ok(()));
    let lease = state.lock().unwrap().lease.clone().unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], Value::Null, "released: {lease}");

    let standby = elector(&client, "pod-b");
    assert!(standby.try_acquire_or_renew().await.unwrap(), "the standby takes a released Lease at once");
}

/// A Context for the real controllers, with a CSI client that is never
/// used (the fake API lists no claims and no PVs).
fn context(client: Client) -> std::sync::Arc<controller::Context> {
    let (nodes, _) = reflector::store::<Node>();
    let (csinodes, _) = reflector::store::<CSINode>();
    let channel = tonic::transport::Channel::from_static("http://127.0.0.1:9").connect_lazy();
    std::sync::Arc::new(controller::Context {
        recorder: Recorder::new(
            client.clone(),
            Reporter { controller: "csi-provisioner-rs".into(), instance: None },
        ),
        client,
        csi: ControllerClient::new(channel),
        driver: "csi.workshop.dev".into(),
        nodes,
        csinodes,
        timeout: Duration::from_secs(10),
        expansion: false,
    })
}
