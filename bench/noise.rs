//! Noise on a shared machine: these benchmarks run on virtual machines whose
//! host takes CPU time away when it is busy (steal), so one run can be far
//! from what the machine does. Each measurement is repeated in rounds,
//! interleaved with the ones it is compared to, and the median round is
//! reported beside the share of CPU time stolen meanwhile.

use serde::Serialize;

/// The machine's CPU time so far as (stolen by the hypervisor, all), in
/// clock ticks, from the first line of /proc/stat.
fn machine_cpu_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("cpu "))
        .unwrap_or("")
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal; guest time is already
    // counted in user.
    let all = ticks.iter().take(8).sum();
    (ticks.get(7).copied().unwrap_or(0), all)
}

/// Measures the CPU time stolen from the machine between `start` and
/// `stolen_share`.
pub struct StealMeter((u64, u64));

impl StealMeter {
    pub fn start() -> StealMeter {
        StealMeter(machine_cpu_ticks())
    }

    /// The share of the machine's CPU time stolen since `start`.
    pub fn stolen_share(&self) -> f64 {
        let (steal, all) = machine_cpu_ticks();
        let all = all.saturating_sub(self.0.1);
        if all == 0 {
            return 0.0;
        }
        steal.saturating_sub(self.0.0) as f64 / all as f64
    }
}

/// One measurement's rounds, summarised by its median round.
#[derive(Debug, Clone, Serialize)]
pub struct Rounds<T> {
    /// The round with the median `key` (the lower middle one of an even
    /// count).
    pub median: T,
    /// Each round's `key`, in the order they ran.
    pub values: Vec<f64>,
    /// Each round's share of CPU time stolen by the hypervisor.
    pub stolen: Vec<f64>,
}

impl<T> Rounds<T> {
    /// `runs` as (result, stolen share), summarised by `key`.
    pub fn of(runs: Vec<(T, f64)>, key: impl Fn(&T) -> f64) -> Rounds<T> {
        let values: Vec<f64> = runs.iter().map(|(r, _)| key(r)).collect();
        let stolen = runs.iter().map(|(_, s)| *s).collect();
        let mut order: Vec<usize> = (0..runs.len()).collect();
        order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
        let middle = order[(order.len() - 1) / 2];
        let median = runs
            .into_iter()
            .nth(middle)
            .map(|(r, _)| r)
            .expect("at least one round");
        Rounds {
            median,
            values,
            stolen,
        }
    }

    /// The most stolen in any round, as a share.
    pub fn most_stolen(&self) -> f64 {
        self.stolen.iter().copied().fold(0.0, f64::max)
    }
}
