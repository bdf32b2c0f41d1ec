//! `node.toml`, as `tapwire-control --config` reads it.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use tapwire_control::model::NodeConfig;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = NodeConfig::parse(text, Path::new("node.toml"));
    }
});
