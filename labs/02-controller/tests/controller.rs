//! Lab 02 acceptance tests: the Controller service over a real unix socket,
//! with real volumes in a temporary backend directory.

mod common;

use common::*;
use lab01_identity::csi::controller_service_capability::Type as CapType;
use lab01_identity::csi::controller_service_capability::rpc::Type as Rpc;
use lab01_identity::csi::volume_capability::access_mode::Mode;
use lab01_identity::csi::*;
use tonic::Code;

fn code<T: std::fmt::Debug>(result: Result<tonic::Response<T>, tonic::Status>) -> Code {
    match result {
        Ok(response) => panic!("expected an error, got {response:?}"),
        Err(status) => status.code(),
    }
}

// ---- CreateVolume ----------------------------------------------------------

#[tokio::test]
async fn create_volume_makes_a_sparse_image_for_a_block_volume() {
    let mut d = Driver::start().await;
    let volume = d
        .client
        .create_volume(create_request("pvc-1", "block", 64 * MIB))
        .await
        .expect("CreateVolume must succeed")
        .into_inner()
        .volume
        .expect("a volume");
    assert_eq!(volume.volume_id, "pvc-1");
    assert_eq!(volume.capacity_bytes, 64 * MIB);
    assert_eq!(volume.volume_context.get("type").map(String::as_str), Some("block"));
    assert_eq!(volume.accessible_topology.len(), 1, "the volume must name the backend it lives on");
    let image = d.backend().image_path("pvc-1");
    assert_eq!(std::fs::metadata(&image).expect("the image file must exist").len(), 64 * MIB as u64);
}

#[tokio::test]
async fn create_volume_makes_a_directory_for_a_file_volume() {
    let mut d = Driver::start().await;
    d.client
        .create_volume(create_request("share", "file", 32 * MIB))
        .await
        .expect("CreateVolume must succeed");
    assert!(d.backend().data_dir("share").is_dir(), "a file volume is a directory on the backend");
}

#[tokio::test]
async fn create_volume_twice_with_the_same_arguments_returns_the_same_volume() {
    let mut d = Driver::start().await;
    let first =
        d.client.create_volume(create_request("pvc-1", "block", 64 * MIB)).await.unwrap().into_inner();
    let second = d
        .client
        .create_volume(create_request("pvc-1", "block", 64 * MIB))
        .await
        .expect("a retried CreateVolume must succeed")
        .into_inner();
    assert_eq!(first, second);
}

#[tokio::test]
async fn create_volume_with_the_same_name_but_other_arguments_is_already_exists() {
    let mut d = Driver::start().await;
    d.client.create_volume(create_request("pvc-1", "block", 64 * MIB)).await.unwrap();
    assert_eq!(
        code(d.client.create_volume(create_request("pvc-1", "block", 128 * MIB)).await),
        Code::AlreadyExists
    );
    assert_eq!(
        code(d.client.create_volume(create_request("pvc-1", "file", 64 * MIB)).await),
        Code::AlreadyExists
    );
}

#[tokio::test]
async fn create_volume_rejects_bad_input_with_invalid_argument() {
    let mut d = Driver::start().await;
    let mut cases = vec![];
    for name in ["", "..", "../escape", "a/b", "nul\0byte", "/abs"] {
        cases.push((format!("name {name:?}"), create_request(name, "block", 64 * MIB)));
    }
    let mut no_caps = create_request("v", "block", 64 * MIB);
    no_caps.volume_capabilities.clear();
    cases.push(("no capabilities".into(), no_caps));
    let mut bad_type = create_request("v", "block", 64 * MIB);
    bad_type.parameters.insert("type".into(), "tape".into());
    cases.push(("type=tape".into(), bad_type));
    let mut unknown_param = create_request("v", "block", 64 * MIB);
    unknown_param.parameters.insert("speed".into(), "fast".into());
    cases.push(("unknown parameter".into(), unknown_param));
    let mut multi_block = create_request("v", "block", 64 * MIB);
    multi_block.volume_capabilities = vec![mount_cap(Mode::MultiNodeMultiWriter)];
    cases.push(("multi-node block volume".into(), multi_block));
    let mut negative = create_request("v", "block", -1);
    negative.capacity_range = Some(CapacityRange { required_bytes: -1, limit_bytes: 0 });
    cases.push(("negative capacity".into(), negative));
    for (what, request) in cases {
        let result = d.client.create_volume(request).await;
        assert_eq!(code(result), Code::InvalidArgument, "{what} must be INVALID_ARGUMENT");
    }
    assert!(d.backend().list().unwrap().is_empty(), "nothing may be created by a rejected request");
}

