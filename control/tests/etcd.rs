//! The etcd datastore against a real etcd (Debian's `etcd-server`, started by each test on
//! loopback): Calico's key layout as `etcdctl` shows it, compare-and-swap between several
//! clients, damaged values, watches (wake-up, resume after etcd restarts, re-list after a
//! compaction), a dead etcd, mutual TLS, and configuration errors. The shared contract
//! runs in `datastore.rs`.
// clippy.toml allows unwrap/expect in #[test] fns; the helpers here are test code too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod etcd_server;

use std::collections::BTreeSet;
use std::thread;
use std::time::{Duration, Instant};

use etcd_server::EtcdServer;
use serde_json::{json, Value};
use tapwire_control::datastore::{
    self, Change, Datastore, DatastoreError, DatastoreExt, EtcdStore, ObjectChange, Watcher,
};
use tapwire_control::ipam::Ipam;
use tapwire_control::model::{
    BlockAffinity, DatastoreConfig, EtcdConfig, IpPool, IpamBlock, IpamHandle, Node, Resource,
};

macro_rules! etcd_or_skip {
    ($start:ident) => {
        match EtcdServer::$start(module_path!()) {
            Some(etcd) => etcd,
            None => return,
        }
    };
}

fn pool(name: &str, cidr: &str) -> IpPool {
    IpPool::new(name, cidr.parse().unwrap())
}

