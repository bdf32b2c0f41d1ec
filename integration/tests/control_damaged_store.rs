//! A damaged datastore document, as the fault probe left one (`echo 'not json' >
//! <store>/Node/b.json`), never stops unrelated work: a control restarted meanwhile syncs
//! its dataplane, pools can still be applied and deleted, CNI DEL of a pod works, and
//! `tapwirectl` shows the readable documents, warns about the damaged one (its file and
//! how to repair it), and repairs it with `delete` or an `apply` over it. The store
//! itself is root's alone (0700).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::os::unix::fs::PermissionsExt;

use tapwire_integration::check::{assert_nothing_recorded, assert_pings};
use tapwire_integration::controlplane::ippool_yaml;
use tapwire_integration::{skip_unless_root, ControlPlane, Lab};

#[test]
fn a_damaged_document_is_reported_skipped_and_repairable() {
    if skip_unless_root("a_damaged_document_is_reported_skipped_and_repairable") {
        return;
    }
    let lab = Lab::new().unwrap();
    let (cp, [a, c]) = ControlPlane::two_nodes_two_pods(&lab).unwrap();
    let store = cp.datastore_dir().unwrap().to_path_buf();
    let mode = std::fs::metadata(&store).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "the store is root's alone");

    let damaged = store.join("Node/b.json");
    std::fs::write(&damaged, "not json\n").unwrap();

    // A control restarted meanwhile comes up and syncs its dataplane (restart_control
    // waits for "in sync"), and says what it skipped.
    cp.restart_control("node1").unwrap();
    assert_pings(&a, &c, 2);
    let log = cp.control_log("node1").unwrap();
    assert!(
        log.contains(&damaged.display().to_string()),
        "the control's log does not name the damaged file: {log}"
    );

    // tapwirectl: the readable nodes, and a warning naming the file and the repair.
    let ctl = cp.ctl("node1").unwrap();
    let out = ctl.run(&["get", "nodes"]).unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        out.stdout.contains("node1") && out.stdout.contains("node2"),
        "{out:?}"
    );
    assert!(
        out.stderr.contains("Node \"b\" is damaged")
            && out.stderr.contains(&damaged.display().to_string())
            && out.stderr.contains("tapwirectl delete node b"),
        "{out:?}"
    );
    let out = ctl.run(&["get", "node", "b"]).unwrap();
    assert!(!out.status.success(), "{out:?}");
    assert!(
        out.stderr.contains(&damaged.display().to_string())
            && out.stderr.contains("tapwirectl delete node b"),
        "{out:?}"
    );

    // Pools can still be applied and deleted.
    let extra = ippool_yaml("extra", "10.70.0.0/16", 26, "Never", "Never");
    ctl.apply(&extra).unwrap().success().unwrap();
    ctl.ok(&["delete", "ippool", "extra"]).unwrap();

    // CNI DEL of a pod works.
    let container = cp.cni_pod("pod-a").unwrap().args.container_id.clone();
    let run = cp.del_pod("pod-a").unwrap();
    assert!(run.succeeded(), "DEL: {:?}", run.output);
    assert_nothing_recorded(&cp, &container);

    // Repair: delete it; or apply a good document over a damaged one.
    ctl.ok(&["delete", "node", "b"]).unwrap();
    assert!(!damaged.exists());
    let damaged_pool = store.join("IPPool/broken.json");
    std::fs::write(&damaged_pool, "{").unwrap();
    let out = ctl.run(&["get", "ippools"]).unwrap();
    assert!(
        out.stderr.contains("IPPool \"broken\" is damaged"),
        "{out:?}"
    );
    let good = ippool_yaml("broken", "10.71.0.0/16", 26, "Never", "Never");
    ctl.apply(&good).unwrap().success().unwrap();
    let out = ctl.run(&["get", "ippools"]).unwrap();
    assert!(out.status.success() && out.stderr.is_empty(), "{out:?}");
    assert!(out.stdout.contains("10.71.0.0/16"), "{out:?}");
    cp.check_running().unwrap();
}
