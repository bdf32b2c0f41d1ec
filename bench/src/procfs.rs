//! CPU time, memory and UDP counters as the kernel reports them in `/proc`: machine-wide
//! CPU time per state (`/proc/stat`), a process's user and system time (`/proc/PID/stat`),
//! whether its threads are running (`/proc/PID/task/TID/stat`), its resident set (`VmRSS`
//! in `/proc/PID/status`), the machine's memory (`/proc/meminfo`) and one network
//! namespace's UDP counters and device drops (`/proc/thread-self/net/snmp` and `dev`).
//! Parsers are pure functions over the text; the readers only open the files.

use std::time::Duration;

use crate::error::{BenchError, Result};

/// Machine-wide CPU time by state, summed over all CPUs, in clock ticks (`USER_HZ`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTimes {
    pub user: u64,
    pub nice: u64,
    pub system: u64,
    pub idle: u64,
    pub iowait: u64,
    pub irq: u64,
    pub softirq: u64,
    pub steal: u64,
}

impl CpuTimes {
    /// Ticks spent doing anything but idling or waiting for I/O (guest time is already
    /// inside `user`).
    pub fn busy(&self) -> u64 {
        self.user + self.nice + self.system + self.irq + self.softirq + self.steal
    }

    /// Every tick, busy or not.
    pub fn total(&self) -> u64 {
        self.busy() + self.idle + self.iowait
    }

    /// The share of all CPU time the hypervisor gave to others (steal), 0–1.
    pub fn steal_share(&self) -> f64 {
        match self.total() {
            0 => 0.0,
            total => self.steal as f64 / total as f64,
        }
    }

    /// How much each state grew since `before`.
    pub fn since(&self, before: &CpuTimes) -> CpuTimes {
        CpuTimes {
            user: self.user.saturating_sub(before.user),
            nice: self.nice.saturating_sub(before.nice),
            system: self.system.saturating_sub(before.system),
            idle: self.idle.saturating_sub(before.idle),
            iowait: self.iowait.saturating_sub(before.iowait),
            irq: self.irq.saturating_sub(before.irq),
            softirq: self.softirq.saturating_sub(before.softirq),
            steal: self.steal.saturating_sub(before.steal),
        }
    }
}

/// Reads the aggregate `cpu ` line of `/proc/stat` text.
pub fn parse_proc_stat(text: &str) -> Result<CpuTimes> {
    let bad = |reason: &str| BenchError::Parse {
        what: "/proc/stat".into(),
        reason: reason.into(),
    };
    let line = text
        .lines()
        .find(|l| l.starts_with("cpu "))
        .ok_or_else(|| bad("no aggregate `cpu ` line"))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .map_err(|e| bad(&format!("a field of `{line}` is not a number: {e}")))?;
    if fields.len() < 8 {
        return Err(bad(&format!(
            "`{line}` has {} fields, expected at least 8",
            fields.len()
        )));
    }
    Ok(CpuTimes {
        user: fields[0],
        nice: fields[1],
        system: fields[2],
        idle: fields[3],
        iowait: fields[4],
        irq: fields[5],
        softirq: fields[6],
        steal: fields[7],
    })
}

/// A process's CPU time in clock ticks: `(utime, stime)`, fields 14 and 15 of
/// `/proc/PID/stat`. The command name (field 2) may hold spaces and parentheses, so fields
/// are counted after its last `)`.
pub fn parse_pid_stat(text: &str) -> Result<(u64, u64)> {
    let bad = |reason: String| BenchError::Parse {
        what: "/proc/PID/stat".into(),
        reason,
    };
    let (_, rest) = text
        .rsplit_once(')')
        .ok_or_else(|| bad(format!("no `)` closing the command name in {text:?}")))?;
    // After the name: state (field 3), ppid (4), …, utime (14), stime (15).
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> Result<u64> {
        fields
            .get(n - 3)
            .ok_or_else(|| bad(format!("no field {n} in {text:?}")))?
            .parse()
            .map_err(|e| bad(format!("field {n} of {text:?}: {e}")))
    };
    Ok((field(14)?, field(15)?))
}

/// The state letter (field 3) of a `/proc/PID/stat` or `/proc/PID/task/TID/stat` line:
/// `R` running or runnable, `S` sleeping, `D` in uninterruptible sleep, ….
pub fn parse_stat_state(text: &str) -> Result<char> {
    text.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|state| state.chars().next())
        .ok_or_else(|| BenchError::Parse {
            what: "/proc/PID/stat".into(),
            reason: format!("no state after the command name in {text:?}"),
        })
}

/// The `VmRSS:` value of `/proc/PID/status` text, in bytes.
pub fn parse_vm_rss(text: &str) -> Result<u64> {
    parse_status_bytes(text, "VmRSS")
}

