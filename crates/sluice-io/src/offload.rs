//! Whether the article's zero-CPU-copy case can happen: `sendfile` hands the
//! NIC page descriptors only when the outgoing device has scatter/gather and
//! transmit checksum offload. This asks the kernel (ethtool ioctls), never assumes.

use std::ffi::CStr;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, BorrowedFd};

use rustix::net::AddressFamily;

const ETHTOOL_GTXCSUM: u32 = 0x16;
const ETHTOOL_GSG: u32 = 0x18;

/// What the kernel says about the device a socket sends through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffloadReport {
    /// The network interface, or `None` for a Unix socket (no device at all).
    pub interface: Option<String>,
    /// `tx-scatter-gather`, when the kernel answered.
    pub scatter_gather: Option<bool>,
    /// Transmit checksum offload, when the kernel answered.
    pub tx_checksum: Option<bool>,
    /// A sentence for people.
    pub summary: String,
}

impl OffloadReport {
    /// True when the device can take page descriptors straight from the page
    /// cache (the article's fourth row).
    pub fn zero_cpu_copy_possible(&self) -> bool {
        self.scatter_gather == Some(true) && self.tx_checksum == Some(true)
    }
}

#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

/// Reads scatter/gather and tx-checksum offload of interface `name` from the kernel.
pub fn interface_offload(name: &str) -> io::Result<(bool, bool)> {
    let probe = rustix::net::socket(AddressFamily::INET, rustix::net::SocketType::DGRAM, None)?;
    let get = |cmd: u32| -> io::Result<bool> {
        let mut value = EthtoolValue { cmd, data: 0 };
        // SAFETY: `ifreq` is plain old data; all-zero is a valid value.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        if name.len() >= req.ifr_name.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "interface name too long",
            ));
        }
        for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
            *dst = src as libc::c_char;
        }
        req.ifr_ifru.ifru_data = (&mut value as *mut EthtoolValue).cast();
        // SAFETY: SIOCETHTOOL with a NUL-terminated interface name and
        // `ifr_data` pointing at an `ethtool_value` that outlives the call,
        // which is what the kernel reads and writes for these two commands.
        let rc = unsafe { libc::ioctl(probe.as_raw_fd(), libc::SIOCETHTOOL, &mut req) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(value.data != 0)
    };
    Ok((get(ETHTOOL_GSG)?, get(ETHTOOL_GTXCSUM)?))
}

/// The interface that owns `ip` (exactly, or by its subnet), from `getifaddrs`.
pub fn interface_for_address(ip: IpAddr) -> io::Result<Option<String>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut exact = None;
    let mut subnet = None;
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: `ifa_addr`/`ifa_netmask` point at sockaddrs of the family in
        // `sa_family`, and `ifa_name` at a NUL-terminated string, per getifaddrs(3).
        let (addr, mask) = unsafe { (sockaddr_ip(ifa.ifa_addr), sockaddr_ip(ifa.ifa_netmask)) };
        let Some(addr) = addr else { continue };
        // SAFETY: as above.
        let name = unsafe { CStr::from_ptr(ifa.ifa_name) }
            .to_string_lossy()
            .into_owned();
        if addr == ip {
            exact = Some(name);
            break;
        }
        if let Some(mask) = mask
            && same_subnet(addr, ip, mask)
            && subnet.is_none()
        {
            subnet = Some(name);
        }
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(exact.or(subnet))
}

/// # Safety
/// `sa` is null or points at a valid sockaddr of the family it names.
unsafe fn sockaddr_ip(sa: *const libc::sockaddr) -> Option<IpAddr> {
    if sa.is_null() {
        return None;
    }
    // SAFETY: the caller promises a valid sockaddr; the family tells its type.
    unsafe {
        match (*sa).sa_family as i32 {
            libc::AF_INET => {
                let sin = &*(sa as *const libc::sockaddr_in);
                Some(IpAddr::from(
                    u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                ))
            }
            libc::AF_INET6 => {
                let sin6 = &*(sa as *const libc::sockaddr_in6);
                Some(IpAddr::from(sin6.sin6_addr.s6_addr))
            }
            _ => None,
        }
    }
}

fn same_subnet(a: IpAddr, b: IpAddr, mask: IpAddr) -> bool {
    match (a, b, mask) {
        (IpAddr::V4(a), IpAddr::V4(b), IpAddr::V4(m)) => {
            let m = u32::from(m);
            m != 0 && u32::from(a) & m == u32::from(b) & m
        }
        (IpAddr::V6(a), IpAddr::V6(b), IpAddr::V6(m)) => {
            let m = u128::from(m);
            m != 0 && u128::from(a) & m == u128::from(b) & m
        }
        _ => false,
    }
}

/// The offload report for the device a connected socket sends through.
pub fn offload_for_socket(socket: BorrowedFd<'_>) -> OffloadReport {
    let local = match rustix::net::getsockname(socket) {
        Ok(local) => local,
        Err(e) => return unknown(None, format!("getsockname failed: {e}")),
    };
    if local.address_family() == AddressFamily::UNIX {
        return OffloadReport {
            interface: None,
            scatter_gather: None,
            tx_checksum: None,
            summary: "unix socket: no network device; data moves between socket buffers in memory"
                .into(),
        };
    }
    let ip = match std::net::SocketAddr::try_from(local) {
        Ok(addr) => addr.ip(),
        Err(_) => return unknown(None, "local address is not an IP address".into()),
    };
    let name = match interface_for_address(ip) {
        Ok(Some(name)) => name,
        Ok(None) => return unknown(None, format!("no interface owns {ip}")),
        Err(e) => return unknown(None, format!("getifaddrs failed: {e}")),
    };
    match interface_offload(&name) {
        Ok((sg, csum)) => {
            let verdict = if sg && csum {
                "scatter/gather and checksum offload on: sendfile can hand the device page descriptors (0 CPU copies)"
            } else {
                "offload missing: the kernel copies into linear socket buffers (1 CPU copy)"
            };
            OffloadReport {
                summary: format!(
                    "{name}: scatter-gather {}, tx-checksum {}; {verdict}",
                    on(sg),
                    on(csum)
                ),
                interface: Some(name),
                scatter_gather: Some(sg),
                tx_checksum: Some(csum),
            }
        }
        Err(e) => unknown(
            Some(name.clone()),
            format!("{name}: ethtool query failed: {e}"),
        ),
    }
}

fn on(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}

fn unknown(interface: Option<String>, summary: String) -> OffloadReport {
    OffloadReport {
        interface,
        scatter_gather: None,
        tx_checksum: None,
        summary,
    }
}
