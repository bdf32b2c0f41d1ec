//! The datastore as its users see it: compare-and-swap semantics (the same for the file
//! and the memory store), the file store's on-disk layout, sharing one directory between
//! several store instances (what several processes do), change notification within a
//! second, and what happens with corrupt or left-over files.
// clippy.toml allows unwrap/expect in #[test] fns; the helpers here are test code too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;
use tapwire_control::datastore::{
    self, Datastore, DatastoreError, DatastoreExt, FileStore, MemStore, Watcher,
};
use tapwire_control::model::{
    parse_documents, BgpConfiguration, BgpPeer, DatastoreConfig, Document, EncapMode, EtcdConfig,
    IpPool, Node,
};

mod common;
mod etcd_server;
use etcd_server::EtcdServer;

fn pool(name: &str, cidr: &str) -> IpPool {
    IpPool::new(name, cidr.parse().unwrap())
}

/// The contract every backend keeps. Revisions count from the store's revision at the
/// start (0 for a new file store; etcd starts at 1).
fn crud_semantics(store: &dyn Datastore) {
    let base = store.revision().unwrap();
    assert!(store.get("IPPool", "a").unwrap().is_none());
    assert!(store.list("IPPool").unwrap().items.is_empty());

    let created = store
        .create("IPPool", "a", json!({"spec": {"cidr": "10.1.0.0/16"}}))
        .unwrap();
    assert_eq!(created.revision, base + 1);
    assert_eq!(created.value["metadata"]["name"], "a");
    assert_eq!(
        created.value["metadata"]["resourceVersion"],
        (base + 1).to_string()
    );
    assert_eq!(store.revision().unwrap(), base + 1);

    let err = store.create("IPPool", "a", json!({})).unwrap_err();
    assert!(matches!(err, DatastoreError::AlreadyExists { .. }), "{err}");
    assert_eq!(err.to_string(), "IPPool \"a\" already exists");
    assert_eq!(
        store.revision().unwrap(),
        base + 1,
        "a failed create changes nothing"
    );

    store.create("IPPool", "b", json!({})).unwrap();
    store.create("Node", "a", json!({})).unwrap();
    let names: Vec<_> = store
        .list("IPPool")
        .unwrap()
        .items
        .into_iter()
        .map(|o| o.name)
        .collect();
    assert_eq!(names, ["a", "b"], "list is per kind, sorted by name");

    // Compare-and-swap.
    let updated = store
        .update(
            "IPPool",
            "a",
            json!({"spec": {"cidr": "10.2.0.0/16"}}),
            base + 1,
        )
        .unwrap();
    assert_eq!(updated.revision, base + 4);
    let err = store
        .update(
            "IPPool",
            "a",
            json!({"spec": {"cidr": "10.3.0.0/16"}}),
            base + 1,
        )
        .unwrap_err();
    match &err {
        DatastoreError::Conflict {
            expected, found, ..
        } => assert_eq!((*expected, *found), (base + 1, base + 4)),
        other => panic!("expected a conflict, got {other}"),
    }
    assert!(err.to_string().contains("changed by someone else"), "{err}");
    let current = store.get("IPPool", "a").unwrap().unwrap();
    assert_eq!(
        current.value["spec"]["cidr"], "10.2.0.0/16",
        "the loser wrote nothing"
    );
    assert_eq!(current.revision, base + 4);
    let err = store.update("IPPool", "zz", json!({}), 1).unwrap_err();
    assert!(matches!(err, DatastoreError::NotFound { .. }), "{err}");
    // Not even with revision 0 (what etcd reports for a key that does not exist).
    let err = store.update("IPPool", "zz", json!({}), 0).unwrap_err();
    assert!(matches!(err, DatastoreError::NotFound { .. }), "{err}");

    let err = store.delete("IPPool", "a", Some(base + 1)).unwrap_err();
    assert!(matches!(err, DatastoreError::Conflict { .. }), "{err}");
    store.delete("IPPool", "a", Some(base + 4)).unwrap();
    assert!(store.get("IPPool", "a").unwrap().is_none());
    let err = store.delete("IPPool", "a", None).unwrap_err();
    assert!(matches!(err, DatastoreError::NotFound { .. }), "{err}");
    let err = store.delete("IPPool", "zz", Some(0)).unwrap_err();
    assert!(matches!(err, DatastoreError::NotFound { .. }), "{err}");
    store.delete("IPPool", "b", None).unwrap();
    assert_eq!(store.revision().unwrap(), base + 6);

    // Keys that could escape the store are refused before anything happens.
    for name in ["../x", "a/b", "..", ".lock", ""] {
        let err = store.create("IPPool", name, json!({})).unwrap_err();
        assert!(
            matches!(err, DatastoreError::InvalidKey { .. }),
            "{name:?}: {err}"
        );
    }
    let err = store.create("../IPPool", "x", json!({})).unwrap_err();
    assert!(matches!(err, DatastoreError::InvalidKey { .. }), "{err}");
    let err = store
        .create("IPPool", "x", json!({"metadata": {"name": "y"}}))
        .unwrap_err();
    assert!(err.to_string().contains("does not match the key"), "{err}");
    let err = store.create("IPPool", "x", json!("text")).unwrap_err();
    assert!(err.to_string().contains("must be a JSON object"), "{err}");
    assert_eq!(
        store.revision().unwrap(),
        base + 6,
        "refused writes change nothing"
    );
}

