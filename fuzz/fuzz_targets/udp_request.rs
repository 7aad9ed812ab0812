//! libFuzzer entry point of the `udp_request` target; the body (what it feeds and what must hold) is
//! fuzz/harness/udp_request.rs, which tests/fuzz_seeds.rs also runs on the committed seeds.
#![no_main]

#[path = "../harness/udp_request.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::run(data));
