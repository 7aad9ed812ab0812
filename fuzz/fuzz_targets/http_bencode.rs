//! libFuzzer entry point of the `http_bencode` target; the body (what it feeds and what must hold) is
//! fuzz/harness/http_bencode.rs, which tests/fuzz_seeds.rs also runs on the committed seeds.
#![no_main]

#[path = "../harness/http_bencode.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::run(data));