/// A `kB` field (`VmRSS`, `VmHWM`, …) of `/proc/PID/status` text, in bytes.
pub fn parse_status_bytes(text: &str, field: &str) -> Result<u64> {
    let bad = |reason: &str| BenchError::Parse {
        what: "/proc/PID/status".into(),
        reason: reason.into(),
    };
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .ok_or_else(|| bad(&format!("no {field} line (has the process exited?)")))?;
    let mut parts = line.split_whitespace();
    let value: u64 = parts
        .next()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| bad(&format!("{field}:{line} has no number")))?;
    match parts.next() {
        Some("kB") => Ok(value * 1024),
        other => Err(bad(&format!("{field} unit {other:?}, expected kB"))),
    }
}

/// The `MemTotal:` of `/proc/meminfo` text, in bytes.
pub fn parse_mem_total(text: &str) -> Result<u64> {
    parse_status_bytes(text, "MemTotal").map_err(|_| BenchError::Parse {
        what: "/proc/meminfo".into(),
        reason: "no `MemTotal: N kB` line".into(),
    })
}

/// One network namespace's UDP counters (the `Udp:` lines of `/proc/net/snmp`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UdpCounters {
    /// Datagrams handed to receiving applications.
    pub in_datagrams: u64,
    /// Datagrams dropped because a receiving socket's buffer was full.
    pub rcvbuf_errors: u64,
    /// Datagrams a sending socket reported sent although the first device dropped them
    /// (its queue was full: the kernel says ENOBUFS only to `IP_RECVERR` sockets).
    pub sndbuf_errors: u64,
}

impl UdpCounters {
    /// How much each counter grew since `before`.
    pub fn since(&self, before: &UdpCounters) -> UdpCounters {
        UdpCounters {
            in_datagrams: self.in_datagrams.saturating_sub(before.in_datagrams),
            rcvbuf_errors: self.rcvbuf_errors.saturating_sub(before.rcvbuf_errors),
            sndbuf_errors: self.sndbuf_errors.saturating_sub(before.sndbuf_errors),
        }
    }
}

/// Reads the `Udp:` header and value lines of `/proc/net/snmp` text.
pub fn parse_snmp_udp(text: &str) -> Result<UdpCounters> {
    let bad = |reason: String| BenchError::Parse {
        what: "/proc/net/snmp".into(),
        reason,
    };
    let mut lines = text.lines().filter(|l| l.starts_with("Udp: "));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        return Err(bad("no `Udp:` header and value lines".into()));
    };
    let field = |name: &str| -> Result<u64> {
        let at = names
            .split_whitespace()
            .position(|n| n == name)
            .ok_or_else(|| bad(format!("no {name} in `{names}`")))?;
        values
            .split_whitespace()
            .nth(at)
            .ok_or_else(|| bad(format!("no value for {name} in `{values}`")))?
            .parse()
            .map_err(|e| bad(format!("{name} in `{values}`: {e}")))
    };
    Ok(UdpCounters {
        in_datagrams: field("InDatagrams")?,
        rcvbuf_errors: field("RcvbufErrors")?,
        sndbuf_errors: field("SndbufErrors")?,
    })
}

/// Packets the interfaces of one network namespace dropped, summed over them (the `drop`
/// columns of `/proc/net/dev`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceDrops {
    /// Dropped on receive: a frame written to a TAP or arriving on a veth that the
    /// kernel's backlog could not take, among others.
    pub rx: u64,
    /// Dropped on transmit: a frame a TAP's reader had no room for, or a veth's peer
    /// could not take.
    pub tx: u64,
}

impl DeviceDrops {
    /// How much each counter grew since `before`.
    pub fn since(&self, before: &DeviceDrops) -> DeviceDrops {
        DeviceDrops {
            rx: self.rx.saturating_sub(before.rx),
            tx: self.tx.saturating_sub(before.tx),
        }
    }
}

/// Sums the receive and transmit `drop` columns of `/proc/net/dev` text.
pub fn parse_net_dev_drops(text: &str) -> Result<DeviceDrops> {
    let mut drops = DeviceDrops::default();
    // Two header lines, then `name: rx bytes packets errs drop … | tx bytes packets errs drop …`.
    for line in text.lines().skip(2) {
        let Some((name, counters)) = line.split_once(':') else {
            continue;
        };
        let values: Vec<u64> = counters
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .map_err(|e| BenchError::Parse {
                what: "/proc/net/dev".into(),
                reason: format!("interface {}: {e}", name.trim()),
            })?;
        let (Some(rx), Some(tx)) = (values.get(3), values.get(11)) else {
            return Err(BenchError::Parse {
                what: "/proc/net/dev".into(),
                reason: format!(
                    "interface {} has {} counters, expected 16",
                    name.trim(),
                    values.len()
                ),
            });
        };
        drops.rx += rx;
        drops.tx += tx;
    }
    Ok(drops)
}

