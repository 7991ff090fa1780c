//! `getrusage(2)` snapshots: CPU time, context switches and page faults of
//! this process (the sender) or of one thread (a receiver connection).

/// One snapshot of resource usage.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Usage {
    pub user_s: f64,
    pub system_s: f64,
    pub voluntary_csw: u64,
    pub involuntary_csw: u64,
    pub minor_faults: u64,
    pub major_faults: u64,
}

impl Usage {
    /// The whole process, every thread included.
    pub fn process() -> Usage {
        Self::of(libc::RUSAGE_SELF)
    }

    /// The calling thread only.
    pub fn thread() -> Usage {
        Self::of(libc::RUSAGE_THREAD)
    }

    fn of(who: libc::c_int) -> Usage {
        // SAFETY: getrusage fills the zeroed struct we own; `who` is one of
        // the two constants above, so it cannot fail.
        let ru = unsafe {
            let mut ru: libc::rusage = std::mem::zeroed();
            libc::getrusage(who, &mut ru);
            ru
        };
        let secs = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
        Usage {
            user_s: secs(ru.ru_utime),
            system_s: secs(ru.ru_stime),
            voluntary_csw: ru.ru_nvcsw as u64,
            involuntary_csw: ru.ru_nivcsw as u64,
            minor_faults: ru.ru_minflt as u64,
            major_faults: ru.ru_majflt as u64,
        }
    }

    /// What happened between `earlier` and this snapshot.
    pub fn since(&self, earlier: &Usage) -> Usage {
        Usage {
            user_s: (self.user_s - earlier.user_s).max(0.0),
            system_s: (self.system_s - earlier.system_s).max(0.0),
            voluntary_csw: self.voluntary_csw.saturating_sub(earlier.voluntary_csw),
            involuntary_csw: self.involuntary_csw.saturating_sub(earlier.involuntary_csw),
            minor_faults: self.minor_faults.saturating_sub(earlier.minor_faults),
            major_faults: self.major_faults.saturating_sub(earlier.major_faults),
        }
    }
}

/// Pins the calling thread (and the threads it spawns later) to one CPU.
pub fn pin_to_cpu(cpu: usize) -> std::io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET writes inside it;
    // sched_setaffinity reads the set we own for the calling thread (pid 0).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Time one CPU spent busy, from `/proc/stat` (USER_HZ ticks, 10 ms each):
/// everything that ran there, including softirq work done on behalf of other
/// processes (on loopback, the receiving half of TCP runs where the sender sends).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CoreTime {
    pub busy_s: f64,
    pub softirq_s: f64,
}

impl CoreTime {
    pub fn read(cpu: usize) -> Option<CoreTime> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let name = format!("cpu{cpu}");
        let line = stat
            .lines()
            .find(|l| l.split_whitespace().next() == Some(&name))?;
        let v: Vec<f64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal ...
        if v.len() < 7 {
            return None;
        }
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        Some(CoreTime {
            busy_s: (v[0] + v[1] + v[2] + v[5] + v[6]) / hz,
            softirq_s: v[6] / hz,
        })
    }

    pub fn since(&self, earlier: &CoreTime) -> CoreTime {
        CoreTime {
            busy_s: (self.busy_s - earlier.busy_s).max(0.0),
            softirq_s: (self.softirq_s - earlier.softirq_s).max(0.0),
        }
    }
}