#[tokio::test]
async fn create_volume_with_an_impossible_capacity_is_out_of_range() {
    let mut d = Driver::start().await;
    let huge = create_request("huge", "block", i64::MAX);
    assert_eq!(code(d.client.create_volume(huge).await), Code::OutOfRange);
    let mut tiny = create_request("tiny", "block", 0);
    tiny.capacity_range = Some(CapacityRange { required_bytes: 0, limit_bytes: 1024 });
    assert_eq!(code(d.client.create_volume(tiny).await), Code::OutOfRange);
}

#[tokio::test]
async fn create_volume_for_another_backends_topology_is_resource_exhausted() {
    let mut d = Driver::start().await;
    let mut request = create_request("v", "block", 64 * MIB);
    let key = "topology.csi.workshop.dev/backend".to_string();
    request.accessibility_requirements = Some(TopologyRequirement {
        requisite: vec![Topology { segments: [(key.clone(), "elsewhere".to_string())].into() }],
        preferred: vec![],
    });
    assert_eq!(code(d.client.create_volume(request.clone()).await), Code::ResourceExhausted);
    let ours = d.backend().id().to_owned();
    request.accessibility_requirements = Some(TopologyRequirement {
        requisite: vec![Topology { segments: [(key.clone(), ours.clone())].into() }],
        preferred: vec![Topology { segments: [(key.clone(), ours.clone())].into() }],
    });
    let volume =
        d.client.create_volume(request).await.expect("our own backend is fine").into_inner().volume.unwrap();
    assert_eq!(volume.accessible_topology[0].segments.get(&key), Some(&ours));
}

// ---- DeleteVolume ----------------------------------------------------------

#[tokio::test]
async fn delete_volume_removes_the_data_and_a_second_delete_is_ok() {
    let mut d = Driver::start().await;
    d.client.create_volume(create_request("pvc-1", "block", 64 * MIB)).await.unwrap();
    for _ in 0..2 {
        d.client
            .delete_volume(DeleteVolumeRequest { volume_id: "pvc-1".into(), ..Default::default() })
            .await
            .expect("DeleteVolume must succeed, also for a volume that is already gone");
    }
    assert!(!d.backend().volume_dir("pvc-1").exists(), "the backend volume must be gone");
}

#[tokio::test]
async fn delete_volume_refuses_bad_ids_and_published_volumes() {
    let mut d = Driver::start().await;
    for id in ["", "../backend-id", "a/b"] {
        let r =
            d.client.delete_volume(DeleteVolumeRequest { volume_id: id.into(), ..Default::default() }).await;
        assert_eq!(code(r), Code::InvalidArgument, "volume_id {id:?}");
    }
    assert!(d.backend_dir().join("backend-id").exists(), "a traversal id must not delete anything");
    d.register_node("node-a", 0);
    d.client.create_volume(create_request("pvc-1", "block", 64 * MIB)).await.unwrap();
    d.client
        .controller_publish_volume(publish_request("pvc-1", "node-a", Mode::SingleNodeWriter, false))
        .await
        .unwrap();
    let r =
        d.client.delete_volume(DeleteVolumeRequest { volume_id: "pvc-1".into(), ..Default::default() }).await;
    assert_eq!(code(r), Code::FailedPrecondition, "a published volume must not be deleted");
}

// ---- ControllerPublish / Unpublish -------------------------------------------

