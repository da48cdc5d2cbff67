//! The lock-file metadata reader: any bytes parse or fail cleanly, and whatever parses
//! serialises and parses back to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ralph_supervise::metadata::Metadata;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(meta)) = Metadata::parse(data) {
        let json = meta.to_json();
        let again = Metadata::parse(json.as_bytes())
            .expect("our own JSON parses")
            .expect("our own JSON is not empty");
        // Timestamps are written to the millisecond: compare the rest.
        assert_eq!(
            again.to_json(),
            Metadata::parse(again.to_json().as_bytes())
                .unwrap()
                .unwrap()
                .to_json()
        );
        assert_eq!(again.pid, meta.pid);
        assert_eq!(again.prompt, meta.prompt);
        assert_eq!(again.command, meta.command);
    }
});
