//! What tapwire-control reads from BIRD and from the kernel about BGP: BIRD's control
//! socket replies (line protocol, `show protocols`, `show status`) and rtnetlink route
//! dumps and notifications of the kernel table BIRD writes learned routes to.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tapwire_control::bgp::birdc::{Fed, ReplyParser};
use tapwire_control::bgp::status::{bgp_peers, parse_protocols, parse_status};
use tapwire_sys::netlink::{parse_ack, parse_table_route};

fuzz_target!(|data: &[u8]| {
    // A route message of a dump, and a whole datagram of one.
    let _ = parse_table_route(data, 30583);
    let _ = parse_ack(data, 1);
    let text = String::from_utf8_lossy(data);
    let mut parser = ReplyParser::default();
    for line in text.lines() {
        match parser.feed(line) {
            Ok(Fed::More) => {}
            Ok(Fed::Done) => break,
            Err(_) => return,
        }
    }
    if let Ok(lines) = parser.finish("show protocols") {
        let _ = bgp_peers(&parse_protocols(&lines));
        let _ = parse_status(&lines);
    }
});