#[tokio::test]
async fn publish_records_the_attachment_and_returns_a_publish_context() {
    let mut d = Driver::start().await;
    d.register_node("node-a", 0);
    d.client.create_volume(create_request("pvc-1", "block", 64 * MIB)).await.unwrap();
    let mut contexts = vec![];
    for _ in 0..2 {
        let r = d
            .client
            .controller_publish_volume(publish_request("pvc-1", "node-a", Mode::SingleNodeWriter, false))
            .await
            .expect("ControllerPublishVolume must succeed, twice")
            .into_inner();
        contexts.push(r.publish_context);
    }
    assert_eq!(contexts[0], contexts[1]);
    assert!(contexts[0].contains_key("image"), "a block volume's publish context names its image");
    let record = d.backend().get("pvc-1").unwrap();
    assert!(record.attachments.contains_key("node-a"), "the attachment must be recorded on the backend");
}

#[tokio::test]
async fn publish_error_codes_follow_the_spec() {
    let mut d = Driver::start().await;
    d.register_node("node-a", 0);
    d.register_node("node-b", 0);
    d.client.create_volume(create_request("pvc-1", "block", 64 * MIB)).await.unwrap();
    let cases = [
        ("unknown volume", publish_request("nope", "node-a", Mode::SingleNodeWriter, false), Code::NotFound),
        ("unknown node", publish_request("pvc-1", "node-z", Mode::SingleNodeWriter, false), Code::NotFound),
        (
            "empty volume id",
            publish_request("", "node-a", Mode::SingleNodeWriter, false),
            Code::InvalidArgument,
        ),
        ("empty node id", publish_request("pvc-1", "", Mode::SingleNodeWriter, false), Code::InvalidArgument),
        (
            "traversal id",
            publish_request("../x", "node-a", Mode::SingleNodeWriter, false),
            Code::InvalidArgument,
        ),
        (
            "no capability",
            ControllerPublishVolumeRequest {
                volume_id: "pvc-1".into(),
                node_id: "node-a".into(),
                ..Default::default()
            },
            Code::InvalidArgument,
        ),
    ];
    for (what, request, expected) in cases {
        assert_eq!(code(d.client.controller_publish_volume(request).await), expected, "{what}");
    }
    d.client
        .controller_publish_volume(publish_request("pvc-1", "node-a", Mode::SingleNodeWriter, false))
        .await
        .unwrap();
    let readonly_now = publish_request("pvc-1", "node-a", Mode::SingleNodeWriter, true);
    assert_eq!(
        code(d.client.controller_publish_volume(readonly_now).await),
        Code::AlreadyExists,
        "the same node with a different readonly flag is ALREADY_EXISTS"
    );
    let elsewhere = publish_request("pvc-1", "node-b", Mode::SingleNodeWriter, false);
    assert_eq!(
        code(d.client.controller_publish_volume(elsewhere).await),
        Code::FailedPrecondition,
        "a single-node volume published elsewhere is FAILED_PRECONDITION"
    );
}

#[tokio::test]
async fn a_node_at_its_volume_limit_is_resource_exhausted() {
    let mut d = Driver::start().await;
    d.register_node("node-a", 1);
    for name in ["v1", "v2"] {
        d.client.create_volume(create_request(name, "block", 16 * MIB)).await.unwrap();
    }
    d.client
        .controller_publish_volume(publish_request("v1", "node-a", Mode::SingleNodeWriter, false))
        .await
        .unwrap();
    let r = d
        .client
        .controller_publish_volume(publish_request("v2", "node-a", Mode::SingleNodeWriter, false))
        .await;
    assert_eq!(code(r), Code::ResourceExhausted);
}

#[tokio::test]
async fn a_file_volume_can_be_published_to_many_nodes() {
    let mut d = Driver::start().await;
    d.register_node("node-a", 0);
    d.register_node("node-b", 0);
    d.client.create_volume(create_request("share", "file", 16 * MIB)).await.unwrap();
    for node in ["node-a", "node-b"] {
        d.client
            .controller_publish_volume(publish_request("share", node, Mode::MultiNodeMultiWriter, false))
            .await
            .expect("multi-node file volumes publish to every node");
    }
    let status = d
        .client
        .controller_get_volume(ControllerGetVolumeRequest { volume_id: "share".into() })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(status.published_node_ids, vec!["node-a".to_string(), "node-b".to_string()]);
}

