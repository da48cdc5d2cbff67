//! The policy parser: any text either parses or fails with `file:line:col: ...` and
//! exit status 78; it never panics or hangs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ralph_supervise::exit::ExitStatus;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(failure) = ralph_supervise::policy::parse_str(text, Path::new("fuzz.toml")) {
        assert_eq!(failure.status, ExitStatus::BadPolicy);
        let msg = format!("{:#}", failure.error);
        assert!(msg.starts_with("fuzz.toml:"), "{msg}");
    }
});
