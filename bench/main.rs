//! `make bench`: what edgehook costs, measured on this machine. For now the
//! sidecar's durable ingest: concurrent gRPC publishers straight into a
//! release-built `edgehook serve`, with `durability = "fsync"` and
//! `"flush"`, reporting events/s and the group-commit batch sizes seen.
//!
//! Run with `cargo bench -p edgehook --bench edgehook -- [ingest] [--seconds N] [--clients N]`.

// `load` also holds the fixed-rate HTTP generator for the edge benchmark.
#[allow(dead_code)]
mod load;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Args {
    seconds: u64,
    clients: Vec<usize>,
    body_bytes: usize,
}

fn parse_args() -> Args {
    let mut args = Args {
        seconds: 10,
        clients: vec![16, 64],
        body_bytes: 1024,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seconds" => args.seconds = it.next().and_then(|v| v.parse().ok()).unwrap_or(10),
            "--clients" => {
                args.clients = it
                    .next()
                    .map(|v| v.split(',').filter_map(|c| c.parse().ok()).collect())
                    .unwrap_or_default()
            }
            "--body-bytes" => {
                args.body_bytes = it.next().and_then(|v| v.parse().ok()).unwrap_or(1024)
            }
            // `cargo bench` passes --bench; "ingest" names the only suite.
            _ => {}
        }
    }
    args
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A sidecar with no destinations: what is measured is ingest alone.
struct Sidecar {
    child: Child,
    port: u16,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Sidecar {
    fn start(durability: &str) -> Sidecar {
        let dir = tempfile::tempdir().expect("a temp dir");
        let port = free_port();
        let config = dir.path().join("edgehook.toml");
        std::fs::write(
            &config,
            format!(
                "data_dir = \"{}\"\ndurability = \"{durability}\"\n[ingest]\nlisten = \"127.0.0.1:{port}\"\nmin_free_disk_bytes = 0\n",
                dir.path().join("data").display()
            ),
        )
        .expect("config written");
        let log = dir.path().join("sidecar.log");
        let child = Command::new(env!("CARGO_BIN_EXE_edgehook"))
            .args(["serve", "--config"])
            .arg(&config)
            .env("EDGEHOOK_LOG", "warn,edgehook_sidecar::ingest=debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("edgehook serve starts");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the sidecar did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Sidecar {
            child,
            port,
            log,
            _dir: dir,
        }
    }

    /// Mean and largest group-commit batch, from the writer's debug lines.
    fn batches(&self) -> (f64, u64, u64) {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let sizes: Vec<u64> = text
            .lines()
            .filter(|l| l.contains("group commit"))
            .filter_map(|l| l.split("batch=").nth(1))
            .filter_map(|v| v.split_whitespace().next())
            .filter_map(|v| v.parse().ok())
            .collect();
        let n = sizes.len() as u64;
        let sum: u64 = sizes.iter().sum();
        (
            sum as f64 / n.max(1) as f64,
            sizes.iter().copied().max().unwrap_or(0),
            n,
        )
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    let body = vec![b'x'; args.body_bytes];
    println!(
        "| durability | clients | events/s | acked | failed | commits | mean batch | max batch |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for durability in ["fsync", "flush"] {
        for &clients in &args.clients {
            let sidecar = Sidecar::start(durability);
            let r = load::publish(
                sidecar.port,
                clients,
                Duration::from_secs(args.seconds),
                u64::MAX,
                body.clone(),
            )
            .await;
            let (mean, max, commits) = sidecar.batches();
            println!(
                "| {durability} | {clients} | {:.0} | {} | {} | {commits} | {mean:.1} | {max} |",
                r.events_per_s, r.acked, r.failed
            );
        }
    }
}