/// Typed documents through [`DatastoreExt`].
fn typed_semantics(store: &dyn Datastore) {
    let created = store.create_as(&pool("p", "10.65.0.0/16")).unwrap();
    let rev = created.metadata.revision().unwrap();
    let mut read: IpPool = store.get_as("p").unwrap().unwrap();
    assert_eq!(read, created);
    read.spec.vxlan_mode = EncapMode::Always;
    let stored = store.update_as(&read).unwrap();
    assert!(stored.metadata.revision().unwrap() > rev);
    // The old copy is stale now.
    let err = store.update_as(&created).unwrap_err();
    assert!(matches!(err, DatastoreError::Conflict { .. }), "{err}");
    // An update must say which revision it read.
    let err = store.update_as(&pool("p", "10.65.0.0/16")).unwrap_err();
    assert!(
        matches!(err, DatastoreError::MissingRevision { .. }),
        "{err}"
    );
    // apply: create or replace, as calicoctl apply.
    let applied = store.apply_as(&pool("p", "10.65.0.0/16")).unwrap();
    assert_eq!(applied.spec.vxlan_mode, EncapMode::Never);
    store.apply_as(&pool("q", "10.66.0.0/16")).unwrap();
    let names: Vec<_> = store
        .list_as::<IpPool>()
        .unwrap()
        .items
        .into_iter()
        .map(|p| p.metadata.name)
        .collect();
    assert_eq!(names, ["p", "q"]);
    store.delete_as::<IpPool>("q", None).unwrap();
    assert!(store.get_as::<IpPool>("q").unwrap().is_none());
    // A stored document of the wrong shape is reported by name, and the others still
    // list; reading it by name is an error naming it; applying over it replaces it.
    store
        .apply_as(&Node::new("good", "192.168.0.1/24".parse().unwrap()))
        .unwrap();
    store
        .create("Node", "odd", json!({"apiVersion": "projectcalico.org/v3", "kind": "Node", "spec": {"colour": "red"}}))
        .unwrap();
    let nodes = store.list_as::<Node>().unwrap();
    let names: Vec<_> = nodes
        .items
        .iter()
        .map(|n| n.metadata.name.as_str())
        .collect();
    assert_eq!(names, ["good"]);
    assert_eq!(nodes.damaged.len(), 1);
    assert_eq!(
        (
            nodes.damaged[0].kind.as_str(),
            nodes.damaged[0].name.as_str()
        ),
        ("Node", "odd")
    );
    let msg = &nodes.damaged[0].reason;
    assert!(msg.contains("stored Node \"odd\" is unreadable"), "{msg}");
    assert!(msg.contains("unknown field `colour`"), "{msg}");
    let err = store.get_as::<Node>("odd").unwrap_err();
    assert!(
        err.is_damage() && err.to_string().contains("colour"),
        "{err}"
    );
    store
        .apply_as(&Node::new("odd", "192.168.0.2/24".parse().unwrap()))
        .unwrap();
    let nodes = store.list_as::<Node>().unwrap();
    assert_eq!((nodes.items.len(), nodes.damaged.len()), (2, 0));
}

