//! The loop registry reader (`loops.json`): any bytes parse or are reported corrupt;
//! what parses is written back as JSON that parses to the same entries, and what is
//! corrupt is salvaged into a registry that parses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ralph_supervise::worktree::registry;

fuzz_target!(|data: &[u8]| {
    let Ok(entries) = registry::parse(data) else {
        // What a corrupt file's salvage writes is a registry of its own.
        let salvaged = registry::rewrite_salvaged(data).expect("a salvage can be written");
        assert_eq!(registry::rewrite(&salvaged).unwrap(), salvaged);
        return;
    };
    assert_eq!(
        registry::rewrite_salvaged(data).unwrap(),
        registry::rewrite(data).unwrap(),
        "a readable registry salvages as it parses"
    );
    let written = registry::rewrite(data).expect("a readable registry can be written back");
    let again = registry::parse(&written).expect("our own registry parses");
    assert_eq!(again, entries, "written back, the registry reads the same");
    // Foreign entries and keys survive: writing back is a fixed point.
    assert_eq!(registry::rewrite(&written).unwrap(), written);
});
