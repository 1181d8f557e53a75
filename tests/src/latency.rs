//! Latency figures for the benchmark probes (`tests/src/bin/*-latency`, `mcp-load`,
//! `stream-probe`): one percentile rule, so that every scenario reports alike.

use std::time::Duration;

use serde_json::{Value, json};

/// The `p` quantile (0..=1) of `sorted`, nearest rank, in microseconds; NaN for no samples.
pub fn percentile_us(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)].as_secs_f64() * 1e6
}

/// Sorts `samples` and gives their p50, p90, p99 and mean in microseconds.
pub fn summary(samples: &mut [Duration]) -> Value {
    samples.sort_unstable();
    let mean = samples.iter().sum::<Duration>() / samples.len().max(1) as u32;
    json!({
        "p50_us": percentile_us(samples, 0.50),
        "p90_us": percentile_us(samples, 0.90),
        "p99_us": percentile_us(samples, 0.99),
        "mean_us": mean.as_secs_f64() * 1e6,
    })
}
