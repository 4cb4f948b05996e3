//! Lab 03 acceptance tests: the Node service with real loop devices, mkfs and
//! mounts, over a real unix socket. They need root; without it each test
//! prints SKIP and returns. Every test cleans up the host, even on failure.

mod support;

use lab01_identity::csi::node_service_capability::Type as CapType;
use lab01_identity::csi::node_service_capability::rpc::Type as Rpc;
use lab01_identity::csi::volume_capability::access_mode::Mode;
use lab01_identity::csi::*;
use support::*;
use tonic::Code;

const SNW: Mode = Mode::SingleNodeWriter;

fn code<T: std::fmt::Debug>(result: Result<tonic::Response<T>, tonic::Status>) -> Code {
    match result {
        Ok(response) => panic!("expected an error, got {response:?}"),
        Err(status) => status.code(),
    }
}

#[tokio::test]
async fn a_block_volume_is_formatted_once_and_keeps_its_data_across_unstage_and_stage() {
    require_root!();
    let mut d = Driver::start().await;
    d.create_and_attach("pvc-1", "block", 32 * MIB).await;
    d.node
        .node_stage_volume(d.stage_request("pvc-1", SNW, false, "ext4"))
        .await
        .expect("NodeStageVolume must attach, format and mount the image");
    let staged = mount_of(&d.staging("pvc-1")).expect("the staging path must be a mount point");
    assert_eq!(staged.fs_type, "ext4");
    assert!(loop_device_of(&d.image("pvc-1")).is_some(), "a loop device must back the image");

    d.node
        .node_publish_volume(d.publish_request("pvc-1", "pod-a", SNW, false, false))
        .await
        .expect("NodePublishVolume must bind-mount the staging path");
    std::fs::write(d.target("pod-a").join("data.txt"), b"hello").expect("the pod can write");

    d.unpublish("pvc-1", "pod-a").await.expect("NodeUnpublishVolume");
    assert!(!d.target("pod-a").exists(), "the target path we created must be removed");
    d.unstage("pvc-1").await.expect("NodeUnstageVolume");
    assert!(mount_of(&d.staging("pvc-1")).is_none(), "the staging mount must be gone");
    assert!(loop_device_of(&d.image("pvc-1")).is_none(), "the loop device must be detached");

    d.node.node_stage_volume(d.stage_request("pvc-1", SNW, false, "ext4")).await.expect("stage again");
    d.node
        .node_publish_volume(d.publish_request("pvc-1", "pod-b", SNW, false, false))
        .await
        .expect("publish again");
    let data = std::fs::read(d.target("pod-b").join("data.txt"))
        .expect("the data must still be there: never reformat");
    assert_eq!(data, b"hello");
    d.unpublish("pvc-1", "pod-b").await.unwrap();
    d.unstage("pvc-1").await.unwrap();
}

#[tokio::test]
async fn every_node_call_can_be_repeated() {
    require_root!();
    let mut d = Driver::start().await;
    d.create_and_attach("pvc-1", "block", 32 * MIB).await;
    for _ in 0..2 {
        d.node.node_stage_volume(d.stage_request("pvc-1", SNW, false, "")).await.expect("stage twice");
    }
    for _ in 0..2 {
        d.node
            .node_publish_volume(d.publish_request("pvc-1", "pod-a", SNW, false, false))
            .await
            .expect("publish twice");
    }
    let mounts = lab03_node::mount::read_mountinfo().unwrap();
    let count = mounts.iter().filter(|m| m.mount_point == d.target("pod-a")).count();
    assert_eq!(count, 1, "a repeated publish must not stack a second mount");
    for _ in 0..2 {
        d.unpublish("pvc-1", "pod-a").await.expect("unpublish twice");
    }
    for _ in 0..2 {
        d.unstage("pvc-1").await.expect("unstage twice");
    }
}

