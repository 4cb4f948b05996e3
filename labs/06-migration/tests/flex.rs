//! The FlexVolume call-out protocol, driven exactly as kubelet drives it:
//! argv and JSON in, one JSON reply on stdout and an exit code out.
//! The mount tests need root; without it they print SKIP and return.

mod support;

use serde_json::json;
use support::{Host, require_root};

fn status(reply: &serde_json::Value) -> &str {
    reply["status"].as_str().unwrap_or_default()
}

#[test]
fn init_succeeds_and_says_there_is_no_attach() {
    let host = Host::new();
    let (reply, code) = host.flex(&["init"]);
    assert_eq!(reply, json!({"status": "Success", "capabilities": {"attach": false}}));
    assert_eq!(code, 0);
}

#[test]
fn calls_we_do_not_implement_are_not_supported_with_exit_code_0() {
    let host = Host::new();
    for args in [
        &["attach", "{}", "node-a"][..],
        &["mountdevice", "/mnt/x", "/dev/loop0", "{}"],
        &["getvolumename", "{}"],
        &["expandvolume", "{}", "1", "2"],
        &["frobnicate"],
    ] {
        let (reply, code) = host.flex(args);
        assert_eq!(status(&reply), "Not supported", "{args:?}: {reply}");
        assert!(reply["message"].as_str().unwrap().contains(args[0]), "{reply}");
        assert_eq!(code, 0, "{args:?}");
    }
}

#[test]
fn bad_calls_are_failures_with_exit_code_1() {
    let host = Host::new();
    std::fs::create_dir_all(host.backend()).unwrap();
    let target = host.path("pod/vol");
    let t = target.to_str().unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec![], "usage"),
        (vec!["mount".into(), t.into()], "usage"),
        (vec!["unmount".into()], "usage"),
        (vec!["mount".into(), t.into(), "{not json".into()], "not a JSON object"),
        (vec!["mount".into(), t.into(), r#"{"volumeId": 7}"#.into()], "not a JSON object"),
        (vec!["mount".into(), t.into(), json!({"type": "block"}).to_string()], "volumeId"),
        (vec!["mount".into(), t.into(), host.options("nope", "block", &[])], "does not exist"),
        (
            vec![
                "mount".into(),
                t.into(),
                host.options("v", "block", &[("backendDir", "/nonexistent/backend")]),
            ],
            "does not exist",
        ),
        (vec!["mount".into(), t.into(), host.options("v", "tape", &[])], "type"),
        (
            vec!["mount".into(), t.into(), host.options("v", "block", &[("kubernetes.io/readwrite", "rx")])],
            "neither ro nor rw",
        ),
    ];
    for (args, wanted) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (reply, code) = host.flex(&args);
        assert_eq!(status(&reply), "Failure", "{args:?}: {reply}");
        assert!(
            reply["message"].as_str().unwrap().contains(wanted),
            "{args:?}: {reply} should mention {wanted:?}"
        );
        assert_eq!(code, 1);
    }
    assert!(!target.exists(), "a refused mount must not even create the mount dir");
}

#[test]
fn a_block_volume_mounts_formats_once_and_unmounts_without_leftovers() {
    if !require_root() {
        return;
    }
    let host = Host::new();
    host.create_volume("vol-1", "block");
    let dir = host.path("pods/a/vol-1");
    let d = dir.to_str().unwrap();
    let options = host.options("vol-1", "block", &[]);
    let (reply, code) = host.flex(&["mount", d, &options]);
    assert_eq!((status(&reply), code), ("Success", 0), "{reply}");
    assert_eq!(host.loops(), 1, "one loop device backs the image");
    std::fs::write(dir.join("hello.txt"), "from flex").unwrap();

    let (reply, _) = host.flex(&["mount", d, &options]);
    assert_eq!(status(&reply), "Success", "mount again is idempotent: {reply}");
    assert_eq!((host.mounts(), host.loops()), (1, 1), "and mounts nothing twice");

    for _ in 0..2 {
        let (reply, code) = host.flex(&["unmount", d]);
        assert_eq!((status(&reply), code), ("Success", 0), "unmount (twice): {reply}");
    }
    assert_eq!((host.mounts(), host.loops()), (0, 0), "nothing mounted or attached after unmount");

    let (reply, _) = host.flex(&["mount", d, &options]);
    assert_eq!(status(&reply), "Success", "{reply}");
    assert_eq!(std::fs::read_to_string(dir.join("hello.txt")).unwrap(), "from flex", "never reformat");
    host.flex(&["unmount", d]);
}

#[test]
fn a_file_volume_is_a_bind_mount_of_the_data_directory() {
    if !require_root() {
        return;
    }
    let host = Host::new();
    host.create_volume("share", "file");
    let dir = host.path("pods/a/share");
    let d = dir.to_str().unwrap();
    let (reply, code) = host.flex(&["mount", d, &host.options("share", "file", &[])]);
    assert_eq!((status(&reply), code), ("Success", 0), "{reply}");
    std::fs::write(dir.join("f.txt"), "shared").unwrap();
    assert_eq!(std::fs::read_to_string(host.backend().join("volumes/share/data/f.txt")).unwrap(), "shared");
    assert_eq!(host.loops(), 0, "file volumes need no loop device");
    let (reply, _) = host.flex(&["unmount", d]);
    assert_eq!(status(&reply), "Success", "{reply}");
    assert_eq!(host.mounts(), 0);
}

#[test]
fn a_read_only_mount_refuses_writes() {
    if !require_root() {
        return;
    }
    let host = Host::new();
    host.create_volume("vol-ro", "block");
    let dir = host.path("pods/a/vol-ro");
    let d = dir.to_str().unwrap();
    // Formatted once read-write, then mounted read-only.
    host.flex(&["mount", d, &host.options("vol-ro", "block", &[])]);
    host.flex(&["unmount", d]);
    let (reply, _) =
        host.flex(&["mount", d, &host.options("vol-ro", "block", &[("kubernetes.io/readwrite", "ro")])]);
    assert_eq!(status(&reply), "Success", "{reply}");
    assert!(std::fs::write(dir.join("x"), "x").is_err(), "a ro mount must refuse writes");
    host.flex(&["unmount", d]);
    assert_eq!((host.mounts(), host.loops()), (0, 0));
}

#[test]
fn a_failed_mount_leaves_no_mount_and_no_loop_device() {
    if !require_root() {
        return;
    }
    let host = Host::new();
    host.create_volume("vol-x", "block");
    let dir = host.path("pods/a/vol-x");
    let d = dir.to_str().unwrap();
    host.flex(&["mount", d, &host.options("vol-x", "block", &[])]);
    host.flex(&["unmount", d]);
    // ext4 on the image, xfs asked: refused, never reformatted.
    let (reply, code) =
        host.flex(&["mount", d, &host.options("vol-x", "block", &[("kubernetes.io/fsType", "xfs")])]);
    assert_eq!((status(&reply), code), ("Failure", 1), "{reply}");
    assert_eq!((host.mounts(), host.loops()), (0, 0), "a failed mount must undo its loop device");
    // The record is gone too: unmount has nothing to do.
    let (reply, _) = host.flex(&["unmount", d]);
    assert!(reply["message"].as_str().unwrap().contains("was not mounted"), "{reply}");
    // The wrong type for the volume: refused before anything happens.
    let (reply, _) = host.flex(&["mount", d, &host.options("vol-x", "file", &[])]);
    assert!(reply["message"].as_str().unwrap().contains("is a block volume"), "{reply}");
    assert_eq!((host.mounts(), host.loops()), (0, 0));
}