#[tokio::test]
async fn unpublish_is_idempotent_and_tolerates_volumes_that_are_gone() {
    let mut d = Driver::start().await;
    d.register_node("node-a", 0);
    d.client.create_volume(create_request("pvc-1", "block", 16 * MIB)).await.unwrap();
    d.client
        .controller_publish_volume(publish_request("pvc-1", "node-a", Mode::SingleNodeWriter, false))
        .await
        .unwrap();
    let unpublish = |volume: &str, node: &str| ControllerUnpublishVolumeRequest {
        volume_id: volume.into(),
        node_id: node.into(),
        ..Default::default()
    };
    for _ in 0..2 {
        d.client
            .controller_unpublish_volume(unpublish("pvc-1", "node-a"))
            .await
            .expect("unpublish must succeed twice");
    }
    assert!(d.backend().get("pvc-1").unwrap().attachments.is_empty());
    d.client
        .controller_unpublish_volume(unpublish("gone", "node-a"))
        .await
        .expect("a missing volume is unpublished");
    assert_eq!(
        code(d.client.controller_unpublish_volume(unpublish("", "node-a")).await),
        Code::InvalidArgument
    );
}

// ---- Validate, List, Capacity, Get, Expand, Capabilities --------------------

#[tokio::test]
async fn validate_volume_capabilities_confirms_only_what_the_volume_supports() {
    let mut d = Driver::start().await;
    d.client.create_volume(create_request("pvc-1", "block", 16 * MIB)).await.unwrap();
    let request = |mode| ValidateVolumeCapabilitiesRequest {
        volume_id: "pvc-1".into(),
        volume_capabilities: vec![mount_cap(mode)],
        ..Default::default()
    };
    let ok =
        d.client.validate_volume_capabilities(request(Mode::SingleNodeWriter)).await.unwrap().into_inner();
    assert!(ok.confirmed.is_some(), "single-node writer is supported for block volumes");
    let no = d
        .client
        .validate_volume_capabilities(request(Mode::MultiNodeMultiWriter))
        .await
        .unwrap()
        .into_inner();
    assert!(
        no.confirmed.is_none() && !no.message.is_empty(),
        "multi-node block must not be confirmed, with a reason"
    );
    let mut missing = request(Mode::SingleNodeWriter);
    missing.volume_id = "nope".into();
    assert_eq!(code(d.client.validate_volume_capabilities(missing).await), Code::NotFound);
    let mut empty = request(Mode::SingleNodeWriter);
    empty.volume_capabilities.clear();
    assert_eq!(code(d.client.validate_volume_capabilities(empty).await), Code::InvalidArgument);
}

#[tokio::test]
async fn list_volumes_pages_through_every_volume_and_aborts_on_a_bad_token() {
    let mut d = Driver::start().await;
    for i in 0..5 {
        d.client.create_volume(create_request(&format!("v{i}"), "file", 16 * MIB)).await.unwrap();
    }
    let mut seen = vec![];
    let mut token = String::new();
    loop {
        let page = d
            .client
            .list_volumes(ListVolumesRequest { max_entries: 2, starting_token: token.clone() })
            .await
            .expect("ListVolumes must succeed")
            .into_inner();
        assert!(page.entries.len() <= 2, "a page must respect max_entries");
        seen.extend(page.entries.into_iter().map(|e| e.volume.unwrap().volume_id));
        if page.next_token.is_empty() {
            break;
        }
        token = page.next_token;
    }
    assert_eq!(seen, vec!["v0", "v1", "v2", "v3", "v4"]);
    let bad =
        d.client.list_volumes(ListVolumesRequest { max_entries: 0, starting_token: "garbage".into() }).await;
    assert_eq!(code(bad), Code::Aborted);
    let negative =
        d.client.list_volumes(ListVolumesRequest { max_entries: -1, starting_token: String::new() }).await;
    assert_eq!(code(negative), Code::InvalidArgument);
}

#[tokio::test]
async fn get_capacity_reports_the_backend_free_space() {
    let mut d = Driver::start().await;
    let r = d.client.get_capacity(GetCapacityRequest::default()).await.expect("GetCapacity").into_inner();
    assert!(r.available_capacity > 0);
    assert!(r.minimum_volume_size.is_some() && r.maximum_volume_size.is_some());
    let elsewhere = GetCapacityRequest {
        accessible_topology: Some(Topology {
            segments: [("topology.csi.workshop.dev/backend".into(), "other".into())].into(),
        }),
        ..Default::default()
    };
    assert_eq!(d.client.get_capacity(elsewhere).await.unwrap().into_inner().available_capacity, 0);
}

