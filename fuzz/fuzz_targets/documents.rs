//! YAML and JSON documents, as `tapwirectl apply -f` sends them and the agent checks them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tapwire_control::model::{check_batch, parse_documents, IpPool};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(documents) = parse_documents(text) {
        let existing = [IpPool::new(
            "default",
            "10.65.0.0/16".parse().expect("a CIDR"),
        )];
        let _ = check_batch(&documents, &existing);
    }
});
