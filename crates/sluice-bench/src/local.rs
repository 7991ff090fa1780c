//! The broker's CPU time when it runs on this machine: the process listening
//! on the broker's port is found through `/proc/net/tcp{,6}` (the listening
//! socket's inode) and `/proc/<pid>/fd` (who holds that socket), and its CPU
//! seconds are read from `/proc/<pid>/stat`.

use std::net::{SocketAddr, ToSocketAddrs};

/// The pid of the process listening on `broker` (host:port), if it is local.
pub fn broker_pid(broker: &str) -> Option<u32> {
    let addr = broker.to_socket_addrs().ok()?.next()?;
    if !addr.ip().is_loopback() && !is_local_address(&addr) {
        return None;
    }
    let inode = listening_inode(addr.port())?;
    let target = format!("socket:[{inode}]");
    for proc_entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = proc_entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(proc_entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == target.as_str()) {
                return Some(pid);
            }
        }
    }
    None
}

fn is_local_address(addr: &SocketAddr) -> bool {
    // Binding to the address succeeds only if it belongs to this machine.
    std::net::TcpListener::bind(SocketAddr::new(addr.ip(), 0)).is_ok()
}

/// The inode of a socket listening on `port` (TCP state 0A), IPv4 or IPv6.
fn listening_inode(port: u16) -> Option<u64> {
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) =
                (fields.get(1), fields.get(3), fields.get(9))
            else {
                continue;
            };
            let local_port = local
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if *state == "0A" && local_port == Some(port) {
                return inode.parse().ok();
            }
        }
    }
    None
}

/// User + system CPU seconds of a process so far, from `/proc/<pid>/stat`.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses; fields after its
    // closing parenthesis are space-separated, starting with the state.
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 here.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some((utime + stime) / ticks)
}

/// Measures a broker's CPU over a window, when the broker is local.
pub struct BrokerCpu {
    pid: u32,
    start: f64,
}

impl BrokerCpu {
    pub fn start(broker: &str) -> Option<BrokerCpu> {
        let pid = broker_pid(broker)?;
        Some(BrokerCpu {
            pid,
            start: cpu_seconds(pid)?,
        })
    }

    /// CPU seconds since `start`.
    pub fn seconds(&self) -> Option<f64> {
        Some(cpu_seconds(self.pid)? - self.start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_this_process_by_its_listening_port() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        assert_eq!(broker_pid(&addr.to_string()), Some(std::process::id()));
        // Burn CPU and see it counted: on a busy machine 150 ms of wall
        // time may hold far less CPU time, so burn until the count moves
        // (or give up after 20 s of wall time).
        let cpu = BrokerCpu::start(&addr.to_string()).expect("local");
        let t0 = std::time::Instant::now();
        let mut x = 0u64;
        while cpu.seconds().expect("seconds") <= 0.05
            && t0.elapsed() < std::time::Duration::from_secs(20)
        {
            for _ in 0..100_000 {
                x = x.wrapping_mul(31).wrapping_add(7);
            }
        }
        std::hint::black_box(x);
        assert!(cpu.seconds().expect("seconds") > 0.05);
    }
}