/// BGPPeer and BGPConfiguration documents as `tapwirectl apply` writes them: stored, listed,
/// read back as they were written, replaced and deleted; one peer is left behind.
fn bgp_documents_round_trip(store: &dyn Datastore) {
    let docs = parse_documents(common::BGP_DOCUMENTS).unwrap();
    for doc in &docs {
        match doc {
            Document::BgpConfiguration(c) => drop(store.apply_as(c).unwrap()),
            Document::BgpPeer(p) => drop(store.apply_as(p).unwrap()),
            other => panic!("unexpected {other:?}"),
        }
    }
    let config = store
        .get_as::<BgpConfiguration>("default")
        .unwrap()
        .unwrap();
    assert!(!config.mesh_enabled());
    assert_eq!(config.as_number(), 63400);
    let peers = store.list_as::<BgpPeer>().unwrap();
    let names: Vec<_> = peers
        .items
        .iter()
        .map(|p| p.metadata.name.as_str())
        .collect();
    assert_eq!(names, ["core", "peer-with-route-reflectors", "rack1-tor"]);
    assert!(peers.damaged.is_empty());
    let mut tor = peers.items[2].clone();
    assert_eq!(tor.spec.as_number, Some(64513));
    tor.spec.as_number = Some(64514);
    store.update_as(&tor).unwrap();
    assert_eq!(
        store
            .get_as::<BgpPeer>("rack1-tor")
            .unwrap()
            .unwrap()
            .spec
            .as_number,
        Some(64514)
    );
    store.delete_as::<BgpPeer>("rack1-tor", None).unwrap();
    store.delete_as::<BgpPeer>("core", None).unwrap();
    store
        .delete_as::<BgpConfiguration>("default", None)
        .unwrap();
    assert_eq!(store.list_as::<BgpPeer>().unwrap().items.len(), 1);
    assert!(store
        .get_as::<BgpConfiguration>("default")
        .unwrap()
        .is_none());
}

#[test]
fn mem_store_keeps_the_contract() {
    crud_semantics(&MemStore::new());
    typed_semantics(&MemStore::new());
    bgp_documents_round_trip(&MemStore::new());
}

#[test]
fn file_store_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    crud_semantics(&FileStore::open(dir.path().join("crud")).unwrap());
    typed_semantics(&FileStore::open(dir.path().join("typed")).unwrap());
    bgp_documents_round_trip(&FileStore::open(dir.path().join("bgp")).unwrap());
    assert!(dir
        .path()
        .join("bgp/BGPPeer/peer-with-route-reflectors.json")
        .is_file());
    // Nothing was written outside the store directories.
    let mut entries: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    entries.sort();
    assert_eq!(entries, ["bgp", "crud", "typed"]);
}

fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        if entry.file_type().unwrap().is_dir() {
            for inner in files_under(&entry.path()) {
                out.push(format!("{name}/{inner}"));
            }
        } else {
            out.push(name);
        }
    }
    out.sort();
    out
}

