//! Any bytes as a Produce request's records field: validation accepts whole
//! batches whose headers and (uncompressed) records agree, or refuses them;
//! what it accepts tiles the input exactly and re-validates batch by batch.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_log::batch;

fuzz_target!(|data: &[u8]| {
    let Ok(batches) = batch::split_batches(data) else {
        return;
    };
    let mut expected_start = 0;
    for (start, header) in &batches {
        assert_eq!(*start, expected_start, "batches tile the input");
        let len = header.total_len().expect("an accepted batch has a length");
        let one = &data[*start..*start + len];
        batch::validate(one).expect("an accepted batch validates alone");
        assert!(header.record_count > 0);
        expected_start += len;
    }
    assert_eq!(
        expected_start,
        data.len(),
        "accepted input is whole batches"
    );
});
