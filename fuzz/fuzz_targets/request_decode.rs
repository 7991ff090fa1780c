//! Any bytes as a request frame (what follows the size prefix): decoding
//! returns a request or a reason, never panics, aborts or allocates by a
//! count the frame cannot hold.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = sluice_broker::decode_request(bytes::Bytes::copy_from_slice(data));
});