#[tokio::test]
async fn a_file_volume_is_shared_by_two_pods() {
    require_root!();
    let mut d = Driver::start().await;
    d.create_and_attach("share", "file", 16 * MIB).await;
    let mode = Mode::MultiNodeMultiWriter;
    d.node.node_stage_volume(d.stage_request("share", mode, false, "")).await.expect("stage a file volume");
    d.node.node_publish_volume(d.publish_request("share", "pod-a", mode, false, false)).await.unwrap();
    d.node.node_publish_volume(d.publish_request("share", "pod-b", mode, false, false)).await.unwrap();
    std::fs::write(d.target("pod-a").join("shared.txt"), b"from a").unwrap();
    assert_eq!(std::fs::read(d.target("pod-b").join("shared.txt")).unwrap(), b"from a");
    assert!(d.path("backend/volumes/share/data/shared.txt").exists(), "the data lives on the backend");
    d.unpublish("share", "pod-a").await.unwrap();
    d.unpublish("share", "pod-b").await.unwrap();
    d.unstage("share").await.unwrap();
}

#[tokio::test]
async fn a_readonly_publish_refuses_writes() {
    require_root!();
    let mut d = Driver::start().await;
    d.create_and_attach("pvc-1", "block", 32 * MIB).await;
    d.node.node_stage_volume(d.stage_request("pvc-1", SNW, false, "ext4")).await.unwrap();
    d.node
        .node_publish_volume(d.publish_request("pvc-1", "ro", SNW, false, true))
        .await
        .expect("readonly publish");
    let err =
        std::fs::write(d.target("ro").join("x"), b"x").expect_err("writes must fail on a readonly target");
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));
    let other = d.publish_request("pvc-1", "ro", SNW, false, false);
    assert_eq!(
        code(d.node.node_publish_volume(other).await),
        Code::AlreadyExists,
        "the same target with another readonly flag is ALREADY_EXISTS"
    );
    d.unpublish("pvc-1", "ro").await.unwrap();
    d.unstage("pvc-1").await.unwrap();
}

#[tokio::test]
async fn raw_block_access_binds_the_device_onto_a_file() {
    require_root!();
    let mut d = Driver::start().await;
    d.create_and_attach("raw", "block", 16 * MIB).await;
    d.node.node_stage_volume(d.stage_request("raw", SNW, true, "")).await.expect("stage for raw block");
    d.node
        .node_publish_volume(d.publish_request("raw", "dev", SNW, true, false))
        .await
        .expect("publish raw block");
    use std::os::unix::fs::FileTypeExt;
    let meta = std::fs::metadata(d.target("dev")).unwrap();
    assert!(meta.file_type().is_block_device(), "the target must be the block device");
    std::fs::write(d.target("dev"), b"raw bytes").expect("the pod can write to the device");
    let readonly = d.publish_request("raw", "dev-ro", SNW, true, true);
    assert_eq!(
        code(d.node.node_publish_volume(readonly).await),
        Code::FailedPrecondition,
        "a read-only bind cannot protect a read-write device: refuse instead of handing out a writable one"
    );
    d.unpublish("raw", "dev").await.unwrap();
    assert!(!d.target("dev").exists());
    d.unstage("raw").await.unwrap();
    assert_eq!(&std::fs::read(d.image("raw")).unwrap()[..9], b"raw bytes", "the bytes reached the image");
}

#[tokio::test]
async fn node_calls_in_the_wrong_order_are_failed_precondition() {
    require_root!();
    let mut d = Driver::start().await;
    d.controller
        .create_volume(CreateVolumeRequest {
            name: "unattached".into(),
            capacity_range: Some(CapacityRange { required_bytes: 16 * MIB, limit_bytes: 0 }),
            volume_capabilities: vec![lab02_controller::capability::capability(SNW, false, "")],
            ..Default::default()
        })
        .await
        .unwrap();
    let r = d.node.node_stage_volume(d.stage_request("unattached", SNW, false, "")).await;
    assert_eq!(code(r), Code::FailedPrecondition, "staging a block volume that is not attached here");
    assert!(loop_device_of(&d.image("unattached")).is_none(), "nothing may be set up by a refused call");

    d.create_and_attach("pvc-1", "block", 16 * MIB).await;
    let r = d.node.node_publish_volume(d.publish_request("pvc-1", "pod", SNW, false, false)).await;
    assert_eq!(code(r), Code::FailedPrecondition, "publishing a volume that is not staged");

    d.node.node_stage_volume(d.stage_request("pvc-1", SNW, false, "")).await.unwrap();
    d.node.node_publish_volume(d.publish_request("pvc-1", "pod", SNW, false, false)).await.unwrap();
    assert_eq!(
        code(d.unstage("pvc-1").await.map(tonic::Response::new)),
        Code::FailedPrecondition,
        "unstaging a volume that is still published"
    );
    d.unpublish("pvc-1", "pod").await.unwrap();
    d.unstage("pvc-1").await.unwrap();
}