#[test]
fn file_store_layout_is_one_json_document_per_object() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    store
        .create_as(&pool("default-ipv4-ippool", "10.65.0.0/16"))
        .unwrap();
    assert_eq!(
        files_under(dir.path()),
        [".lock", ".revision", "IPPool/default-ipv4-ippool.json"],
        "no temporary files are left behind"
    );
    let text = fs::read_to_string(dir.path().join("IPPool/default-ipv4-ippool.json")).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["apiVersion"], "projectcalico.org/v3");
    assert_eq!(doc["kind"], "IPPool");
    assert_eq!(doc["metadata"]["name"], "default-ipv4-ippool");
    assert_eq!(doc["metadata"]["resourceVersion"], "1");
    assert_eq!(doc["spec"]["cidr"], "10.65.0.0/16");
    assert_eq!(
        fs::read_to_string(dir.path().join(".revision")).unwrap(),
        "1\n"
    );
}

#[test]
fn corrupt_files_are_reported_with_their_path() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    store.create_as(&pool("good", "10.65.0.0/16")).unwrap();
    let bad = dir.path().join("IPPool/bad.json");
    fs::write(&bad, b"{\"metadata\": {\"name\": \"bad\", \"resourceV").unwrap();

    let err = store.get("IPPool", "bad").unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&bad.display().to_string()), "{msg}");
    assert!(msg.starts_with("corrupt datastore file"), "{msg}");
    assert!(err.is_damage(), "{err}");
    // A listing skips it and reports it with the file, the good one still lists.
    let listing = store.list("IPPool").unwrap();
    let names: Vec<_> = listing.items.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["good"]);
    assert_eq!(listing.damaged.len(), 1, "{listing:?}");
    assert_eq!(listing.damaged[0].name, "bad");
    assert!(
        listing.damaged[0]
            .reason
            .contains(&bad.display().to_string()),
        "{listing:?}"
    );
    let typed = store.list_as::<IpPool>().unwrap();
    assert_eq!((typed.items.len(), typed.damaged.len()), (1, 1));
    // Still usable: the good object reads, and an unconditional delete clears the bad one.
    assert!(store.get("IPPool", "good").unwrap().is_some());
    store.delete("IPPool", "bad", None).unwrap();
    assert_eq!(store.list("IPPool").unwrap().items.len(), 1);
    // Applying a good document over a corrupt file replaces it.
    fs::write(&bad, b"not json").unwrap();
    store.apply_as(&pool("bad", "10.66.0.0/16")).unwrap();
    let listing = store.list_as::<IpPool>().unwrap();
    assert_eq!((listing.items.len(), listing.damaged.len()), (2, 0));

    fs::write(dir.path().join("IPPool/norev.json"), b"{\"metadata\": {}}").unwrap();
    let err = store.get("IPPool", "norev").unwrap_err();
    assert!(err.to_string().contains("resourceVersion"), "{err}");

    fs::write(dir.path().join(".revision"), b"many\n").unwrap();
    let err = store.revision().unwrap_err();
    assert!(err.to_string().contains(".revision"), "{err}");
    let err = store.create_as(&pool("other", "10.66.0.0/16")).unwrap_err();
    assert!(matches!(err, DatastoreError::Corrupt { .. }), "{err}");
}

#[test]
fn leftovers_of_a_crashed_writer_are_ignored_and_cleaned() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = FileStore::open(dir.path()).unwrap();
        store.create_as(&pool("p", "10.65.0.0/16")).unwrap();
    }
    // A writer died after writing its temporary file but before the rename.
    let temp = dir.path().join("IPPool/.p.json.tmp");
    fs::write(&temp, b"{\"half\": ").unwrap();
    let reader = FileStore::open(dir.path()).unwrap();
    assert!(!temp.exists(), "open removes temporary files");
    let p: IpPool = reader.get_as("p").unwrap().unwrap();
    assert_eq!(
        p.spec.cidr.to_string(),
        "10.65.0.0/16",
        "the old version is intact"
    );

    // Revisions never go backwards, even if the revision file is lost.
    fs::remove_file(dir.path().join(".revision")).unwrap();
    let next = reader.create_as(&pool("q", "10.66.0.0/16")).unwrap();
    assert_eq!(next.metadata.revision(), Some(2));
}