#[tokio::test]
async fn controller_get_volume_shows_published_nodes_and_health() {
    let mut d = Driver::start().await;
    d.register_node("node-a", 0);
    d.client.create_volume(create_request("pvc-1", "block", 16 * MIB)).await.unwrap();
    d.client
        .controller_publish_volume(publish_request("pvc-1", "node-a", Mode::SingleNodeWriter, false))
        .await
        .unwrap();
    let r = d
        .client
        .controller_get_volume(ControllerGetVolumeRequest { volume_id: "pvc-1".into() })
        .await
        .unwrap()
        .into_inner();
    let status = r.status.unwrap();
    assert_eq!(status.published_node_ids, vec!["node-a".to_string()]);
    assert!(!status.volume_condition.unwrap().abnormal);
    std::fs::remove_file(d.backend().image_path("pvc-1")).unwrap();
    let r = d
        .client
        .controller_get_volume(ControllerGetVolumeRequest { volume_id: "pvc-1".into() })
        .await
        .unwrap()
        .into_inner();
    assert!(
        r.status.unwrap().volume_condition.unwrap().abnormal,
        "missing data must be reported as abnormal"
    );
    assert_eq!(
        code(d.client.controller_get_volume(ControllerGetVolumeRequest { volume_id: "nope".into() }).await),
        Code::NotFound
    );
}

#[tokio::test]
async fn expanding_a_block_volume_grows_the_image_and_asks_for_node_expansion() {
    let mut d = Driver::start().await;
    d.client.create_volume(create_request("pvc-1", "block", 16 * MIB)).await.unwrap();
    let expand = |required| ControllerExpandVolumeRequest {
        volume_id: "pvc-1".into(),
        capacity_range: Some(CapacityRange { required_bytes: required, limit_bytes: 0 }),
        ..Default::default()
    };
    for _ in 0..2 {
        let r = d
            .client
            .controller_expand_volume(expand(32 * MIB))
            .await
            .expect("expand must succeed twice")
            .into_inner();
        assert_eq!(r.capacity_bytes, 32 * MIB);
        assert!(r.node_expansion_required, "the node must grow the filesystem");
    }
    assert_eq!(std::fs::metadata(d.backend().image_path("pvc-1")).unwrap().len(), 32 * MIB as u64);
    let mut shrink = expand(0);
    shrink.capacity_range = Some(CapacityRange { required_bytes: 0, limit_bytes: 16 * MIB });
    assert_eq!(code(d.client.controller_expand_volume(shrink).await), Code::OutOfRange);
    let mut missing = expand(32 * MIB);
    missing.volume_id = "nope".into();
    assert_eq!(code(d.client.controller_expand_volume(missing).await), Code::NotFound);
    let mut no_range = expand(0);
    no_range.capacity_range = None;
    assert_eq!(code(d.client.controller_expand_volume(no_range).await), Code::InvalidArgument);
}

#[tokio::test]
async fn controller_capabilities_advertise_what_is_served() {
    let mut d = Driver::start().await;
    let caps = rpc_capabilities(&mut d.client).await;
    for wanted in [
        Rpc::CreateDeleteVolume,
        Rpc::PublishUnpublishVolume,
        Rpc::ListVolumes,
        Rpc::GetCapacity,
        Rpc::ExpandVolume,
        Rpc::GetVolume,
        Rpc::ListVolumesPublishedNodes,
        Rpc::VolumeCondition,
    ] {
        assert!(caps.contains(&(wanted as i32)), "missing {}", wanted.as_str_name());
    }
    let r = d.client.create_snapshot(CreateSnapshotRequest::default()).await;
    assert_eq!(code(r), Code::Unimplemented, "RPCs we do not serve answer UNIMPLEMENTED");
}

// ---- Restarts and concurrency ----------------------------------------------