#[tokio::test]
async fn node_calls_reject_bad_input_with_clear_codes() {
    require_root!();
    let mut d = Driver::start().await;
    d.create_and_attach("pvc-1", "block", 16 * MIB).await;
    let missing = d.stage_request("nope", SNW, false, "");
    assert_eq!(code(d.node.node_stage_volume(missing).await), Code::NotFound, "unknown volume");

    let mut cases = vec![];
    for path in ["", "relative/staging", "/", "/tmp/../etc", "/tmp/a\0b"] {
        let mut r = d.stage_request("pvc-1", SNW, false, "");
        r.staging_target_path = path.into();
        cases.push((format!("staging path {path:?}"), r));
    }
    for id in ["", "..", "../../etc", "a/b", "nul\0"] {
        let mut r = d.stage_request("pvc-1", SNW, false, "");
        r.volume_id = id.into();
        cases.push((format!("volume id {id:?}"), r));
    }
    let mut flags = d.stage_request("pvc-1", SNW, false, "");
    if let Some(volume_capability::AccessType::Mount(m)) =
        flags.volume_capability.as_mut().unwrap().access_type.as_mut()
    {
        m.mount_flags = vec!["noatime".into(), "bogus-flag".into()];
    }
    cases.push(("unknown mount flag".into(), flags));
    let mut no_cap = d.stage_request("pvc-1", SNW, false, "");
    no_cap.volume_capability = None;
    cases.push(("no capability".into(), no_cap));
    cases.push(("unsupported fs".into(), d.stage_request("pvc-1", SNW, false, "ntfs")));
    for (what, request) in cases {
        assert_eq!(code(d.node.node_stage_volume(request).await), Code::InvalidArgument, "{what}");
    }
    assert!(loop_device_of(&d.image("pvc-1")).is_none(), "rejected calls must not attach anything");

    for target in ["", "pods/relative", "/", "/tmp/../root"] {
        let mut r = d.publish_request("pvc-1", "x", SNW, false, false);
        r.target_path = target.into();
        assert_eq!(code(d.node.node_publish_volume(r).await), Code::InvalidArgument, "target {target:?}");
    }
}

#[tokio::test]
async fn an_existing_filesystem_of_another_type_is_never_reformatted() {
    require_root!();
    let mut d = Driver::start().await;
    d.create_and_attach("pvc-1", "block", 32 * MIB).await;
    d.node.node_stage_volume(d.stage_request("pvc-1", SNW, false, "ext4")).await.unwrap();
    d.node.node_publish_volume(d.publish_request("pvc-1", "pod", SNW, false, false)).await.unwrap();
    std::fs::write(d.target("pod").join("keep.txt"), b"keep").unwrap();
    d.unpublish("pvc-1", "pod").await.unwrap();
    d.unstage("pvc-1").await.unwrap();
    let r = d.node.node_stage_volume(d.stage_request("pvc-1", SNW, false, "ext3")).await;
    assert_eq!(
        code(r),
        Code::FailedPrecondition,
        "an ext4 volume staged as ext3 must be refused, not reformatted"
    );
    d.unstage("pvc-1").await.unwrap();
    d.node.node_stage_volume(d.stage_request("pvc-1", SNW, false, "ext4")).await.unwrap();
    d.node.node_publish_volume(d.publish_request("pvc-1", "pod", SNW, false, false)).await.unwrap();
    assert_eq!(std::fs::read(d.target("pod").join("keep.txt")).unwrap(), b"keep");
    d.unpublish("pvc-1", "pod").await.unwrap();
    d.unstage("pvc-1").await.unwrap();
}