#[test]
fn two_store_instances_on_one_directory_see_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let a = FileStore::open(dir.path()).unwrap();
    let b = FileStore::open(dir.path()).unwrap();
    let created = a.create_as(&pool("p", "10.65.0.0/16")).unwrap();
    let seen: IpPool = b.get_as("p").unwrap().unwrap();
    assert_eq!(seen, created);
    let err = b.create_as(&pool("p", "10.9.0.0/16")).unwrap_err();
    assert!(matches!(err, DatastoreError::AlreadyExists { .. }), "{err}");
    b.update_as(&seen).unwrap();
    let err = a.update_as(&created).unwrap_err();
    assert!(matches!(err, DatastoreError::Conflict { .. }), "{err}");
}

#[test]
fn a_change_by_another_instance_reaches_a_watcher_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let watcher_store = FileStore::open(dir.path()).unwrap();
    let mut watcher = Watcher::new(&watcher_store).unwrap();
    assert_eq!(watcher.poll(&watcher_store).unwrap(), None);

    let path = dir.path().to_path_buf();
    let writer = thread::spawn(move || {
        thread::sleep(Duration::from_millis(200));
        let store = FileStore::open(path).unwrap();
        store.create_as(&pool("p", "10.65.0.0/16")).unwrap();
        Instant::now()
    });
    let seen = watcher
        .wait(&watcher_store, Duration::from_secs(5))
        .unwrap()
        .expect("the change was seen");
    let noticed = Instant::now();
    let written = writer.join().unwrap();
    let delay = noticed.saturating_duration_since(written);
    assert!(delay < Duration::from_secs(1), "noticed after {delay:?}");
    assert_eq!(seen, 1);
    assert_eq!(watcher.seen(), 1);
    // Nothing more happened.
    let start = Instant::now();
    assert_eq!(
        watcher
            .wait(&watcher_store, Duration::from_millis(300))
            .unwrap(),
        None
    );
    assert!(start.elapsed() >= Duration::from_millis(300));
}

/// Four writers, each with its own store instance (as separate processes or nodes
/// have), increment one counter by compare-and-swap: every increment lands.
fn concurrent_increments_lose_no_update(open: impl Fn() -> Box<dyn Datastore>) {
    const THREADS: usize = 4;
    const INCREMENTS: u64 = 25;
    open().create("Counter", "c", json!({"value": 0})).unwrap();
    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            let store = open();
            thread::spawn(move || {
                let mut conflicts = 0;
                for _ in 0..INCREMENTS {
                    loop {
                        let current = store.get("Counter", "c").unwrap().unwrap();
                        let value = current.value["value"].as_u64().unwrap();
                        match store.update(
                            "Counter",
                            "c",
                            json!({"value": value + 1}),
                            current.revision,
                        ) {
                            Ok(_) => break,
                            Err(DatastoreError::Conflict { .. }) => conflicts += 1,
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
                conflicts
            })
        })
        .collect();
    let conflicts: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    let counter = open().get("Counter", "c").unwrap().unwrap();
    assert_eq!(counter.value["value"], THREADS as u64 * INCREMENTS);
    eprintln!("{conflicts} conflicts were retried");
}

#[test]
fn concurrent_compare_and_swap_from_many_instances_loses_no_update() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    concurrent_increments_lose_no_update(|| Box::new(FileStore::open(&path).unwrap()));
}

#[test]
fn concurrent_compare_and_swap_from_many_etcd_clients_loses_no_update() {
    let Some(etcd) = EtcdServer::start("concurrent_compare_and_swap_from_many_etcd_clients") else {
        return;
    };
    concurrent_increments_lose_no_update(|| Box::new(etcd.store()));
}