#[tokio::test]
async fn volumes_and_attachments_survive_a_restart() {
    let mut d = Driver::start().await;
    d.register_node("node-a", 0);
    d.register_node("node-b", 0);
    d.client.create_volume(create_request("pvc-1", "block", 16 * MIB)).await.unwrap();
    d.client
        .controller_publish_volume(publish_request("pvc-1", "node-a", Mode::SingleNodeWriter, false))
        .await
        .unwrap();

    let mut d = d.restart().await;
    let again = d
        .client
        .controller_publish_volume(publish_request("pvc-1", "node-a", Mode::SingleNodeWriter, false))
        .await;
    assert!(again.is_ok(), "the attachment must survive the restart");
    let elsewhere = d
        .client
        .controller_publish_volume(publish_request("pvc-1", "node-b", Mode::SingleNodeWriter, false))
        .await;
    assert_eq!(code(elsewhere), Code::FailedPrecondition, "and still block other nodes");
    d.client
        .controller_unpublish_volume(ControllerUnpublishVolumeRequest {
            volume_id: "pvc-1".into(),
            node_id: "node-a".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    d.client
        .delete_volume(DeleteVolumeRequest { volume_id: "pvc-1".into(), ..Default::default() })
        .await
        .unwrap();
    assert!(d.backend().list().unwrap().is_empty());
}

#[tokio::test]
async fn concurrent_creates_of_one_name_make_exactly_one_volume() {
    let d = Driver::start().await;
    let calls = (0..8).map(|_| {
        let mut client = d.client.clone();
        tokio::spawn(async move { client.create_volume(create_request("race", "block", 16 * MIB)).await })
    });
    let ids: Vec<String> = futures_join(calls)
        .await
        .into_iter()
        .map(|r| {
            r.expect("every concurrent CreateVolume must succeed").into_inner().volume.unwrap().volume_id
        })
        .collect();
    assert!(ids.iter().all(|id| id == "race"));
    assert_eq!(d.backend().list().unwrap().len(), 1);
}

#[tokio::test]
async fn concurrent_publishes_to_two_nodes_let_exactly_one_win() {
    let mut d = Driver::start().await;
    d.register_node("node-a", 0);
    d.register_node("node-b", 0);
    d.client.create_volume(create_request("pvc-1", "block", 16 * MIB)).await.unwrap();
    let calls = ["node-a", "node-b", "node-a", "node-b"].map(|node| {
        let mut client = d.client.clone();
        tokio::spawn(async move {
            client
                .controller_publish_volume(publish_request("pvc-1", node, Mode::SingleNodeWriter, false))
                .await
        })
    });
    let results = futures_join(calls).await;
    let winners: std::collections::BTreeSet<_> =
        d.backend().get("pvc-1").unwrap().attachments.into_keys().collect();
    assert_eq!(winners.len(), 1, "a single-node volume must end up on exactly one node");
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 2, "both calls for the winning node succeed, both for the other fail");
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(r.code(), Code::FailedPrecondition);
    }
}

#[tokio::test]
async fn concurrent_publishes_of_different_volumes_never_pass_a_nodes_limit() {
    let mut d = Driver::start().await;
    d.register_node("node-a", 2);
    let names = ["v1", "v2", "v3", "v4", "v5", "v6"];
    for name in names {
        d.client.create_volume(create_request(name, "block", 16 * MIB)).await.unwrap();
    }
    let calls = names.map(|name| {
        let mut client = d.client.clone();
        tokio::spawn(async move {
            client
                .controller_publish_volume(publish_request(name, "node-a", Mode::SingleNodeWriter, false))
                .await
        })
    });
    let results = futures_join(calls).await;
    let attached =
        d.backend().list().unwrap().iter().filter(|v| v.attachments.contains_key("node-a")).count();
    assert_eq!(attached, 2, "the node's limit of 2 must hold under concurrent publishes");
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 2);
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(r.code(), Code::ResourceExhausted);
    }
}

