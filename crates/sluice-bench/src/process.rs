//! A `sluice serve` child process on loopback ports of its choosing: what the
//! `bench broker` scenarios start, fill and restart, and what the binary's
//! integration tests run against (`crates/sluice/tests/support`), so both
//! start, watch and stop a broker the same way.
//!
//! The broker is started with `--listen 127.0.0.1:0 --metrics-listen
//! 127.0.0.1:0` (free ports) and reports the addresses it bound on stdout;
//! [`BrokerLaunch::start`] returns once it has, which is after its data
//! directory is open.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};

/// How to start a broker: `exe serve` on a data directory, with extra flags.
#[derive(Clone, Debug)]
pub struct BrokerLaunch {
    exe: PathBuf,
    data_dir: PathBuf,
    listen: String,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    wrapper: Vec<OsString>,
    cpu: Option<usize>,
    quiet: bool,
}

impl BrokerLaunch {
    /// `exe serve --data-dir data_dir` on a free loopback port, its stderr
    /// passed through.
    pub fn new(exe: impl Into<PathBuf>, data_dir: impl Into<PathBuf>) -> BrokerLaunch {
        BrokerLaunch {
            exe: exe.into(),
            data_dir: data_dir.into(),
            listen: "127.0.0.1:0".to_string(),
            args: Vec::new(),
            env: Vec::new(),
            wrapper: Vec::new(),
            cpu: None,
            quiet: false,
        }
    }

    /// Listen on `addr` instead (a fixed port lets clients reconnect across
    /// restarts).
    pub fn listen(mut self, addr: &str) -> BrokerLaunch {
        self.listen = addr.to_string();
        self
    }

    /// More `serve` flags.
    pub fn args<I, S>(mut self, args: I) -> BrokerLaunch
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    /// More environment variables.
    pub fn envs<I, K, V>(mut self, env: I) -> BrokerLaunch
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        self.env.extend(
            env.into_iter()
                .map(|(k, v)| (k.as_ref().to_os_string(), v.as_ref().to_os_string())),
        );
        self
    }

    /// Run under a wrapper command (`prlimit --fsize=…`), which must exec
    /// the broker so that the child's pid is the broker's.
    pub fn wrapper<I, S>(mut self, wrapper: I) -> BrokerLaunch
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.wrapper = wrapper
            .into_iter()
            .map(|a| a.as_ref().to_os_string())
            .collect();
        self
    }

    /// Every thread of the broker on this CPU (None: wherever the kernel
    /// puts them).
    pub fn cpu(mut self, cpu: Option<usize>) -> BrokerLaunch {
        self.cpu = cpu;
        self
    }

    /// Discard the broker's stderr (tests that provoke errors on purpose).
    pub fn quiet(mut self) -> BrokerLaunch {
        self.quiet = true;
        self
    }

    /// Starts the broker and waits until it listens.
    pub fn start(self) -> std::io::Result<BrokerProcess> {
        let mut command = match self.wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(&self.exe);
                c
            }
            None => Command::new(&self.exe),
        };
        if let Some(cpu) = self.cpu {
            pin_child(&mut command, cpu);
        }
        let mut child = command
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .args(["serve", "--listen"])
            .arg(&self.listen)
            .args(["--metrics-listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.args)
            .stdout(Stdio::piped())
            .stderr(if self.quiet {
                Stdio::null()
            } else {
                Stdio::inherit()
            })
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("no stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        let (mut addr, mut metrics) = (None, None);
        let mut listeners = std::collections::BTreeMap::new();
        while addr.is_none() || metrics.is_none() {
            let Some(line) = lines.next().transpose()? else {
                let _ = child.wait();
                return Err(std::io::Error::other(
                    "sluice serve exited before listening",
                ));
            };
            let parse = |s: &str| s.parse::<SocketAddr>().map_err(std::io::Error::other);
            if let Some(a) = line.strip_prefix("sluice listening on ") {
                addr = Some(parse(a)?);
            } else if let Some(a) = line.strip_prefix("sluice metrics on ") {
                metrics = Some(parse(a)?);
            } else if let Some((name, a)) = line
                .strip_prefix("sluice listener ")
                .and_then(|l| l.split_once(" on "))
            {
                listeners.insert(name.to_string(), parse(a)?);
            }
        }
        // Keep draining stdout so the broker never blocks on a full pipe
        // nor fails writing to a closed one.
        std::thread::spawn(move || for _ in lines {});
        Ok(BrokerProcess {
            child,
            addr: addr.unwrap_or_else(|| unreachable!("loop ends with both set")),
            metrics: metrics.unwrap_or_else(|| unreachable!("loop ends with both set")),
            listeners,
            data_dir: self.data_dir,
        })
    }
}

/// Sets the CPU affinity of the child between fork and exec.
fn pin_child(command: &mut Command, cpu: usize) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec and only
    // makes one async-signal-safe syscall on a set it owns.
    unsafe {
        command.pre_exec(move || {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A running `sluice serve`; killed when dropped.
pub struct BrokerProcess {
    child: Child,
    /// The Kafka listener.
    pub addr: SocketAddr,
    /// The metrics page.
    pub metrics: SocketAddr,
    /// Every listener's bound address, by name (`PLAINTEXT`, `SASL_SSL`, …).
    pub listeners: std::collections::BTreeMap<String, SocketAddr>,
    /// The data directory it serves.
    pub data_dir: PathBuf,
}

impl BrokerProcess {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its exit status if it has exited, without waiting.
    pub fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        self.child.try_wait()
    }

    /// User + system CPU seconds of the whole broker process so far.
    pub fn cpu_seconds(&self) -> f64 {
        crate::local::cpu_seconds(self.pid()).unwrap_or(0.0)
    }

    /// Resident set size in bytes (page cache not included).
    pub fn rss_bytes(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
            .map_or(0, |kb| kb * 1024)
    }

    /// The broker's metrics page (Prometheus text), with the HTTP header.
    pub fn metrics_page(&self) -> std::io::Result<String> {
        let mut s = TcpStream::connect(self.metrics)?;
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")?;
        let mut page = String::new();
        s.read_to_string(&mut page)?;
        Ok(page)
    }

    /// Every sample on the broker's metrics page, by its full name (labels
    /// included).
    pub fn metrics(&self) -> std::io::Result<BTreeMap<String, f64>> {
        Ok(self
            .metrics_page()?
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (name, value) = l.rsplit_once(' ')?;
                Some((name.to_string(), value.parse().ok()?))
            })
            .collect())
    }

    /// SIGTERM (a clean shutdown) and wait.
    pub fn stop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return; // exited (and now reaped) already
        }
        // SAFETY: kill(2) on our own child, which try_wait just found
        // running and which nothing reaps until the wait below, so its pid
        // cannot have been reused by another process.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }

    /// SIGKILL (a crash) and wait.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
