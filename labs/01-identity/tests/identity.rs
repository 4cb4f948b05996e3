//! Lab 01 acceptance tests: the Identity service over a real unix socket.
//! The same tests grade a trainee's starter and the finished solution.

use lab01_identity::csi::controller_client::ControllerClient;
use lab01_identity::csi::identity_client::IdentityClient;
use lab01_identity::csi::identity_server::IdentityServer;
use lab01_identity::csi::plugin_capability::{self, service, volume_expansion};
use lab01_identity::csi::{
    CreateVolumeRequest, GetPluginCapabilitiesRequest, GetPluginInfoRequest, ProbeRequest,
};
use lab01_identity::identity::{IdentityService, PluginCapabilities};
use lab01_identity::server;
use lab01_identity::testing::TestServer;
use tonic::Code;

const NAME: &str = "csi.workshop.dev";

async fn start(dir: &std::path::Path, caps: PluginCapabilities, backend: std::path::PathBuf) -> TestServer {
    let identity = IdentityService::new(NAME, "1.2.3", caps, vec![backend]).expect("valid config");
    TestServer::start(server::grpc_server().add_service(IdentityServer::new(identity)), dir).await
}

#[tokio::test]
async fn get_plugin_info_returns_the_name_and_version_every_time() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Default::default(), dir.path().to_owned()).await;
    let mut client = IdentityClient::new(server.channel().await);
    for _ in 0..2 {
        let info = client
            .get_plugin_info(GetPluginInfoRequest {})
            .await
            .expect("GetPluginInfo must succeed: implement it in src/identity.rs")
            .into_inner();
        assert_eq!(info.name, NAME, "GetPluginInfo must return the configured driver name");
        assert_eq!(info.vendor_version, "1.2.3", "GetPluginInfo must return the vendor version");
    }
}

#[test]
fn an_invalid_driver_name_is_refused_when_the_service_is_built() {
    for bad in ["", "Bad_Name", "-lead.dash", "trail.dash-", "has space", &"a".repeat(64)] {
        assert!(
            IdentityService::new(bad, "1", Default::default(), vec![]).is_err(),
            "driver name {bad:?} breaks the spec's rule and must be refused (validate_driver_name)"
        );
    }
}

#[tokio::test]
async fn capabilities_list_exactly_what_is_switched_on() {
    let dir = tempfile::tempdir().unwrap();
    let all = PluginCapabilities {
        controller_service: true,
        accessibility_constraints: true,
        online_expansion: true,
    };
    let server = start(dir.path(), all, dir.path().to_owned()).await;
    let mut client = IdentityClient::new(server.channel().await);
    let caps = client
        .get_plugin_capabilities(GetPluginCapabilitiesRequest {})
        .await
        .expect("GetPluginCapabilities must succeed")
        .into_inner()
        .capabilities;
    let mut services = vec![];
    let mut expansion = vec![];
    for cap in caps {
        match cap.r#type {
            Some(plugin_capability::Type::Service(s)) => services.push(s.r#type),
            Some(plugin_capability::Type::VolumeExpansion(e)) => expansion.push(e.r#type),
            None => panic!("a capability without a type"),
        }
    }
    services.sort();
    assert_eq!(
        services,
        vec![service::Type::ControllerService as i32, service::Type::VolumeAccessibilityConstraints as i32],
        "expected CONTROLLER_SERVICE and VOLUME_ACCESSIBILITY_CONSTRAINTS"
    );
    assert_eq!(expansion, vec![volume_expansion::Type::Online as i32], "expected online VolumeExpansion");

    let none = start(&dir.path().join("second"), Default::default(), dir.path().to_owned()).await;
    let caps = IdentityClient::new(none.channel().await)
        .get_plugin_capabilities(GetPluginCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner()
        .capabilities;
    assert!(caps.is_empty(), "with every flag off no capability may be advertised, got {caps:?}");
}

#[tokio::test]
async fn probe_is_ready_while_the_backend_is_usable_and_failed_precondition_when_it_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let backend = dir.path().join("backend");
    std::fs::create_dir(&backend).unwrap();
    let server = start(dir.path(), Default::default(), backend.clone()).await;
    let mut client = IdentityClient::new(server.channel().await);
    let ready = client.probe(ProbeRequest {}).await.expect("Probe must succeed").into_inner().ready;
    assert_eq!(ready, Some(true), "Probe must report ready while the backend directory is usable");
    let again = client.probe(ProbeRequest {}).await.unwrap().into_inner().ready;
    assert_eq!(again, Some(true), "Probe must be repeatable");

    std::fs::remove_dir(&backend).unwrap();
    // `ready: false` means "still starting up, otherwise healthy"; a missing
    // dependency is an error in the spec's Probe table.
    let err = client.probe(ProbeRequest {}).await.expect_err("Probe must fail when the backend is gone");
    assert_eq!(
        err.code(),
        Code::FailedPrecondition,
        "a missing backend directory is a missing required dependency: FAILED_PRECONDITION, got {err:?}"
    );
    assert!(err.message().contains("backend"), "the message must name the directory: {}", err.message());

    std::fs::create_dir(&backend).unwrap();
    let ready = client.probe(ProbeRequest {}).await.expect("Probe must recover").into_inner().ready;
    assert_eq!(ready, Some(true), "Probe must report ready again once the backend is back");
}

#[tokio::test]
async fn services_a_lab_does_not_serve_answer_unimplemented() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Default::default(), dir.path().to_owned()).await;
    let err = ControllerClient::new(server.channel().await)
        .create_volume(CreateVolumeRequest { name: "v".into(), ..Default::default() })
        .await
        .expect_err("lab 01 serves no Controller");
    assert_eq!(err.code(), Code::Unimplemented);
}

#[tokio::test]
async fn stopping_the_server_removes_its_socket() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Default::default(), dir.path().to_owned()).await;
    let socket = server.socket().to_owned();
    assert!(socket.exists());
    server.stop().await;
    assert!(!socket.exists(), "the socket must be removed on shutdown");
}