/// The UDP counters and the device statistics of the calling thread's network namespace,
/// as text (`/proc/thread-self/net/snmp` and `dev`; call it inside `Netns::run`, parse with
/// [`parse_snmp_udp`] and [`parse_net_dev_drops`]).
pub fn read_namespace_counters() -> std::io::Result<(String, String)> {
    Ok((
        std::fs::read_to_string("/proc/thread-self/net/snmp")?,
        std::fs::read_to_string("/proc/thread-self/net/dev")?,
    ))
}

fn read(path: &str) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| BenchError::Io {
        what: format!("reading {path}"),
        source,
    })
}

/// The machine's CPU times now.
pub fn machine_cpu() -> Result<CpuTimes> {
    parse_proc_stat(&read("/proc/stat")?)
}

/// The machine's memory in bytes.
pub fn mem_total_bytes() -> Result<u64> {
    parse_mem_total(&read("/proc/meminfo")?)
}

/// The calling thread's user + system CPU time in ticks (`/proc/thread-self/stat`). With
/// tick-based accounting, softirq work the kernel does on the thread's behalf (a veth
/// transmit processed at once) is in it.
pub fn thread_cpu_ticks() -> Result<u64> {
    let (utime, stime) = parse_pid_stat(&read("/proc/thread-self/stat")?)?;
    Ok(utime + stime)
}

/// Process `pid`'s user + system CPU time in ticks.
pub fn process_cpu_ticks(pid: u32) -> Result<u64> {
    let (utime, stime) = parse_pid_stat(&read(&format!("/proc/{pid}/stat"))?)?;
    Ok(utime + stime)
}

/// How many of process `pid`'s threads are running or waiting for a CPU (state `R`) now.
/// A thread that exits while this reads is not counted.
pub fn running_threads(pid: u32) -> Result<usize> {
    let dir = format!("/proc/{pid}/task");
    let tasks = std::fs::read_dir(&dir).map_err(|source| BenchError::Io {
        what: format!("listing {dir}"),
        source,
    })?;
    let mut running = 0;
    for task in tasks.flatten() {
        let Ok(text) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        if parse_stat_state(&text)? == 'R' {
            running += 1;
        }
    }
    Ok(running)
}

/// Process `pid`'s resident set size in bytes.
pub fn process_rss_bytes(pid: u32) -> Result<u64> {
    parse_vm_rss(&read(&format!("/proc/{pid}/status"))?)
}

