//! Lab 04 acceptance tests: the registrar and kubelet's plugin watcher over
//! real unix sockets, with the lab 03 driver as the node plugin. The same
//! tests grade a trainee's starter and the finished solution.

mod support;

use std::time::Duration;

use lab01_identity::csi::NodeGetInfoRequest;
use lab01_identity::csi::node_client::NodeClient;
use lab04_registration::Error;
use lab04_registration::kubelet::{Event, Options, RegisterError};
use lab04_registration::pluginregistration::InfoRequest;
use lab04_registration::pluginregistration::registration_client::RegistrationClient;
use lab04_registration::registration::Verdict;
use support::*;

#[tokio::test]
async fn the_driver_registers_with_kubelet_and_its_node_info_is_what_kubelet_would_write() {
    let scene = Scene::new();
    let driver = scene.start_driver().await;
    let mut registrar = RunningRegistrar::start(scene.config());
    registrar.wait_until_serving().await;

    let (events, attempt) = watch_until_attempt(&mut scene.watcher()).await;
    let registration = attempt
        .unwrap_or_else(|f| panic!("kubelet must register the driver, but: {}{}", f.error, lines(&events)));
    assert_eq!(registration.name, DRIVER, "GetInfo must name the driver as GetPluginInfo does");
    assert_eq!(registration.version, "1.0.0", "the registrar must advertise CSI 1.0.0");
    assert_eq!(
        registration.endpoint,
        scene.csi_socket().display().to_string(),
        "GetInfo must advertise --kubelet-registration-path"
    );

    // What kubelet writes must be exactly what the driver says.
    let node = NodeClient::new(driver.channel().await)
        .node_get_info(NodeGetInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(registration.node_id, NODE);
    assert_eq!(registration.node_id, node.node_id);
    assert_eq!(registration.max_volumes, node.max_volumes_per_node);
    let segments = node.accessible_topology.unwrap().segments;
    assert_eq!(registration.topology.len(), segments.len());
    for (key, value) in &segments {
        assert_eq!(registration.topology.get(key), Some(value), "topology key {key}");
    }
    assert_eq!(registration.topology.get("topology.csi.workshop.dev/node").map(String::as_str), Some(NODE));

    let steps: Vec<String> = events.iter().map(|e| e.to_string()).collect();
    for prefix in [
        "found ",
        "getinfo ",
        "validated ",
        "nodegetinfo ",
        "would-write csinode ",
        "notified ",
        "registered ",
    ] {
        assert!(steps.iter().any(|s| s.starts_with(prefix)), "no `{prefix}…` line in{}", lines(&events));
    }
    let registered = steps.last().unwrap();
    assert!(
        registered.starts_with(&format!(
            "registered {DRIVER} endpoint={} node_id={NODE} topology=",
            scene.csi_socket().display()
        )),
        "{registered}"
    );

    let status = registrar
        .wait_for("the registrar must learn from NotifyRegistrationStatus that kubelet registered it", |s| {
            s.kubelet == Verdict::Registered
        })
        .await;
    assert_eq!(status.driver_name.as_deref(), Some(DRIVER));
    registrar.stop().await.expect("a registrar stopped by a signal returns Ok");
    assert!(!scene.registration_socket().exists(), "the registrar must remove its socket when it stops");
}

#[tokio::test]
async fn the_registration_socket_is_named_after_the_driver_and_advertises_the_host_path() {
    let scene = Scene::new();
    let _driver = scene.start_driver().await;
    let host_path = "/var/lib/kubelet/plugins/csi.workshop.dev/csi.sock";
    let mut registrar = RunningRegistrar::start(lab04_registration::registrar::Config {
        kubelet_registration_path: host_path.into(),
        ..scene.config()
    });
    let socket = registrar.wait_until_serving().await;
    assert_eq!(
        socket,
        scene.registration_socket(),
        "the socket must be <plugin-registration-path>/<driver>-reg.sock"
    );

    let channel = lab01_identity::client::connect(&socket.display().to_string()).await.unwrap();
    let info = RegistrationClient::new(channel)
        .get_info(InfoRequest {})
        .await
        .expect("GetInfo must answer: write it in src/registration.rs")
        .into_inner();
    assert_eq!(info.r#type, "CSIPlugin");
    assert_eq!(info.name, DRIVER);
    assert_eq!(info.endpoint, host_path, "kubelet dials the host path, never the in-container --csi-address");
    assert_eq!(info.supported_versions, vec!["1.0.0".to_string()]);
}

#[tokio::test]
async fn advertising_a_path_kubelet_cannot_dial_fails_registration_and_ends_the_registrar_with_an_error() {
    let scene = Scene::new();
    let _driver = scene.start_driver().await;
    // The classic mistake: the socket's path inside the container.
    let in_container = scene.path("container-only/csi/csi.sock");
    let mut registrar = RunningRegistrar::start(lab04_registration::registrar::Config {
        kubelet_registration_path: in_container.clone(),
        ..scene.config()
    });
    registrar.wait_until_serving().await;

    let (events, attempt) = watch_until_attempt(&mut scene.watcher()).await;
    let failure = attempt.expect_err("kubelet cannot dial a path that does not exist on the host");
    assert!(
        matches!(failure.error, RegisterError::DialDriver { .. }),
        "{:?}{}",
        failure.error,
        lines(&events)
    );
    assert!(failure.notified, "kubelet must tell the registrar it failed");
    assert!(
        events.iter().any(|e| e.to_string().contains("step=dial-driver")),
        "the failure line must name the step:{}",
        lines(&events)
    );

    match registrar.exit().await {
        Err(Error::RegistrationRejected(reason)) => {
            assert!(
                reason.contains(&in_container.display().to_string()),
                "the reason must name the endpoint: {reason}"
            )
        }
        other => panic!(
            "the registrar must exit with RegistrationRejected when kubelet says plugin_registered=false, got {other:?}"
        ),
    }
    assert!(!scene.registration_socket().exists(), "a failed registrar must remove its socket");
}

#[tokio::test]
async fn the_registrar_waits_for_the_driver_and_serves_no_socket_until_it_answers() {
    let scene = Scene::new();
    let mut registrar = RunningRegistrar::start(scene.config());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        registrar.is_running(),
        "with the driver down the registrar must keep retrying, not exit: {:?}",
        registrar.exit().await
    );
    assert_eq!(registrar.status.borrow().socket, None);
    assert!(!scene.registration_socket().exists(), "no registration socket before the driver answers");
    let (events, attempts) = poll_once(&mut scene.watcher()).await;
    assert!(attempts.is_empty(), "kubelet must find nothing to register yet:{}", lines(&events));

    let _driver = scene.start_driver().await;
    registrar.wait_until_serving().await;
    let (events, attempt) = watch_until_attempt(&mut scene.watcher()).await;
    attempt.unwrap_or_else(|f| {
        panic!("once the driver is up, registration must succeed: {}{}", f.error, lines(&events))
    });
    registrar
        .wait_for("kubelet's verdict must reach the registrar", |s| s.kubelet == Verdict::Registered)
        .await;
}

#[tokio::test]
async fn a_driver_that_went_down_after_the_registrar_started_is_reported_as_a_dial_error() {
    let scene = Scene::new();
    let driver = scene.start_driver().await;
    let mut registrar = RunningRegistrar::start(scene.config());
    registrar.wait_until_serving().await;
    driver.stop().await;

    let (events, attempt) = watch_until_attempt(&mut scene.watcher()).await;
    let failure = attempt.expect_err("kubelet cannot reach a driver that is gone");
    assert_eq!(failure.error.step(), "dial-driver", "{}{}", failure.error, lines(&events));
    assert!(
        matches!(registrar.exit().await, Err(Error::RegistrationRejected(_))),
        "the registrar must exit with an error after plugin_registered=false"
    );
}

#[tokio::test]
async fn a_plugin_that_only_speaks_csi_0_3_is_rejected_and_told_why() {
    let scene = Scene::new();
    let socket = scene.registry().join("old.csi.dev-reg.sock");
    let mut plugin = FakePlugin::start(&socket, plugin_info("old.csi.dev", &scene.csi_socket(), &["0.3.0"]));

    let (events, attempt) = watch_until_attempt(&mut scene.watcher()).await;
    let failure =
        attempt.expect_err("kubelet only speaks CSI 1.x: write validate_plugin_info in src/kubelet.rs");
    assert!(
        matches!(failure.error, RegisterError::Validation(_)),
        "kubelet must refuse CSI 0.3.0 before dialing the driver (validate_plugin_info in src/kubelet.rs), got {:?}{}",
        failure.error,
        lines(&events)
    );
    let verdict = plugin.verdict().await;
    assert!(!verdict.plugin_registered);
    assert!(
        verdict.error.contains("0.3.0"),
        "the error must say which versions were refused: {}",
        verdict.error
    );
}

#[tokio::test]
async fn a_plugin_of_a_type_kubelet_has_no_handler_for_is_rejected() {
    let scene = Scene::new();
    let socket = scene.registry().join("odd-reg.sock");
    let mut info = plugin_info(DRIVER, &scene.csi_socket(), &["1.0.0"]);
    info.r#type = "FlexPlugin".into();
    let mut plugin = FakePlugin::start(&socket, info);

    let (events, attempt) = watch_until_attempt(&mut scene.watcher()).await;
    let failure = attempt.expect_err("only CSIPlugin has a handler in this kubelet");
    assert!(
        matches!(failure.error, RegisterError::UnknownType(_)),
        "kubelet must refuse a type it has no handler for (validate_plugin_info in src/kubelet.rs), got {:?}{}",
        failure.error,
        lines(&events)
    );
    assert!(!plugin.verdict().await.plugin_registered);
}

#[tokio::test]
async fn removing_the_registration_socket_is_reported_as_deregistration() {
    let scene = Scene::new();
    let _driver = scene.start_driver().await;
    let mut registrar = RunningRegistrar::start(scene.config());
    registrar.wait_until_serving().await;
    let mut watcher = scene.watcher();
    let (events, attempt) = watch_until_attempt(&mut watcher).await;
    attempt.unwrap_or_else(|f| panic!("registration must succeed: {}{}", f.error, lines(&events)));

    registrar.stop().await.expect("a registrar stopped by a signal returns Ok");
    let (events, _) = poll_once(&mut watcher).await;
    let expected = Event::Deregistered { name: DRIVER.into(), socket: scene.registration_socket() };
    assert!(events.contains(&expected), "expected `{expected}` in{}", lines(&events));
    assert!(
        events.iter().any(|e| e.to_string()
            == format!("deregistered {DRIVER} socket={}", scene.registration_socket().display())),
        "{}",
        lines(&events)
    );
}

#[tokio::test]
async fn dot_files_and_anything_but_sockets_in_the_registry_are_ignored() {
    let scene = Scene::new();
    let registry = scene.registry();
    std::fs::create_dir_all(registry.join("subdir")).unwrap();
    std::fs::write(registry.join("notes-reg.sock"), b"not a socket").unwrap();
    // A working plugin, hidden: kubelet must not even call it.
    let hidden = registry.join(format!(".{DRIVER}-reg.sock"));
    let _plugin = FakePlugin::start(&hidden, plugin_info(DRIVER, &scene.csi_socket(), &["1.0.0"]));

    let mut watcher = scene.watcher();
    let (events, attempts) = poll_once(&mut watcher).await;
    assert!(attempts.is_empty(), "nothing there may be registered:{}", lines(&events));
    for path in [hidden, registry.join("notes-reg.sock"), registry.join("subdir")] {
        assert!(
            events.iter().any(|e| matches!(e, Event::Ignored { path: p, .. } if *p == path)),
            "{} must be reported as ignored:{}",
            path.display(),
            lines(&events)
        );
    }
    let (events, _) = poll_once(&mut watcher).await;
    assert!(events.is_empty(), "ignored files are reported once, not on every poll:{}", lines(&events));
}

#[tokio::test]
async fn a_stale_registration_socket_left_by_a_crash_is_replaced() {
    let scene = Scene::new();
    std::fs::create_dir_all(scene.registry()).unwrap();
    drop(std::os::unix::net::UnixListener::bind(scene.registration_socket()).unwrap());
    assert!(scene.registration_socket().exists(), "the stale socket file stays behind");

    let _driver = scene.start_driver().await;
    let mut registrar = RunningRegistrar::start(scene.config());
    let socket = registrar.wait_until_serving().await;
    assert_eq!(
        socket,
        scene.registration_socket(),
        "the registrar must serve <driver>-reg.sock in place of the stale one"
    );
    let (events, attempt) = watch_until_attempt(&mut scene.watcher()).await;
    attempt.unwrap_or_else(|f| panic!("the new socket must register: {}{}", f.error, lines(&events)));
}

#[tokio::test]
async fn healthz_answers_404_without_a_registration_socket_and_200_while_it_answers_getinfo() {
    let scene = Scene::new();
    let mut registrar = RunningRegistrar::start(lab04_registration::registrar::Config {
        http_endpoint: Some("127.0.0.1:0".into()),
        ..scene.config()
    });
    let addr =
        registrar.wait_for("/healthz must listen", |s| s.health_addr.is_some()).await.health_addr.unwrap();
    let (code, body) = http_get(addr, "/healthz").await;
    assert_eq!(code, 404, "no registration socket yet (driver down), 404 as node-driver-registrar: {body}");

    let _driver = scene.start_driver().await;
    let socket = registrar.wait_until_serving().await;
    let (code, body) = http_get(addr, "/healthz").await;
    assert_eq!(code, 200, "the socket is served and GetInfo names our driver: {body}");
    assert!(body.contains(DRIVER), "{body}");

    std::fs::remove_file(&socket).unwrap();
    let (code, body) = http_get(addr, "/healthz").await;
    assert_eq!(code, 404, "a removed socket is unhealthy, 404 as node-driver-registrar: {body}");
    assert!(body.contains(&socket.display().to_string()), "the reason must name the socket: {body}");

    // Something else in the socket's place: 500, as upstream.
    std::fs::write(&socket, b"not a socket").unwrap();
    let (code, body) = http_get(addr, "/healthz").await;
    assert_eq!(code, 500, "a plain file where the socket was is a 500: {body}");
    std::fs::remove_file(&socket).unwrap();
    registrar.stop().await.expect("stops cleanly");
}

#[tokio::test]
async fn a_host_path_is_dialled_through_the_endpoint_prefix_map() {
    let scene = Scene::new();
    let _driver = scene.start_driver().await;
    let host_dir = "/var/lib/kubelet/plugins/csi.workshop.dev";
    let mut registrar = RunningRegistrar::start(lab04_registration::registrar::Config {
        kubelet_registration_path: format!("{host_dir}/csi.sock").into(),
        ..scene.config()
    });
    registrar.wait_until_serving().await;

    let map = format!("{host_dir}={}", scene.plugin_dir().display()).parse().unwrap();
    let options = Options { call_timeout: Duration::from_secs(3), prefix_maps: vec![map] };
    let (events, attempt) = watch_until_attempt(&mut scene.watcher_with(options)).await;
    let registration =
        attempt.unwrap_or_else(|f| panic!("the mapped path must be dialled: {}{}", f.error, lines(&events)));
    assert_eq!(registration.endpoint, format!("{host_dir}/csi.sock"), "kubelet reports the host path");
    assert_eq!(registration.dialed, scene.csi_socket());
}

#[tokio::test]
async fn a_second_socket_for_a_registered_name_is_refused_unless_its_version_is_higher() {
    let scene = Scene::new();
    let _driver = scene.start_driver().await;
    let registry = scene.registry();
    let mut watcher = scene.watcher();
    let _first =
        FakePlugin::start(&registry.join("a-reg.sock"), plugin_info(DRIVER, &scene.csi_socket(), &["1.0.0"]));
    let (events, attempt) = watch_until_attempt(&mut watcher).await;
    attempt.unwrap_or_else(|f| panic!("the first socket registers: {}{}", f.error, lines(&events)));

    // The same name and the same version from another socket: kubelet keeps the first.
    let mut same =
        FakePlugin::start(&registry.join("b-reg.sock"), plugin_info(DRIVER, &scene.csi_socket(), &["1.0.0"]));
    let (events, attempt) = watch_until_attempt(&mut watcher).await;
    let failure = attempt.expect_err("a second registration with the same version must be refused");
    assert!(
        matches!(failure.error, RegisterError::AlreadyRegistered { .. }),
        "kubelet refuses a name it has, unless the version is higher; got {:?}{}",
        failure.error,
        lines(&events)
    );
    assert_eq!(failure.error.step(), "validate");
    assert!(!same.verdict().await.plugin_registered, "the refused plugin must be told");

    // A higher version takes the name over.
    let _higher =
        FakePlugin::start(&registry.join("c-reg.sock"), plugin_info(DRIVER, &scene.csi_socket(), &["1.1.0"]));
    let (events, attempt) = watch_until_attempt(&mut watcher).await;
    let registration = attempt.unwrap_or_else(|f| {
        panic!("a higher version must replace the registration: {}{}", f.error, lines(&events))
    });
    assert_eq!(registration.version, "1.1.0");
    assert_eq!(watcher.registered().get(DRIVER).map(String::as_str), Some("1.1.0"));
}
