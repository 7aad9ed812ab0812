//! libFuzzer entry point of the `snapshot` target; the body (what it feeds and what must hold) is
//! fuzz/harness/snapshot.rs, which tests/fuzz_seeds.rs also runs on the committed seeds.
#![no_main]

#[path = "../harness/snapshot.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    harness::run(data);
});