/// Process `pid`'s peak resident set size (`VmHWM`) in bytes.
pub fn process_peak_rss_bytes(pid: u32) -> Result<u64> {
    parse_status_bytes(&read(&format!("/proc/{pid}/status"))?, "VmHWM")
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`, 100 on Linux).
pub fn ticks_per_second() -> u64 {
    crate::sys::clock_ticks_per_second()
}

/// `ticks` as a duration.
pub fn ticks_to_duration(ticks: u64) -> Duration {
    Duration::from_secs_f64(ticks as f64 / ticks_per_second() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_aggregate_line() {
        let text = "cpu  4705 150 1120 16250856 1045 0 7317 0 0 0\n\
                    cpu0 2352 75 560 8125428 522 0 3658 0 0 0\n\
                    intr 1 2 3\nctxt 99\n";
        let t = parse_proc_stat(text).map_err(|e| e.to_string());
        assert_eq!(
            t.as_ref().map(|t| (t.user, t.softirq, t.idle, t.busy())),
            Ok((4705, 7317, 16_250_856, 4705 + 150 + 1120 + 7317))
        );
        let before = t.unwrap_or_default();
        let later = CpuTimes {
            softirq: 7417,
            ..before
        };
        assert_eq!(later.since(&before).softirq, 100);
    }

    #[test]
    fn proc_stat_errors_name_the_problem() {
        let err = parse_proc_stat("cpu0 1 2 3\n").map_err(|e| e.to_string());
        assert!(
            matches!(&err, Err(m) if m.contains("no aggregate")),
            "{err:?}"
        );
        let err = parse_proc_stat("cpu  1 2 x 4 5 6 7 8\n").map_err(|e| e.to_string());
        assert!(
            matches!(&err, Err(m) if m.contains("not a number")),
            "{err:?}"
        );
    }

    #[test]
    fn pid_stat_with_a_name_holding_spaces_and_parens() {
        // A real line of a process renamed "tap wire) (x".
        let text = "4242 (tap wire) (x) S 1 4242 4242 0 -1 4194560 1200 0 0 0 \
                    731 268 0 0 20 0 5 0 12345 100000000 2000 18446744073709551615 \
                    1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";
        assert_eq!(
            parse_pid_stat(text).map_err(|e| e.to_string()),
            Ok((731, 268))
        );
        assert!(parse_pid_stat("4242 (short) S 1 2").is_err());
    }

    #[test]
    fn stat_state_after_a_name_holding_spaces_and_parens() {
        let line = "4242 (tapwire (w) 0) R 1 4242 4242 0 -1 4194560 120 0 0 0 17 3 0";
        assert_eq!(parse_stat_state(line).ok(), Some('R'));
        assert_eq!(parse_stat_state("7 (api) S 1").ok(), Some('S'));
        assert!(parse_stat_state("7 (api)").is_err());
        assert!(parse_stat_state("no name").is_err());
    }

    #[test]
    fn vm_rss_in_bytes() {
        let text =
            "Name:\ttapwire-datapl\nVmPeak:\t  300000 kB\nVmRSS:\t   12345 kB\nThreads:\t5\n";
        assert_eq!(
            parse_vm_rss(text).map_err(|e| e.to_string()),
            Ok(12345 * 1024)
        );
        assert!(parse_vm_rss("Name:\tx\n").is_err());
        let peak = "VmHWMx:\t1 kB\nVmHWM:\t  2048 kB\nVmRSS:\t1024 kB\n";
        assert_eq!(
            parse_status_bytes(peak, "VmHWM").map_err(|e| e.to_string()),
            Ok(2048 * 1024)
        );
    }

    #[test]
    fn steal_is_a_share_of_all_cpu_time() {
        let t = CpuTimes {
            user: 50,
            idle: 40,
            steal: 10,
            ..CpuTimes::default()
        };
        assert_eq!(t.total(), 100);
        assert_eq!(t.steal_share(), 0.1);
        assert_eq!(CpuTimes::default().steal_share(), 0.0);
    }

    #[test]
    fn meminfo_total_in_bytes() {
        let text = "MemTotal:        4025360 kB\nMemFree:          123456 kB\n";
        assert_eq!(
            parse_mem_total(text).map_err(|e| e.to_string()),
            Ok(4_025_360 * 1024)
        );
        assert!(parse_mem_total("MemFree: 1 kB\n").is_err());
    }

    #[test]
    fn snmp_udp_counters_by_name() {
        // A real /proc/net/snmp tail (kernel 6.18), UdpLite after Udp.
        let text = "Tcp: RtoAlgorithm RtoMin\nTcp: 1 200\n\
                    Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors\n\
                    Udp: 5021 3 7 880 7 412 0 0 0\n\
                    UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors\n\
                    UdpLite: 0 0 0 0 0 0 0 0 0\n";
        let counters = parse_snmp_udp(text).map_err(|e| e.to_string());
        assert_eq!(
            counters,
            Ok(UdpCounters {
                in_datagrams: 5021,
                rcvbuf_errors: 7,
                sndbuf_errors: 412,
            })
        );
        let before = counters.unwrap_or_default();
        let later = UdpCounters {
            in_datagrams: 6021,
            ..before
        };
        assert_eq!(later.since(&before).in_datagrams, 1000);
        assert!(parse_snmp_udp("Tcp: 1\n").is_err());
        assert!(parse_snmp_udp("Udp: InDatagrams\nUdp: x\n").is_err());
    }

    #[test]
    fn device_drops_are_summed_over_interfaces() {
        let text = "Inter-|   Receive                                                |  Transmit\n\
                    \x20face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n\
                    \x20   lo:     960      12    0    0    0     0          0         0      960      12    0    0    0     0       0          0\n\
                    \x20 eth0: 9035122  143520    0    7    0     0          0         0 88610201  604913    0 4310    0     0       0          0\n\
                    tapwire0:     100       1    0    1    0     0          0         0      100       1    0    2    0     0       0          0\n";
        let drops = parse_net_dev_drops(text).map_err(|e| e.to_string());
        assert_eq!(drops, Ok(DeviceDrops { rx: 8, tx: 4312 }));
        let before = DeviceDrops { rx: 3, tx: 4000 };
        assert_eq!(
            drops.map(|d| d.since(&before)),
            Ok(DeviceDrops { rx: 5, tx: 312 })
        );
        assert!(parse_net_dev_drops("h\nh\n eth0: 1 2 3\n").is_err());
    }

    #[test]
    fn reads_this_machine() {
        let cpu = machine_cpu().map_err(|e| e.to_string());
        assert!(matches!(cpu, Ok(c) if c.busy() + c.idle > 0));
        let me = std::process::id();
        assert!(process_cpu_ticks(me).is_ok());
        assert!(matches!(process_rss_bytes(me), Ok(rss) if rss > 0));
        assert!(matches!(mem_total_bytes(), Ok(m) if m > 0));
        let counters = read_namespace_counters().map_err(|e| e.to_string());
        assert!(counters.is_ok_and(
            |(snmp, dev)| parse_snmp_udp(&snmp).is_ok() && parse_net_dev_drops(&dev).is_ok()
        ));
    }
}
