//! The policy parser: any bytes either parse or fail with `file:line:col: ...` (not valid
//! UTF-8 included) and exit status 78; it never panics or hangs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ralph_supervise::exit::ExitStatus;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if let Err(failure) = ralph_supervise::policy::parse(data, Path::new("fuzz.toml")) {
        assert_eq!(failure.status, ExitStatus::BadPolicy);
        let msg = format!("{:#}", failure.error);
        assert!(msg.starts_with("fuzz.toml:"), "{msg}");
    }
});