#[tokio::test]
async fn volume_stats_report_bytes_and_inodes_and_an_abnormal_condition_when_the_mount_is_gone() {
    require_root!();
    let mut d = Driver::start().await;
    d.create_and_attach("pvc-1", "block", 32 * MIB).await;
    d.node.node_stage_volume(d.stage_request("pvc-1", SNW, false, "")).await.unwrap();
    d.node.node_publish_volume(d.publish_request("pvc-1", "pod", SNW, false, false)).await.unwrap();
    let stats = |d: &Driver| NodeGetVolumeStatsRequest {
        volume_id: "pvc-1".into(),
        volume_path: d.target("pod").display().to_string(),
        staging_target_path: String::new(),
    };
    let r = d.node.node_get_volume_stats(stats(&d)).await.expect("NodeGetVolumeStats").into_inner();
    let units: Vec<i32> = r.usage.iter().map(|u| u.unit).collect();
    assert_eq!(units, vec![volume_usage::Unit::Bytes as i32, volume_usage::Unit::Inodes as i32]);
    assert!(
        r.usage[0].total > 20 * MIB && r.usage[0].total <= 32 * MIB,
        "ext4 on a 32 MiB image: {:?}",
        r.usage[0]
    );
    assert!(!r.volume_condition.unwrap().abnormal);

    nix::mount::umount2(&d.target("pod"), nix::mount::MntFlags::MNT_DETACH).unwrap();
    let r = d.node.node_get_volume_stats(stats(&d)).await.unwrap().into_inner();
    assert!(r.volume_condition.expect("a condition").abnormal, "a vanished mount is abnormal");

    let mut elsewhere = stats(&d);
    elsewhere.volume_path = d.path("somewhere").display().to_string();
    assert_eq!(code(d.node.node_get_volume_stats(elsewhere).await), Code::NotFound);
    d.unpublish("pvc-1", "pod").await.unwrap();
    d.unstage("pvc-1").await.unwrap();
}

#[tokio::test]
async fn expanding_a_published_volume_grows_the_filesystem_online() {
    require_root!();
    let mut d = Driver::start().await;
    d.create_and_attach("pvc-1", "block", 32 * MIB).await;
    d.node.node_stage_volume(d.stage_request("pvc-1", SNW, false, "")).await.unwrap();
    d.node.node_publish_volume(d.publish_request("pvc-1", "pod", SNW, false, false)).await.unwrap();
    let before = lab03_node::fs::usage(&d.target("pod")).unwrap().total_bytes;
    let expand = |d: &Driver, bytes| NodeExpandVolumeRequest {
        volume_id: "pvc-1".into(),
        volume_path: d.target("pod").display().to_string(),
        capacity_range: Some(CapacityRange { required_bytes: bytes, limit_bytes: 0 }),
        ..Default::default()
    };
    assert_eq!(
        code(d.node.node_expand_volume(expand(&d, 64 * MIB)).await),
        Code::OutOfRange,
        "the node cannot grow past what the controller gave the backend volume"
    );
    d.controller
        .controller_expand_volume(ControllerExpandVolumeRequest {
            volume_id: "pvc-1".into(),
            capacity_range: Some(CapacityRange { required_bytes: 64 * MIB, limit_bytes: 0 }),
            ..Default::default()
        })
        .await
        .expect("ControllerExpandVolume");
    if !has_cap_sys_resource() {
        // ext4 online resize needs CAP_SYS_RESOURCE (kind's privileged node
        // containers have it; some sandboxes drop it).
        eprintln!("SKIP online filesystem growth: this process lacks CAP_SYS_RESOURCE");
        let r = d.node.node_expand_volume(expand(&d, 64 * MIB)).await;
        assert_eq!(code(r), Code::Internal, "without the capability resize2fs must fail loudly");
        assert_eq!(
            lab03_node::loopdev::size_bytes(&loop_device_of(&d.image("pvc-1")).unwrap()).unwrap(),
            64 * MIB as u64,
            "the loop device must still have learnt its new size"
        );
        d.unpublish("pvc-1", "pod").await.unwrap();
        d.unstage("pvc-1").await.unwrap();
        return;
    }
    for _ in 0..2 {
        let r = d
            .node
            .node_expand_volume(expand(&d, 64 * MIB))
            .await
            .expect("NodeExpandVolume, twice")
            .into_inner();
        assert_eq!(r.capacity_bytes, 64 * MIB);
    }
    let after = lab03_node::fs::usage(&d.target("pod")).unwrap().total_bytes;
    assert!(after > before + 20 * MIB as u64, "the filesystem must grow while mounted: {before} -> {after}");
    d.unpublish("pvc-1", "pod").await.unwrap();
    d.unstage("pvc-1").await.unwrap();
}

