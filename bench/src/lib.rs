//! What the benchmark binaries share: the machine description and date their reports carry,
//! and the [`cluster`] processes they drive.

pub mod cluster;

/// CPUs, kernel and the etcd on this machine, for a report's heading.
pub fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let etcd = std::process::Command::new("etcd")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_string))
        .unwrap_or_else(|| "etcd not found".into());
    format!("{cpus} CPUs, Linux {kernel}, {etcd}")
}

/// Today's date (UTC, `YYYY-MM-DD`).
pub fn date() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}
