//! Kernel TLS (`CONFIG_TLS`): whether this kernel can encrypt TLS records
//! itself, so a TLS socket can still take `sendfile`/`splice`.

use std::os::fd::AsRawFd;

/// Whether the kernel has the `tls` upper-layer protocol. Setting it on an
/// unconnected TCP socket fails with ENOTCONN where the module exists (it
/// needs an established connection) and ENOENT where it does not.
pub fn kernel_tls_available() -> bool {
    let Ok(socket) = rustix::net::socket(
        rustix::net::AddressFamily::INET,
        rustix::net::SocketType::STREAM,
        None,
    ) else {
        return false;
    };
    let name = b"tls";
    // SAFETY: `socket` is an open descriptor owned for the call's duration,
    // and the option value points at `name`, valid for its length.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_TCP,
            libc::TCP_ULP,
            name.as_ptr().cast(),
            name.len() as libc::socklen_t,
        )
    };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOTCONN)
}

#[cfg(test)]
mod tests {
    fn listed() -> Option<bool> {
        std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_ulp")
            .ok()
            .map(|s| s.split_whitespace().any(|u| u == "tls"))
    }

    #[test]
    fn the_probe_agrees_with_the_kernels_list_of_upper_layer_protocols() {
        let before = listed();
        let probed = super::kernel_tls_available();
        // Asking for the ULP loads its module where one exists, so after the
        // probe the kernel's list and the probe must agree.
        let after = listed();
        if before == Some(true) {
            assert!(probed, "the kernel lists tls but the probe says no");
        }
        if let Some(after) = after {
            assert_eq!(probed, after, "probe {probed}, kernel lists tls: {after}");
        }
    }
}
