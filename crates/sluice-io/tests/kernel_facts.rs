//! What the io layer reads from the kernel: the outgoing device's offload
//! features and the page cache's residency of a file.

mod common;

use common::{Net, file_with, pair, pattern};
use sluice_io::{cache, offload};

#[test]
fn loopback_tcp_reports_the_lo_device_and_its_offload_bits() {
    let (tx, _rx) = pair(Net::Tcp);
    let report = offload::offload_for_socket(tx.fd());
    assert_eq!(
        report.interface.as_deref(),
        Some("lo"),
        "{}",
        report.summary
    );
    // The answer came from the kernel, whatever it is.
    let (sg, csum) = offload::interface_offload("lo").expect("ethtool on lo");
    assert_eq!(report.scatter_gather, Some(sg));
    assert_eq!(report.tx_checksum, Some(csum));
    assert_eq!(report.zero_cpu_copy_possible(), sg && csum);
}

#[test]
fn unix_socket_has_no_device() {
    let (tx, _rx) = pair(Net::Unix);
    let report = offload::offload_for_socket(tx.fd());
    assert_eq!(report.interface, None);
    assert!(!report.zero_cpu_copy_possible());
}

#[test]
fn unknown_interface_is_an_error() {
    assert!(offload::interface_offload("nonexistent0").is_err());
}

#[test]
fn eviction_and_warming_show_in_residency() {
    let data = pattern(8 << 20);
    let (_path, file) = file_with(&data);
    cache::warm(&file, 0, data.len() as u64).expect("warm");
    let hot = cache::resident_fraction(&file, 0, data.len() as u64).expect("mincore");
    assert!(hot > 0.99, "warmed file resident: {hot}");
    assert!(cache::is_resident(&file, 0, data.len() as u64).expect("cachestat"));
    cache::evict(&file).expect("evict");
    let cold = cache::resident_fraction(&file, 0, data.len() as u64).expect("mincore");
    assert!(cold < 0.5, "evicted file mostly gone: {cold}");
    assert!(!cache::is_resident(&file, 0, data.len() as u64).expect("cachestat"));
    // readahead brings it back without a read into user space.
    cache::fill(&file, 4096, 1 << 20).expect("readahead");
    assert!(cache::is_resident(&file, 4096, 1 << 20).expect("cachestat"));
}
