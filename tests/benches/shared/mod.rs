//! What the benchmarks share: their settings from the environment, and
//! summaries of repeated runs.

#![allow(dead_code, unreachable_pub)] // each benchmark uses its part

/// Sizes to run, from `var` (comma-separated), else `default`.
pub fn sizes(var: &str, default: &str) -> Vec<usize> {
    std::env::var(var)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .map(|s| s.trim().parse().expect("sizes are numbers"))
        .collect()
}

/// Runs per cell: DIFFY_BENCH_RUNS, default 5.
pub fn runs() -> usize {
    std::env::var("DIFFY_BENCH_RUNS").ok().and_then(|s| s.parse().ok()).unwrap_or(5)
}

/// Where benchmarks write stores and other tools' outputs:
/// DIFFY_BENCH_STORE_DIR, else the workspace's target/ (the disk a
/// responder's store would be on, not a tmpfs). What filesystem that is
/// matters: creating and flushing a store's files costs far more CPU on some
/// (ext4 without a journal) than on others.
pub fn store_base() -> std::path::PathBuf {
    std::env::var_os("DIFFY_BENCH_STORE_DIR").map_or_else(
        || std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"),
        std::path::PathBuf::from,
    )
}

/// CPU seconds spent by the whole machine (every process, the test hosts'
/// included) since boot, from /proc/stat.
pub fn machine_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").expect("/proc/stat");
    let ticks: Vec<f64> = stat.lines().next().unwrap().split_whitespace().skip(1).map(|t| t.parse().unwrap()).collect();
    // user nice system idle iowait irq softirq steal ...: all but idle and iowait.
    let busy: f64 = ticks.iter().sum::<f64>() - ticks[3] - ticks[4];
    busy / nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).unwrap().unwrap() as f64
}

/// Median, lowest and highest.
pub fn spread(v: &[f64]) -> (f64, f64, f64) {
    let mut x = v.to_vec();
    x.sort_by(f64::total_cmp);
    (x[x.len() / 2], x[0], x[x.len() - 1])
}
