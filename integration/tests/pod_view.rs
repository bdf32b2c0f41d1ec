//! What a user inside a pod sees, Calico's way: the two routes via the link-local
//! gateway, and after the first packet the gateway's neighbour entry with the MAC
//! ee:ee:ee:ee:ee:ee that the dataplane answers ARP with. The MTU is the underlay's minus
//! the encapsulation overhead.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use tapwire_integration::check::assert_pings_once_reachable;
use tapwire_integration::{skip_unless_root, Cluster, Lab, Mode};

#[test]
fn pod_sees_calico_routes_gateway_neighbour_and_mtu() {
    if skip_unless_root("pod_sees_calico_routes_gateway_neighbour_and_mtu") {
        return;
    }
    let lab = Lab::new().unwrap();
    let cluster = Cluster::start(&lab, Mode::Vxlan).unwrap();
    let a = cluster.pod("pod-a").unwrap();
    let c = cluster.pod("pod-c").unwrap();

    let routes = a.exec(&["ip", "route"]).unwrap();
    let lines: Vec<&str> = routes.lines().map(str::trim).collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("default via 169.254.1.1 dev eth0")),
        "no default route via 169.254.1.1:\n{routes}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("169.254.1.1 dev eth0 scope link")),
        "no link route to 169.254.1.1:\n{routes}"
    );
    assert_eq!(
        lines.len(),
        2,
        "a pod has exactly Calico's two routes:\n{routes}"
    );

    let addr = a
        .exec(&["ip", "-4", "addr", "show", "dev", "eth0"])
        .unwrap();
    assert!(addr.contains(&format!("inet {}/32", a.ip)), "{addr}");
    assert!(
        addr.contains("mtu 1450"),
        "VXLAN pods get underlay MTU 1500 - 50:\n{addr}"
    );

    assert_pings_once_reachable(&[(a, c)], 3);
    let neigh = a.exec(&["ip", "neigh", "show", "dev", "eth0"]).unwrap();
    assert!(
        neigh
            .lines()
            .any(|l| l.starts_with("169.254.1.1 lladdr ee:ee:ee:ee:ee:ee")),
        "the gateway is not at ee:ee:ee:ee:ee:ee:\n{neigh}"
    );
    // The unfiltered listing names the device, as in Calico's walkthrough.
    let neigh_all = a.exec(&["ip", "neigh"]).unwrap();
    assert!(
        neigh_all.contains("169.254.1.1 dev eth0 lladdr ee:ee:ee:ee:ee:ee"),
        "{neigh_all}"
    );
}