#[test]
fn readers_never_see_a_torn_document() {
    let dir = tempfile::tempdir().unwrap();
    let writer_store = FileStore::open(dir.path()).unwrap();
    // A document large enough that a non-atomic write would be observed half-done.
    let big = |i: u64| json!({"spec": {"i": i, "pad": "x".repeat(256 * 1024)}});
    writer_store.create("Blob", "b", big(0)).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let stop = Arc::clone(&stop);
        let path = dir.path().to_path_buf();
        thread::spawn(move || {
            let store = FileStore::open(&path).unwrap();
            let file = path.join("Blob/b.json");
            let mut reads = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let obj = store.get("Blob", "b").unwrap().unwrap();
                assert_eq!(obj.value["spec"]["pad"].as_str().unwrap().len(), 256 * 1024);
                // Without the lock too (as `cat` would, or a reader after a crash): the
                // file is only ever replaced whole.
                let raw: serde_json::Value =
                    serde_json::from_slice(&fs::read(&file).unwrap()).expect("a whole document");
                assert_eq!(raw["spec"]["pad"].as_str().unwrap().len(), 256 * 1024);
                reads += 1;
            }
            reads
        })
    };
    for i in 1..=30 {
        let current = writer_store.get("Blob", "b").unwrap().unwrap();
        writer_store
            .update("Blob", "b", big(i), current.revision)
            .unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let reads = reader.join().unwrap();
    assert!(reads > 0);
}

#[test]
fn opening_from_the_node_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let store = datastore::open(&DatastoreConfig::File {
        path: dir.path().join("store"),
    })
    .unwrap();
    store.create_as(&pool("p", "10.65.0.0/16")).unwrap();
    assert!(dir.path().join("store/IPPool/p.json").exists());
    // etcd: the configuration is checked again when the store opens (naming the key).
    let err = datastore::open(&DatastoreConfig::Etcd(EtcdConfig::plain([
        "127.0.0.1:2379",
    ])))
    .unwrap_err();
    assert!(
        err.to_string().starts_with("datastore.endpoints: "),
        "{err}"
    );
}

#[test]
fn etcd_store_keeps_the_contract() {
    let Some(etcd) = EtcdServer::start("etcd_store_keeps_the_contract") else {
        return;
    };
    let store = datastore::open(&DatastoreConfig::Etcd(etcd.config())).unwrap();
    crud_semantics(store.as_ref());
    // The typed contract on an empty prefix: delete what the first part left.
    etcd.etcdctl(&["del", "--prefix", "/calico/"]);
    typed_semantics(store.as_ref());
    bgp_documents_round_trip(store.as_ref());
    // Calico's keys: what is left is the peer under bgppeers/.
    let keys = etcd.etcdctl(&[
        "get",
        "--prefix",
        "/calico/resources/v3/projectcalico.org/bgp",
        "--keys-only",
    ]);
    assert_eq!(
        keys.split_whitespace().collect::<Vec<_>>(),
        ["/calico/resources/v3/projectcalico.org/bgppeers/peer-with-route-reflectors"]
    );
}

