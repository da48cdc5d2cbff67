//! The merge-queue and history line readers: any bytes parse or fail cleanly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ralph_supervise::{history, worktree::queue};

fuzz_target!(|data: &[u8]| {
    for line in data.split(|&b| b == b'\n') {
        let _ = queue::parse_line(line);
    }
    let (records, bad) = history::parse(data);
    let lines = data
        .split(|&b| b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .count();
    assert_eq!(records.len() + bad, lines);
});
