//! What the kernel says about a process: resident memory and CPU time.

use anyhow::Context;

/// Resident set size of `pid`, in KiB (`VmRSS` of `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).context("reading /proc status")?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS line")
}

/// User + system CPU time of `pid`, in seconds (`/proc/PID/stat` fields 14 and 15).
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).context("reading /proc stat")?;
    // The command name (field 2) may contain spaces; fields after it are plain.
    let after_name = stat.rsplit_once(") ").context("malformed stat")?.1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks as f64 / hz)
}

/// CPU time the whole machine spent busy (all cores: user, nice, system, irq,
/// softirq, steal), in seconds, from the first line of `/proc/stat`.
pub fn machine_busy_seconds() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let line = stat.lines().next().context("empty /proc/stat")?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .context("malformed /proc/stat")?;
    anyhow::ensure!(fields.len() >= 8, "short /proc/stat cpu line");
    let ticks: u64 = [0, 1, 2, 5, 6, 7].iter().map(|&i| fields[i]).sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks as f64 / hz)
}

/// The processes whose parent is `pid` (nginx's workers).
pub fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let child: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            let ppid: u32 = stat
                .rsplit_once(") ")?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            (ppid == pid).then_some(child)
        })
        .collect()
}

/// RSS in KiB of `pid` and its children (shared pages counted in each).
pub fn rss_with_children_kib(pid: u32) -> u64 {
    std::iter::once(pid)
        .chain(children_of(pid))
        .map(|p| rss_kib(p).unwrap_or(0))
        .sum()
}

/// CPU seconds of `pid` and its children.
pub fn cpu_with_children_seconds(pid: u32) -> f64 {
    std::iter::once(pid)
        .chain(children_of(pid))
        .map(|p| cpu_seconds(p).unwrap_or(0.0))
        .sum()
}

/// `MemTotal` of `/proc/meminfo`, in KiB.
pub fn mem_total_kib() -> anyhow::Result<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").context("reading /proc/meminfo")?;
    meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no MemTotal line")
}

/// The 1, 5 and 15 minute load averages (`/proc/loadavg`).
pub fn load_average() -> anyhow::Result<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").context("reading /proc/loadavg")?;
    let mut fields = text.split_whitespace().map(str::parse::<f64>);
    let mut next = || -> anyhow::Result<f64> { Ok(fields.next().context("short loadavg")??) };
    Ok([next()?, next()?, next()?])
}