#[test]
fn a_corrupt_document_is_skipped_and_reported_by_the_cluster_state() {
    use tapwire_control::routes::{desired_state, LocalNode};
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    store
        .create_as(&Node::new("a", "192.168.0.1/24".parse().unwrap()))
        .unwrap();
    store
        .create_as(&Node::new("b", "192.168.0.2/24".parse().unwrap()))
        .unwrap();
    store.create_as(&pool("p", "10.65.0.0/16")).unwrap();
    let bad = dir.path().join("Node/b.json");
    fs::write(&bad, b"not json\n").unwrap();

    let state = datastore::read_cluster_state(&store).unwrap();
    let names: Vec<_> = state
        .nodes
        .iter()
        .map(|n| n.metadata.name.as_str())
        .collect();
    assert_eq!(names, ["a"]);
    assert_eq!(state.pools.len(), 1);
    assert_eq!(state.unreadable.len(), 1, "{:?}", state.unreadable);
    let report = &state.unreadable[0];
    assert!(
        report.contains("Node \"b\"") && report.contains(&bad.display().to_string()),
        "{report}"
    );
    let desired = desired_state(
        &state,
        &LocalNode {
            name: "a".into(),
            underlay_mtu_bytes: 1500,
        },
    )
    .unwrap();
    assert!(desired.skipped.contains(report), "{:?}", desired.skipped);
    // Deleting it repairs the store.
    store.delete("Node", "b", None).unwrap();
    assert!(datastore::read_cluster_state(&store)
        .unwrap()
        .unreadable
        .is_empty());
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn the_store_is_root_only_and_an_old_store_is_tightened_on_open() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let store = FileStore::open(&root).unwrap();
    store.create_as(&pool("p", "10.65.0.0/16")).unwrap();
    assert_eq!(mode(&root), 0o700);
    assert_eq!(mode(&root.join("IPPool")), 0o700);
    for file in [".lock", ".revision", "IPPool/p.json"] {
        assert_eq!(mode(&root.join(file)), 0o600, "{file}");
    }
    // A store written before: world-readable directories and files.
    let old = fs::Permissions::from_mode;
    fs::set_permissions(&root, old(0o755)).unwrap();
    fs::set_permissions(root.join("IPPool"), old(0o755)).unwrap();
    for file in [".lock", ".revision", "IPPool/p.json"] {
        fs::set_permissions(root.join(file), old(0o644)).unwrap();
    }
    let store = FileStore::open(&root).unwrap();
    assert_eq!(mode(&root), 0o700);
    assert_eq!(mode(&root.join("IPPool")), 0o700);
    for file in [".lock", ".revision", "IPPool/p.json"] {
        assert_eq!(mode(&root.join(file)), 0o600, "{file}");
    }
    assert!(store.get_as::<IpPool>("p").unwrap().is_some());

    // Opened while another process holds the lock: open does not wait, and the first
    // write tightens the store instead.
    fs::set_permissions(&root, old(0o755)).unwrap();
    fs::set_permissions(root.join("IPPool/p.json"), old(0o644)).unwrap();
    let holder = fs::File::open(root.join(".lock")).unwrap();
    rustix::fs::flock(&holder, rustix::fs::FlockOperation::LockShared).unwrap();
    let started = Instant::now();
    let store = FileStore::open(&root).unwrap();
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_eq!(mode(&root), 0o755);
    drop(holder);
    store.create_as(&pool("q", "10.66.0.0/16")).unwrap();
    assert_eq!(mode(&root), 0o700);
    assert_eq!(mode(&root.join("IPPool/p.json")), 0o600);
}

#[test]
fn a_lock_held_elsewhere_fails_operations_within_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path())
        .unwrap()
        .with_lock_timeout(Duration::from_millis(300));
    store.create_as(&pool("p", "10.65.0.0/16")).unwrap();
    // Another process (here: another descriptor, read-only as an unprivileged user
    // could open it) holds the lock.
    let lock_path = dir.path().join(".lock");
    let holder = fs::File::open(&lock_path).unwrap();
    rustix::fs::flock(&holder, rustix::fs::FlockOperation::LockExclusive).unwrap();
    for op in ["get", "list", "create"] {
        let started = Instant::now();
        let result = match op {
            "get" => store.get("IPPool", "p").map(|_| ()),
            "list" => store.list("IPPool").map(|_| ()),
            _ => store.create("IPPool", "q", json!({})).map(|_| ()),
        };
        let waited = started.elapsed();
        let err = result.unwrap_err();
        assert!(matches!(err, DatastoreError::Locked { .. }), "{op}: {err}");
        let msg = err.to_string();
        assert!(
            msg.contains("locked by another process")
                && msg.contains(&lock_path.display().to_string()),
            "{msg}"
        );
        assert!(
            waited >= Duration::from_millis(300) && waited < Duration::from_secs(2),
            "{op}: {waited:?}"
        );
    }
    drop(holder);
    assert!(store.get("IPPool", "p").unwrap().is_some());
}

