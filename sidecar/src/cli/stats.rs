//! `edgehook stats`: the sidecar at a glance.

use edgehook_proto::v1::StatsRequest;

use super::admin::{CliError, Client};
use super::destinations::destinations_table;
use super::output::{self, Format, ago, to_json};

pub async fn run(mut client: Client, format: Format) -> Result<(), CliError> {
    let s = client.stats(StatsRequest {}).await?.into_inner();
    if format == Format::Json {
        output::print_json(&to_json(&s, "edgehook.v1.StatsResponse"));
        return Ok(());
    }
    println!("Started       {}", ago(s.started_at_ms));
    println!(
        "Events        {} stored, {} duplicates dropped since start",
        s.events, s.duplicates
    );
    println!(
        "Deliveries    {} delivered, {} pending, {} dead",
        s.delivered, s.pending, s.dead
    );
    println!("Failed tries  {} since start", s.attempts_failed);
    println!("Storage       {}", bytes(s.storage_bytes));
    if !s.destinations.is_empty() {
        println!();
        println!("{}", destinations_table(&s.destinations));
    }
    Ok(())
}

/// 1536 → "1.5 KiB".
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_read_in_binary_units() {
        assert_eq!(super::bytes(512), "512 B");
        assert_eq!(super::bytes(1536), "1.5 KiB");
        assert_eq!(super::bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }
}