/// Whether this process may resize a mounted ext4 filesystem.
fn has_cap_sys_resource() -> bool {
    const CAP_SYS_RESOURCE: u32 = 24;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("CapEff:").map(|v| v.trim().to_owned())))
        .and_then(|hex| u64::from_str_radix(&hex, 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_SYS_RESOURCE) != 0)
}

#[tokio::test]
async fn a_restarted_plugin_keeps_serving_what_it_staged_and_can_tear_it_down() {
    require_root!();
    let mut d = Driver::start().await;
    d.create_and_attach("pvc-1", "block", 32 * MIB).await;
    d.create_and_attach("share", "file", 16 * MIB).await;
    d.node.node_stage_volume(d.stage_request("pvc-1", SNW, false, "")).await.unwrap();
    d.node.node_publish_volume(d.publish_request("pvc-1", "pod", SNW, false, false)).await.unwrap();
    d.node.node_stage_volume(d.stage_request("share", Mode::MultiNodeMultiWriter, false, "")).await.unwrap();
    std::fs::write(d.target("pod").join("before.txt"), b"written before the restart").unwrap();

    d.restart().await;

    assert_eq!(std::fs::read(d.target("pod").join("before.txt")).unwrap(), b"written before the restart");
    d.node
        .node_publish_volume(d.publish_request("pvc-1", "pod", SNW, false, false))
        .await
        .expect("a repeated publish after the restart is recognised");
    d.node
        .node_publish_volume(d.publish_request("share", "pod-s", Mode::MultiNodeMultiWriter, false, false))
        .await
        .expect("publishing a volume staged before the restart");
    d.unpublish("pvc-1", "pod").await.expect("unpublish after restart");
    d.unpublish("share", "pod-s").await.unwrap();
    d.unstage("pvc-1").await.expect("unstage after restart");
    d.unstage("share").await.unwrap();
    assert!(
        loop_device_of(&d.image("pvc-1")).is_none(),
        "the loop device must be detached after the restart too"
    );
}

#[tokio::test]
async fn after_a_reboot_lost_the_mounts_the_plugin_forgets_them_and_stages_again() {
    require_root!();
    let mut d = Driver::start().await;
    d.create_and_attach("pvc-1", "block", 32 * MIB).await;
    d.node.node_stage_volume(d.stage_request("pvc-1", SNW, false, "")).await.unwrap();
    d.node.node_publish_volume(d.publish_request("pvc-1", "pod", SNW, false, false)).await.unwrap();
    std::fs::write(d.target("pod").join("kept.txt"), b"kept").unwrap();
    // A reboot: every mount and loop device disappears behind the plugin's back.
    cleanup_under(d.host.dir.path());
    d.restart().await;
    d.node.node_stage_volume(d.stage_request("pvc-1", SNW, false, "")).await.expect("stage after the reboot");
    d.node
        .node_publish_volume(d.publish_request("pvc-1", "pod", SNW, false, false))
        .await
        .expect("publish after the reboot");
    assert_eq!(std::fs::read(d.target("pod").join("kept.txt")).unwrap(), b"kept");
    d.unpublish("pvc-1", "pod").await.unwrap();
    d.unstage("pvc-1").await.unwrap();
}

#[tokio::test]
async fn concurrent_stages_of_one_volume_mount_it_once() {
    require_root!();
    let mut d = Driver::start().await;
    d.create_and_attach("pvc-1", "block", 32 * MIB).await;
    let calls: Vec<_> = (0..4)
        .map(|_| {
            let mut node = d.node.clone();
            let request = d.stage_request("pvc-1", SNW, false, "");
            tokio::spawn(async move { node.node_stage_volume(request).await })
        })
        .collect();
    for call in calls {
        call.await.unwrap().expect("every concurrent stage succeeds");
    }
    let mounts = lab03_node::mount::read_mountinfo().unwrap();
    assert_eq!(mounts.iter().filter(|m| m.mount_point == d.staging("pvc-1")).count(), 1);
    d.unstage("pvc-1").await.unwrap();
}