/// Runs `f` on a thread whose file-system user is `uid` (without root's file
/// permission override when `uid` is not 0); other threads keep theirs.
fn as_fs_user<T: Send>(uid: u32, f: impl FnOnce() -> T + Send) -> T {
    thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: setfsuid takes an integer and changes only this thread's file-system
                // user id (the raw syscall, not glibc's process-wide wrapper); the thread
                // ends when `f` returns.
                unsafe { libc::syscall(libc::SYS_setfsuid, uid) };
                f()
            })
            .join()
            .unwrap()
    })
}

#[test]
fn a_read_only_store_can_be_read_and_refuses_writes_clearly() {
    use std::os::unix::fs::{chown, PermissionsExt};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let store = FileStore::open(&root).unwrap();
    store.create_as(&pool("p", "10.65.0.0/16")).unwrap();
    drop(store);
    // A copy its reader cannot write: read-only directories and files of the reader.
    // Who we are: the owner of what we just made.
    let me = std::os::unix::fs::MetadataExt::uid(&fs::metadata(&root).unwrap());
    let reader = if me == 0 { 65534 } else { me };
    for path in [
        root.join(".lock"),
        root.join(".revision"),
        root.join("IPPool/p.json"),
    ] {
        chown(&path, Some(reader), None).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
    }
    for path in [root.join("IPPool"), root.clone()] {
        chown(&path, Some(reader), None).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o500)).unwrap();
    }
    let (got, listed, err) = as_fs_user(reader, || {
        let store = FileStore::open(&root).unwrap();
        (
            store.get_as::<IpPool>("p").unwrap(),
            store.list("IPPool").unwrap().items.len(),
            store.create_as(&pool("q", "10.66.0.0/16")).unwrap_err(),
        )
    });
    assert!(got.is_some());
    assert_eq!(listed, 1);
    assert!(matches!(err, DatastoreError::ReadOnly { .. }), "{err}");
    assert!(err.to_string().contains("read-only"), "{err}");
    // Let the scratch directory be removed.
    fs::set_permissions(&root, fs::Permissions::from_mode(0o700)).unwrap();
    fs::set_permissions(root.join("IPPool"), fs::Permissions::from_mode(0o700)).unwrap();
}

#[test]
fn one_name_rule_for_validation_and_the_store() {
    use tapwire_control::model::MAX_NAME_BYTES;
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    // The longest valid name is stored (and rewritten, through its temporary file).
    let longest = pool(&"a".repeat(MAX_NAME_BYTES), "10.65.0.0/16");
    longest.validate().unwrap();
    let stored = store.create_as(&longest).unwrap();
    store.update_as(&stored).unwrap();
    // Longer (the probe's 253 bytes, which Kubernetes would allow) fails validation,
    // with the same limit the store applies.
    let long = pool(&"a".repeat(253), "10.66.0.0/16");
    let msg = long.validate().unwrap_err().to_string();
    assert!(msg.contains(&format!("at most {MAX_NAME_BYTES}")), "{msg}");
    let err = store.create_as(&long).unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("at most {MAX_NAME_BYTES}")),
        "{err}"
    );
}

#[test]
fn a_directory_that_is_not_a_store_is_left_alone() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("notes.txt"), b"mine").unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let err = FileStore::open(dir.path()).unwrap_err();
    assert!(matches!(err, DatastoreError::NotAStore { .. }), "{err}");
    assert!(err.to_string().contains("not a tapwire datastore"), "{err}");
    assert_eq!(mode(dir.path()), 0o755, "its permissions are untouched");
    assert!(!dir.path().join(".lock").exists());
}