#[tokio::test]
async fn multi_node_single_writer_allows_one_writer_and_any_number_of_readers() {
    let mut d = Driver::start().await;
    for node in ["node-a", "node-b", "node-c"] {
        d.register_node(node, 0);
    }
    d.client.create_volume(create_request("share", "file", 16 * MIB)).await.unwrap();
    let msw = Mode::MultiNodeSingleWriter;
    d.client
        .controller_publish_volume(publish_request("share", "node-a", msw, false))
        .await
        .expect("the writer");
    let r = d.client.controller_publish_volume(publish_request("share", "node-b", msw, false)).await;
    assert_eq!(code(r), Code::FailedPrecondition, "a second read-write node is refused");
    for node in ["node-b", "node-c"] {
        d.client
            .controller_publish_volume(publish_request("share", node, msw, true))
            .await
            .expect("a reader");
    }
    d.client
        .controller_unpublish_volume(ControllerUnpublishVolumeRequest {
            volume_id: "share".into(),
            node_id: "node-a".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let r = d.client.controller_publish_volume(publish_request("share", "node-a", msw, false)).await;
    assert!(r.is_ok(), "once the writer is gone another node may write: {r:?}");
}

#[tokio::test]
async fn expanding_with_a_negative_or_empty_capacity_range_is_invalid_argument() {
    let mut d = Driver::start().await;
    d.client.create_volume(create_request("pvc-1", "block", 32 * MIB)).await.unwrap();
    for (required_bytes, limit_bytes) in [(-5, 0), (0, -1), (0, 0), (64 * MIB, 32 * MIB)] {
        let r = d
            .client
            .controller_expand_volume(ControllerExpandVolumeRequest {
                volume_id: "pvc-1".into(),
                capacity_range: Some(CapacityRange { required_bytes, limit_bytes }),
                ..Default::default()
            })
            .await;
        assert_eq!(code(r), Code::InvalidArgument, "range ({required_bytes}, {limit_bytes})");
    }
}

#[tokio::test]
async fn validate_volume_capabilities_does_not_confirm_unknown_parameters() {
    let mut d = Driver::start().await;
    d.client.create_volume(create_request("pvc-1", "block", 16 * MIB)).await.unwrap();
    let r = d
        .client
        .validate_volume_capabilities(ValidateVolumeCapabilitiesRequest {
            volume_id: "pvc-1".into(),
            volume_capabilities: vec![mount_cap(Mode::SingleNodeWriter)],
            parameters: std::collections::HashMap::from([("speed".to_string(), "fast".to_string())]),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.confirmed.is_none(), "an unknown parameter must not be confirmed");
    assert!(r.message.contains("speed"), "the message names it: {}", r.message);
}

#[tokio::test]
async fn a_file_only_controller_refuses_block_volumes_and_advertises_no_attach() {
    use lab02_controller::backend::{Backend, VolumeKind};
    use lab02_controller::controller::ControllerService;
    use lab02_controller::topology::TopologyKeys;
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::open(&dir.path().join("backend")).unwrap();
    let service = ControllerService::new(backend, TopologyKeys::for_driver("file.csi.workshop.dev"), 1 << 40)
        .with_volume_kinds(vec![VolumeKind::File]);
    let router = lab01_identity::server::grpc_server()
        .add_service(lab01_identity::csi::controller_server::ControllerServer::new(service));
    let server = lab01_identity::testing::TestServer::start(router, dir.path()).await;
    let mut client = lab01_identity::csi::controller_client::ControllerClient::new(server.channel().await);

    let r = client.create_volume(create_request("blk", "block", 16 * MIB)).await;
    assert_eq!(code(r), Code::InvalidArgument, "a file-only driver must refuse type=block");
    client.create_volume(create_request("share", "file", 16 * MIB)).await.expect("file volumes are served");
    let caps = rpc_capabilities(&mut client).await;
    assert!(!caps.contains(&(Rpc::PublishUnpublishVolume as i32)), "nothing to attach: {caps:?}");
    assert!(caps.contains(&(Rpc::CreateDeleteVolume as i32)));
}

/// The RPC capabilities ControllerGetCapabilities lists, as enum values.
async fn rpc_capabilities(
    client: &mut lab01_identity::csi::controller_client::ControllerClient<tonic::transport::Channel>,
) -> Vec<i32> {
    client
        .controller_get_capabilities(ControllerGetCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner()
        .capabilities
        .into_iter()
        .filter_map(|c| match c.r#type {
            Some(CapType::Rpc(rpc)) => Some(rpc.r#type),
            None => None,
        })
        .collect()
}

async fn futures_join<T>(handles: impl IntoIterator<Item = tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = vec![];
    for handle in handles {
        out.push(handle.await.expect("task panicked"));
    }
    out
}