#[tokio::test]
async fn node_info_and_capabilities_describe_the_node() {
    // Needs no root: NodeGetInfo reads no mounts, but the plugin's start-up
    // reads /proc/self/mountinfo, which every user may.
    let mut d = Driver::start().await;
    let info = d.node.node_get_info(NodeGetInfoRequest {}).await.expect("NodeGetInfo").into_inner();
    assert_eq!(info.node_id, NODE);
    let segments = info.accessible_topology.expect("topology").segments;
    assert_eq!(segments.get("topology.csi.workshop.dev/node").map(String::as_str), Some(NODE));
    assert!(segments.contains_key("topology.csi.workshop.dev/backend"));
    let caps: Vec<i32> = d
        .node
        .node_get_capabilities(NodeGetCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner()
        .capabilities
        .into_iter()
        .filter_map(|c| match c.r#type {
            Some(CapType::Rpc(r)) => Some(r.r#type),
            _ => None,
        })
        .collect();
    for wanted in [
        Rpc::StageUnstageVolume,
        Rpc::GetVolumeStats,
        Rpc::ExpandVolume,
        Rpc::VolumeCondition,
        Rpc::SingleNodeMultiWriter,
    ] {
        assert!(caps.contains(&(wanted as i32)), "missing {}", wanted.as_str_name());
    }
}

#[tokio::test]
async fn node_calls_answer_what_the_specs_tables_prescribe() {
    require_root!();
    let mut d = Driver::start().await;
    d.create_and_attach("pvc-1", "block", 16 * MIB).await;
    let snmw = Mode::SingleNodeMultiWriter;

    // A capability the volume cannot serve is FAILED_PRECONDITION, in stage and publish.
    let multi = d.stage_request("pvc-1", Mode::MultiNodeMultiWriter, false, "");
    assert_eq!(code(d.node.node_stage_volume(multi).await), Code::FailedPrecondition, "exceeds capabilities");

    d.node.node_stage_volume(d.stage_request("pvc-1", snmw, false, "")).await.unwrap();
    let raw = d.publish_request("pvc-1", "raw", snmw, true, false);
    assert_eq!(
        code(d.node.node_publish_volume(raw).await),
        Code::FailedPrecondition,
        "raw block access of a volume staged with a filesystem exceeds what was staged"
    );

    // No staging path, while the plugin has STAGE_UNSTAGE_VOLUME.
    let mut unstaged = d.publish_request("pvc-1", "pod-a", snmw, false, false);
    unstaged.staging_target_path = String::new();
    assert_eq!(code(d.node.node_publish_volume(unstaged).await), Code::FailedPrecondition);

    // SINGLE_NODE_MULTI_WRITER: two pods on this node may share the volume.
    d.node.node_publish_volume(d.publish_request("pvc-1", "pod-a", snmw, false, false)).await.unwrap();
    d.node.node_publish_volume(d.publish_request("pvc-1", "pod-b", snmw, false, false)).await.unwrap();

    // Unstaging at a path where the volume is not staged is already done: OK,
    // and the real staging mount is untouched.
    let elsewhere = NodeUnstageVolumeRequest {
        volume_id: "pvc-1".into(),
        staging_target_path: d.path("elsewhere").display().to_string(),
    };
    d.node.node_unstage_volume(elsewhere).await.expect("not staged at that path: OK");
    assert!(mount_of(&d.staging("pvc-1")).is_some(), "the real staging mount must stay");

    // An empty directory at a target we have no record of (a crash before the
    // record was saved) is removed; one with data is left alone.
    std::fs::create_dir_all(d.target("orphan")).unwrap();
    d.unpublish("pvc-1", "orphan").await.expect("unknown target: OK");
    assert!(!d.target("orphan").exists(), "the empty target directory must be removed");
    std::fs::create_dir_all(d.target("foreign")).unwrap();
    std::fs::write(d.target("foreign").join("data"), b"x").unwrap();
    d.unpublish("pvc-1", "foreign").await.expect("unknown target: OK");
    assert!(d.target("foreign").join("data").exists(), "data we did not create is never removed");

    d.unpublish("pvc-1", "pod-a").await.unwrap();
    d.unpublish("pvc-1", "pod-b").await.unwrap();
    d.unstage("pvc-1").await.unwrap();
}

#[tokio::test]
async fn a_published_once_volume_refuses_a_second_target_on_the_node() {
    require_root!();
    let mut d = Driver::start().await;
    d.create_and_attach("pvc-1", "block", 16 * MIB).await;
    for mode in [SNW, Mode::SingleNodeSingleWriter] {
        d.node.node_stage_volume(d.stage_request("pvc-1", mode, false, "")).await.unwrap();
        d.node.node_publish_volume(d.publish_request("pvc-1", "pod-a", mode, false, false)).await.unwrap();
        let second = d.publish_request("pvc-1", "pod-b", mode, false, false);
        assert_eq!(
            code(d.node.node_publish_volume(second).await),
            Code::FailedPrecondition,
            "{} is published once: a second target is FAILED_PRECONDITION",
            mode.as_str_name()
        );
        assert!(mount_of(&d.target("pod-b")).is_none(), "the refused target must not be mounted");
        d.unpublish("pvc-1", "pod-a").await.unwrap();
        d.unstage("pvc-1").await.unwrap();
    }
}

#[tokio::test]
async fn a_raw_block_volume_whose_loop_device_vanished_reports_an_abnormal_condition() {
    require_root!();
    let mut d = Driver::start().await;
    d.create_and_attach("raw", "block", 16 * MIB).await;
    d.node.node_stage_volume(d.stage_request("raw", SNW, true, "")).await.unwrap();
    d.node.node_publish_volume(d.publish_request("raw", "dev", SNW, true, false)).await.unwrap();
    let stats = NodeGetVolumeStatsRequest {
        volume_id: "raw".into(),
        volume_path: d.target("dev").display().to_string(),
        staging_target_path: String::new(),
    };
    let healthy = d.node.node_get_volume_stats(stats.clone()).await.unwrap().into_inner();
    assert!(!healthy.volume_condition.unwrap().abnormal);
    assert_eq!(healthy.usage[0].total, 16 * MIB);

    let device = loop_device_of(&d.image("raw")).expect("a loop device");
    lab03_node::loopdev::detach(&device).unwrap();
    let r = d.node.node_get_volume_stats(stats).await.expect("a health report, not an error").into_inner();
    assert!(r.volume_condition.expect("a condition").abnormal, "a detached device is abnormal");
    d.unpublish("raw", "dev").await.unwrap();
    d.unstage("raw").await.unwrap();
}

#[tokio::test]
async fn questions_about_unknown_volumes_or_paths_are_not_found_and_missing_fields_invalid() {
    // No root needed: nothing here reaches a mount. These are the answers
    // csi-sanity checks for.
    let mut d = Driver::start().await;
    let unknown = "fake-vol-id-0123456789";
    let stats = NodeGetVolumeStatsRequest {
        volume_id: unknown.into(),
        volume_path: "some/path".into(),
        staging_target_path: String::new(),
    };
    assert_eq!(code(d.node.node_get_volume_stats(stats).await), Code::NotFound, "stats of an unknown volume");
    let expand = NodeExpandVolumeRequest {
        volume_id: unknown.into(),
        volume_path: "some/path".into(),
        ..Default::default()
    };
    assert_eq!(code(d.node.node_expand_volume(expand).await), Code::NotFound, "expanding an unknown volume");
    let no_path = NodeGetVolumeStatsRequest { volume_id: unknown.into(), ..Default::default() };
    assert_eq!(code(d.node.node_get_volume_stats(no_path).await), Code::InvalidArgument, "no volume_path");

    // A missing target path or capability is INVALID_ARGUMENT even when the
    // staging path is missing too: the request itself is malformed.
    let no_target = NodePublishVolumeRequest { volume_id: unknown.into(), ..Default::default() };
    assert_eq!(code(d.node.node_publish_volume(no_target).await), Code::InvalidArgument, "no target_path");
    let no_cap = NodePublishVolumeRequest {
        volume_id: unknown.into(),
        target_path: d.target("pod").display().to_string(),
        ..Default::default()
    };
    assert_eq!(code(d.node.node_publish_volume(no_cap).await), Code::InvalidArgument, "no capability");
}