fn keys(etcd: &EtcdServer) -> Vec<String> {
    etcd.etcdctl(&["get", "--prefix", "/calico/", "--keys-only"])
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn documents_live_at_calicos_keys() {
    let etcd = etcd_or_skip!(start);
    let store = etcd.store();
    store
        .create_as(&pool("default-ipv4-ippool", "10.65.0.0/16"))
        .unwrap();
    store
        .create_as(&Node::new("node-a", "192.168.0.1/24".parse().unwrap()))
        .unwrap();
    // Two real allocations: blocks, affinities and handles as IPAM writes them.
    let ipam = Ipam::new(&store);
    let first = ipam.assign("node-a", "k8s-pod-network.c1").unwrap();
    ipam.assign("node-a", "k8s-pod-network.c2").unwrap();
    assert_eq!(first.to_string(), "10.65.0.0");
    store
        .create(
            "WorkloadEndpoint",
            "kube-system.node--a-k8s-dns-eth0",
            json!({"spec": {}}),
        )
        .unwrap();
    let expected: BTreeSet<String> = [
        "/calico/ipam/v2/assignment/ipv4/block/10.65.0.0-26",
        "/calico/ipam/v2/handle/k8s-pod-network.c1",
        "/calico/ipam/v2/handle/k8s-pod-network.c2",
        "/calico/ipam/v2/host/node-a/ipv4/block/10.65.0.0-26",
        "/calico/resources/v3/projectcalico.org/ippools/default-ipv4-ippool",
        "/calico/resources/v3/projectcalico.org/nodes/node-a",
        "/calico/resources/v3/projectcalico.org/workloadendpoints/kube-system/node--a-k8s-dns-eth0",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(keys(&etcd).into_iter().collect::<BTreeSet<_>>(), expected);

    // The value is the document, without a resourceVersion: the key's mod revision is it.
    let out = etcd.etcdctl(&[
        "get",
        "/calico/resources/v3/projectcalico.org/ippools/default-ipv4-ippool",
        "--print-value-only",
    ]);
    let stored: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(stored["kind"], "IPPool");
    assert_eq!(stored["metadata"]["name"], "default-ipv4-ippool");
    assert_eq!(stored["spec"]["cidr"], "10.65.0.0/16");
    assert!(
        stored["metadata"].get("resourceVersion").is_none(),
        "{stored}"
    );
    let out = etcd.etcdctl(&[
        "get",
        "/calico/resources/v3/projectcalico.org/ippools/default-ipv4-ippool",
        "-w",
        "json",
    ]);
    let described: Value = serde_json::from_str(&out).unwrap();
    let mod_revision = described["kvs"][0]["mod_revision"].as_u64().unwrap();
    let read: IpPool = store.get_as("default-ipv4-ippool").unwrap().unwrap();
    assert_eq!(read.metadata.revision(), Some(mod_revision));

    // Typed listings map the keys back to names.
    let blocks = store.list_as::<IpamBlock>().unwrap();
    assert_eq!(blocks.items[0].metadata.name, "10-65-0-0-26");
    assert_eq!(blocks.items[0].spec.allocations.len(), 2);
    let affinities = store.list_as::<BlockAffinity>().unwrap();
    assert_eq!(affinities.items[0].metadata.name, "node-a-10-65-0-0-26");
    let handles = store.list_as::<IpamHandle>().unwrap();
    assert_eq!(handles.items.len(), 2);
    assert_eq!(ipam.release("k8s-pod-network.c1").unwrap(), Some(first));
    // Calico keys tapwire has no kind for (an IPv6 affinity) are left out, not damaged.
    etcd.etcdctl(&[
        "put",
        "/calico/ipam/v2/host/node-a/ipv6/block/fd00::-122",
        "{}",
    ]);
    let affinities = store.list(BlockAffinity::KIND).unwrap();
    assert_eq!((affinities.items.len(), affinities.damaged.len()), (1, 0));
    // An IPAM block is named after its CIDR: anything else has no key.
    let err = store.create("IPAMBlock", "block-1", json!({})).unwrap_err();
    assert!(matches!(err, DatastoreError::InvalidKey { .. }), "{err}");
}

#[test]
fn compare_and_swap_between_clients() {
    let etcd = etcd_or_skip!(start);
    let a = etcd.store();
    let b = etcd.store();
    let created = a.create_as(&pool("p", "10.65.0.0/16")).unwrap();
    let seen: IpPool = b.get_as("p").unwrap().unwrap();
    assert_eq!(seen, created);
    let err = b.create_as(&pool("p", "10.9.0.0/16")).unwrap_err();
    assert!(matches!(err, DatastoreError::AlreadyExists { .. }), "{err}");
    let newer = b.update_as(&seen).unwrap();
    let err = a.update_as(&created).unwrap_err();
    match &err {
        DatastoreError::Conflict {
            expected, found, ..
        } => {
            assert_eq!(Some(*expected), created.metadata.revision());
            assert_eq!(Some(*found), newer.metadata.revision());
        }
        other => panic!("expected a conflict, got {other}"),
    }
    let err = a
        .delete_as::<IpPool>("p", created.metadata.revision())
        .unwrap_err();
    assert!(matches!(err, DatastoreError::Conflict { .. }), "{err}");
}

#[test]
fn damaged_values_are_reported_with_their_key_and_can_be_replaced() {
    let etcd = etcd_or_skip!(start);
    let store = etcd.store();
    store
        .create_as(&Node::new("good", "192.168.0.1/24".parse().unwrap()))
        .unwrap();
    let prefix = "/calico/resources/v3/projectcalico.org/nodes/";
    etcd.etcdctl(&["put", &format!("{prefix}torn"), "{\"metadata\": {\"na"]);
    etcd.etcdctl(&["put", &format!("{prefix}list"), "[1, 2]"]);
    etcd.etcdctl(&[
        "put",
        &format!("{prefix}renamed"),
        "{\"metadata\": {\"name\": \"other\"}}",
    ]);

    let listing = store.list("Node").unwrap();
    let names: Vec<_> = listing.items.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["good"]);
    let damaged: Vec<_> = listing.damaged.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(damaged, ["list", "renamed", "torn"]);
    for (d, why) in listing.damaged.iter().zip([
        "a document must be a JSON object",
        "does not match the key \"renamed\"",
        "not JSON",
    ]) {
        assert!(
            d.reason.starts_with(&format!(
                "corrupt datastore value at etcd key {prefix}{}: ",
                d.name
            )) && d.reason.contains(why),
            "{d}"
        );
    }
    let err = store.get("Node", "torn").unwrap_err();
    assert!(err.is_damage(), "{err}");
    assert!(err.to_string().contains(&format!("{prefix}torn")), "{err}");
    // Route computation skips them and says so.
    let state = datastore::read_cluster_state(&store).unwrap();
    assert_eq!(state.nodes.len(), 1);
    assert_eq!(state.unreadable.len(), 3, "{:?}", state.unreadable);
    // Applying a good document over a damaged one replaces it; deleting removes one.
    store
        .apply_as(&Node::new("torn", "192.168.0.2/24".parse().unwrap()))
        .unwrap();
    store.delete("Node", "list", None).unwrap();
    store.delete("Node", "renamed", None).unwrap();
    let nodes = store.list_as::<Node>().unwrap();
    assert_eq!((nodes.items.len(), nodes.damaged.len()), (2, 0));
}

#[test]
fn a_watch_wakes_on_a_change_from_another_client_and_resumes_where_it_was() {
    let etcd = etcd_or_skip!(start);
    let store = etcd.store();
    let mut watcher = Watcher::new(&store).unwrap();
    // Nothing changes: the wait lasts its time.
    let started = Instant::now();
    assert_eq!(
        watcher
            .wait_for_change(&store, Duration::from_millis(300))
            .unwrap(),
        None
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    // Keys outside /calico/ are not tapwire's.
    etcd.etcdctl(&["put", "/other/key", "x"]);
    assert_eq!(
        watcher
            .wait_for_change(&store, Duration::from_millis(300))
            .unwrap(),
        None
    );

    let writer = etcd.store();
    let handle = thread::spawn(move || {
        thread::sleep(Duration::from_millis(200));
        let written = writer.create_as(&pool("p", "10.65.0.0/16")).unwrap();
        (Instant::now(), written.metadata.revision().unwrap())
    });
    let change = watcher
        .wait_for_change(&store, Duration::from_secs(10))
        .unwrap()
        .expect("the change was seen");
    let noticed = Instant::now();
    let (written_at, revision) = handle.join().unwrap();
    let delay = noticed.saturating_duration_since(written_at);
    assert!(
        delay < Duration::from_millis(500),
        "noticed after {delay:?}"
    );
    // The watch says what changed: the pool as written.
    assert_eq!(
        told(&change),
        (revision, vec![format!("put IPPool p @{revision}")])
    );
    assert_eq!(watcher.seen(), revision);

    // Changes made while nobody waits are reported by the next wait at once: it starts
    // from the last revision seen.
    store.create_as(&pool("q", "10.66.0.0/16")).unwrap();
    let started = Instant::now();
    let rev = watcher.wait(&store, Duration::from_secs(10)).unwrap();
    assert!(rev.is_some());
    assert!(started.elapsed() < Duration::from_secs(1));

    // A value put there by hand that is no document is told as damaged; a Calico key
    // tapwire does not use wakes the watch with nothing to tell.
    etcd.etcdctl(&[
        "put",
        "/calico/resources/v3/projectcalico.org/nodes/by-hand",
        "not json",
    ]);
    etcd.etcdctl(&["put", "/calico/felix/v2/x", "y"]);
    let mut objects = Vec::new();
    while watcher.seen() < store.revision().unwrap() {
        let change = watcher
            .wait_for_change(&store, Duration::from_secs(10))
            .unwrap()
            .expect("both puts are seen");
        objects.extend(told(&change).1);
    }
    assert_eq!(objects, ["damaged Node by-hand"]);
}

#[test]
fn a_watch_rides_through_an_etcd_restart_without_losing_the_change() {
    let mut etcd = etcd_or_skip!(start);
    let store = etcd.store();
    store.create_as(&pool("p", "10.65.0.0/16")).unwrap();
    let mut watcher = Watcher::new(&store).unwrap();
    let waiting = thread::spawn(move || {
        // As the agent does: a wait that fails (etcd was down for longer than an
        // operation may take) is tried again from the same revision.
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut failures = Vec::new();
        while Instant::now() < deadline {
            match watcher.wait_for_change(&store, Duration::from_secs(20)) {
                Ok(change) => return (change, watcher.seen(), failures),
                Err(e) => failures.push(e.to_string()),
            }
        }
        panic!("no change seen: {failures:?}");
    });
    thread::sleep(Duration::from_millis(300));
    // The stream breaks; etcd comes back on the same port with the same data.
    let restarted = Instant::now();
    etcd.restart();
    eprintln!("etcd restarted in {:?}", restarted.elapsed());
    let written = etcd.store().create_as(&pool("q", "10.66.0.0/16")).unwrap();
    let (change, seen, failures) = waiting.join().unwrap();
    eprintln!("failed waits meanwhile: {failures:?}");
    let revision = written.metadata.revision().unwrap();
    assert_eq!(
        told(&change.unwrap()),
        (revision, vec![format!("put IPPool q @{revision}")])
    );
    assert_eq!(seen, revision);
}

#[test]
fn a_watch_from_a_compacted_revision_asks_for_a_relist() {
    let etcd = etcd_or_skip!(start);
    let store = etcd.store();
    let mut watcher = Watcher::new(&store).unwrap();
    for i in 0..5 {
        store
            .apply_as(&pool("p", &format!("10.{}.0.0/16", 65 + i)))
            .unwrap();
    }
    let now = store.revision().unwrap();
    etcd.etcdctl(&["compaction", &now.to_string()]);
    // The history the watcher needs is gone: everything may have changed.
    let change = watcher
        .wait_for_change(&store, Duration::from_secs(5))
        .unwrap();
    assert_eq!(change, Some(Change::Relist { revision: now }));
    assert_eq!(watcher.seen(), now);
    // From there on, changes are told again.
    store.delete("IPPool", "p", None).unwrap();
    let change = watcher
        .wait_for_change(&store, Duration::from_secs(5))
        .unwrap();
    assert_eq!(
        told(&change.unwrap()),
        (now + 1, vec![format!("deleted IPPool p @{}", now + 1)])
    );
}

/// Runs `op` and checks it fails within the bound with an error naming the endpoints.
fn fails_clearly<T: std::fmt::Debug>(
    what: &str,
    endpoints: &str,
    op: impl FnOnce() -> Result<T, DatastoreError>,
) {
    let started = Instant::now();
    let err = op().unwrap_err();
    let took = started.elapsed();
    let msg = err.to_string();
    assert!(
        match err {
            DatastoreError::Unreachable { .. } => {
                msg.starts_with(&format!(
                    "the datastore is unreachable: etcd at {endpoints}: "
                ))
            }
            // Reached, but refused (a TLS handshake it does not accept).
            DatastoreError::Etcd { .. } => msg.starts_with(&format!("etcd at {endpoints}: ")),
            _ => false,
        },
        "{what}: {msg}"
    );
    assert!(
        took < Duration::from_secs(5),
        "{what}: took {took:?}: {msg}"
    );
    eprintln!("{what}: {msg} ({took:?})");
}

#[test]
fn a_dead_etcd_is_a_clear_error_within_seconds() {
    let mut etcd = etcd_or_skip!(start);
    let store = etcd.store();
    store.create_as(&pool("p", "10.65.0.0/16")).unwrap();
    etcd.kill();
    let endpoints = etcd.endpoint();
    fails_clearly("get", &endpoints, || store.get("IPPool", "p"));
    fails_clearly("list", &endpoints, || store.list("IPPool"));
    fails_clearly("create", &endpoints, || {
        store.create("IPPool", "q", json!({}))
    });
    fails_clearly("revision", &endpoints, || store.revision());
    fails_clearly("watch", &endpoints, || {
        store.wait_for_change(0, Duration::from_secs(30))
    });
    // Nobody ever listened there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let nowhere = format!("http://127.0.0.1:{port}");
    let store = EtcdStore::open(&EtcdConfig::plain([nowhere.as_str()])).unwrap();
    fails_clearly("revision", &nowhere, || store.revision());
    // Something takes the connection and never answers: bounded all the same.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    let store = EtcdStore::open(&EtcdConfig::plain([silent_url.as_str()])).unwrap();
    fails_clearly("silent get", &silent_url, || store.get("IPPool", "p"));
    // The bound is the store's operation time (shorter here, to keep the test short).
    let store = store.with_op_timeout(Duration::from_secs(1));
    let started = Instant::now();
    fails_clearly("silent create", &silent_url, || {
        store.create("IPPool", "q", json!({}))
    });
    fails_clearly("silent watch", &silent_url, || {
        store.wait_for_change(0, Duration::from_secs(30))
    });
    assert!(started.elapsed() < Duration::from_millis(2500));
    drop(silent);
}

#[test]
fn the_client_fails_over_to_an_endpoint_that_answers() {
    let etcd = etcd_or_skip!(start);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead = format!("http://127.0.0.1:{port}");
    let store = EtcdStore::open(&EtcdConfig::plain([dead, etcd.endpoint()])).unwrap();
    for i in 0..10 {
        store
            .create("Counter", &format!("c{i}"), json!({"value": i}))
            .unwrap();
    }
    assert_eq!(store.list("Counter").unwrap().items.len(), 10);
    // A first endpoint that takes connections and never answers: reads move on when its
    // share of the time is up; watches too.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    let store = EtcdStore::open(&EtcdConfig::plain([silent_url, etcd.endpoint()])).unwrap();
    let started = Instant::now();
    assert_eq!(store.list("Counter").unwrap().items.len(), 10);
    assert!(started.elapsed() < Duration::from_secs(3));
    let store = EtcdStore::open(&EtcdConfig::plain([
        format!("http://{}", silent.local_addr().unwrap()),
        etcd.endpoint(),
    ]))
    .unwrap();
    let mut watcher = Watcher::from_revision(store_revision(&etcd));
    let writer = etcd.store();
    let handle = thread::spawn(move || {
        thread::sleep(Duration::from_millis(200));
        writer
            .create("Counter", "late", json!({}))
            .unwrap()
            .revision
    });
    let change = watcher
        .wait_for_change(&store, Duration::from_secs(10))
        .unwrap();
    let revision = handle.join().unwrap();
    assert_eq!(
        told(&change.unwrap()),
        (revision, vec![format!("put Counter late @{revision}")])
    );
}

/// A change the watch described: its revision and each object's change, in order.
fn told(change: &Change) -> (u64, Vec<String>) {
    let Change::Changed {
        revision,
        objects: Some(objects),
    } = change
    else {
        panic!("not a described change: {change:?}");
    };
    let objects = objects
        .iter()
        .map(|object| match object {
            ObjectChange::Put(raw) => format!("put {} {} @{}", raw.kind, raw.name, raw.revision),
            ObjectChange::Damaged(damaged) => format!("damaged {} {}", damaged.kind, damaged.name),
            ObjectChange::Deleted {
                kind,
                name,
                revision,
            } => format!("deleted {kind} {name} @{revision}"),
        })
        .collect();
    (*revision, objects)
}

fn store_revision(etcd: &EtcdServer) -> u64 {
    etcd.store().revision().unwrap()
}

#[test]
fn mutual_tls_with_certificates_made_by_openssl() {
    let etcd = etcd_or_skip!(start_tls);
    let config = etcd.config();
    assert!(etcd.endpoint().starts_with("https://127.0.0.1:"));
    let store = datastore::open(&DatastoreConfig::Etcd(config.clone())).unwrap();
    store.create_as(&pool("p", "10.65.0.0/16")).unwrap();
    let mut watcher = Watcher::new(store.as_ref()).unwrap();
    store.delete_as::<IpPool>("p", None).unwrap();
    assert!(watcher
        .wait(store.as_ref(), Duration::from_secs(5))
        .unwrap()
        .is_some());
    assert_eq!(
        keys(&etcd),
        Vec::<String>::new(),
        "etcdctl reads it with the same certificates"
    );

    // Without a client certificate etcd refuses (it requires one); clearly and in time.
    let endpoints = etcd.endpoint();
    let no_identity = EtcdConfig {
        cert_file: None,
        key_file: None,
        ..config.clone()
    };
    let store = EtcdStore::open(&no_identity).unwrap();
    fails_clearly("no client certificate", &endpoints, || store.revision());
    // A server certificate from another CA is not trusted.
    let other = tempfile::tempdir().unwrap();
    let other_ca = etcd_server::make_certificates(other.path()).ca;
    let wrong_ca = EtcdConfig {
        ca_file: Some(other_ca),
        ..config
    };
    let store = EtcdStore::open(&wrong_ca).unwrap();
    fails_clearly("another CA", &endpoints, || store.revision());
    // Plain HTTP to a TLS port: no answer that etcd would give.
    let plain = endpoints.replace("https://", "http://");
    let store = EtcdStore::open(&EtcdConfig::plain([plain.as_str()])).unwrap();
    fails_clearly("plain to TLS", &plain, || store.revision());
}

#[test]
fn configuration_errors_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("cert.pem");
    std::fs::write(
        &pem,
        "-----BEGIN CERTIFICATE-----\nMII=\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let https = EtcdConfig::plain(["https://127.0.0.1:2379"]);
    let open = |config: EtcdConfig| EtcdStore::open(&config).unwrap_err().to_string();
    let msg = open(EtcdConfig {
        cert_file: Some(pem.clone()),
        ..https.clone()
    });
    assert_eq!(
        msg,
        "datastore.cert_file: a client certificate needs its key_file too"
    );
    let msg = open(EtcdConfig {
        ca_file: Some(dir.path().join("missing.pem")),
        ..https.clone()
    });
    assert!(
        msg.starts_with(&format!(
            "datastore.ca_file: reading {}: ",
            dir.path().join("missing.pem").display()
        )),
        "{msg}"
    );
    let msg = open(EtcdConfig::plain(["http://127.0.0.1"]));
    assert!(
        msg.starts_with("datastore.endpoints: \"http://127.0.0.1\" is not an etcd endpoint"),
        "{msg}"
    );
    let msg = open(EtcdConfig {
        ca_file: Some(pem.clone()),
        ..EtcdConfig::plain(["http://127.0.0.1:2379"])
    });
    assert_eq!(
        msg,
        "datastore.ca_file: TLS files need https:// endpoints (these are http://)"
    );
    // A file for the wrong key, or PEM that is not what it should be.
    let key_pem = dir.path().join("key.pem");
    std::fs::write(
        &key_pem,
        "-----BEGIN PRIVATE KEY-----\nMII=\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let msg = open(EtcdConfig {
        ca_file: Some(key_pem.clone()),
        ..https.clone()
    });
    assert_eq!(
        msg,
        format!(
            "datastore.ca_file: {} holds no certificate (PEM)",
            key_pem.display()
        )
    );
    let msg = open(EtcdConfig {
        cert_file: Some(pem.clone()),
        key_file: Some(pem.clone()),
        ..https.clone()
    });
    assert_eq!(
        msg,
        format!(
            "datastore.key_file: {} holds no private key (PEM)",
            pem.display()
        )
    );
    let msg = open(EtcdConfig {
        cert_file: Some(pem.clone()),
        key_file: Some(key_pem.clone()),
        ..https
    });
    assert!(
        msg.starts_with(&format!(
            "datastore.cert_file: the client certificate {} and key {} cannot be used: ",
            pem.display(),
            key_pem.display()
        )),
        "{msg}"
    );
}

/// `tapwire-control` itself, configured for etcd (its underlay is `lo`, no dataplane runs):
/// killed by its PID when dropped.
struct Agent {
    child: std::process::Child,
    api: std::path::PathBuf,
    log: std::path::PathBuf,
}

impl Agent {
    fn start(etcd: &EtcdServer, dir: &std::path::Path) -> Agent {
        let config = dir.join("node.toml");
        std::fs::write(
            &config,
            format!(
                "node = \"node-a\"\nunderlay_interface = \"lo\"\ndataplane_socket = \"{0}/dataplane.sock\"\napi_socket = \"{0}/api.sock\"\n[datastore]\nkind = \"etcd\"\nendpoints = [\"{1}\"]\n",
                dir.display(),
                etcd.endpoint()
            ),
        )
        .unwrap();
        let log = dir.join("control.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_tapwire-control"))
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        Agent {
            child,
            api: dir.join("api.sock"),
            log,
        }
    }

    fn tapwirectl(&self, args: &[&str]) -> String {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tapwirectl"))
            .arg("--api")
            .arg(&self.api)
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until `tapwirectl routes` says `wanted`; how long that took.
    fn wait_for_route(&self, wanted: &str, limit: Duration) -> Duration {
        let started = Instant::now();
        loop {
            let routes = self.tapwirectl(&["routes"]);
            if routes.contains(wanted) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < limit,
                "no route {wanted:?} after {limit:?}: {routes}\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_agent_on_etcd_follows_another_hosts_writes_and_an_etcd_restart() {
    let mut etcd = etcd_or_skip!(start);
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(&etcd, dir.path());
    let node_key = "/calico/resources/v3/projectcalico.org/nodes/node-a";
    let started = Instant::now();
    while !keys(&etcd).iter().any(|k| k == node_key) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "node-a did not register: {}",
            std::fs::read_to_string(&agent.log).unwrap_or_default()
        );
        thread::sleep(Duration::from_millis(50));
    }
    let store = etcd.store();
    store.create_as(&pool("default", "10.65.0.0/16")).unwrap();
    // Another host's node and its block, written straight into etcd.
    store
        .create_as(&Node::new("node-b", "127.0.0.2/8".parse().unwrap()))
        .unwrap();
    store
        .create_as(&IpamBlock::new("10.65.1.0/26".parse().unwrap(), "node-b"))
        .unwrap();
    let took = agent.wait_for_route("10.65.1.0/26 via 127.0.0.2", Duration::from_secs(5));
    assert!(
        took < Duration::from_secs(1),
        "the route came after {took:?}"
    );
    // etcd goes away and comes back: the agent's watch picks up where it was.
    etcd.restart();
    let store = etcd.store();
    store
        .create_as(&IpamBlock::new("10.65.2.0/26".parse().unwrap(), "node-b"))
        .unwrap();
    agent.wait_for_route("10.65.2.0/26 via 127.0.0.2", Duration::from_secs(10));
}
