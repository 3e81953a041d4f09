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

/// Median, lowest and highest.
pub fn spread(v: &[f64]) -> (f64, f64, f64) {
    let mut x = v.to_vec();
    x.sort_by(f64::total_cmp);
    (x[x.len() / 2], x[0], x[x.len() - 1])
}
