//! Closed-loop load with wrk: a fixed number of connections sending the
//! same request as fast as the server answers. A Lua script sets the
//! request and reports the totals, latency percentiles and the count of
//! each status code as one JSON line, so every path's answers are checked
//! as well as timed.

use std::path::Path;
use std::process::Command;

use serde::Serialize;

/// What one wrk run measured.
#[derive(Debug, Clone, Serialize)]
pub struct WrkResult {
    pub requests: u64,
    pub seconds: f64,
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    /// Socket errors (connect, read, write, timeout).
    pub socket_errors: u64,
    /// Responses by status code.
    pub statuses: std::collections::BTreeMap<u16, u64>,
}

impl WrkResult {
    /// The share of answers that had `status`.
    pub fn share(&self, status: u16) -> f64 {
        let total: u64 = self.statuses.values().sum();
        if total == 0 {
            return 0.0;
        }
        self.statuses.get(&status).copied().unwrap_or(0) as f64 / total as f64
    }
}

/// How wrk is run; recorded in the report.
#[derive(Debug, Clone, Serialize)]
pub struct WrkSettings {
    pub threads: u32,
    pub connections: u32,
    pub duration_s: u64,
}

pub fn version() -> String {
    Command::new("wrk")
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default()
}

const SCRIPT: &str = r#"
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) counts = {} end
function response(status, headers, body) counts[status] = (counts[status] or 0) + 1 end
function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("counts")) do total[k] = (total[k] or 0) + v end
  end
  local parts = {}
  for k, v in pairs(total) do table.insert(parts, string.format('"%d":%d', k, v)) end
  local e = summary.errors
  io.write(string.format(
    'EDGEHOOK_WRK {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"p999_us":%d,"socket_errors":%d,"statuses":{%s}}\n',
    summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9),
    e.connect + e.read + e.write + e.timeout, table.concat(parts, ",")))
end
"#;

/// POSTs `body` with `headers` to `url` for `settings.duration_s`.
pub fn run(
    url: &str,
    headers: &[(String, String)],
    body: &[u8],
    settings: &WrkSettings,
    scratch: &Path,
) -> WrkResult {
    let body_path = scratch.join("body.bin");
    std::fs::write(&body_path, body).unwrap();
    let mut script = format!(
        "wrk.method = \"POST\"\nlocal f = io.open(\"{}\", \"rb\")\nwrk.body = f:read(\"*a\")\nf:close()\n",
        body_path.display()
    );
    for (k, v) in headers {
        script.push_str(&format!("wrk.headers[\"{k}\"] = \"{v}\"\n"));
    }
    script.push_str(SCRIPT);
    let script_path = scratch.join("bench.lua");
    std::fs::write(&script_path, script).unwrap();
    let out = Command::new("wrk")
        .arg("-t")
        .arg(settings.threads.to_string())
        .arg("-c")
        .arg(settings.connections.to_string())
        .arg("-d")
        .arg(format!("{}s", settings.duration_s))
        .arg("--timeout")
        .arg("10s")
        .arg("-s")
        .arg(&script_path)
        .arg(url)
        .output()
        .expect("wrk (apt-get install wrk; `make bench` installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("EDGEHOOK_WRK "))
        .unwrap_or_else(|| {
            panic!(
                "wrk printed no result:\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    let seconds = v["duration_us"].as_f64().unwrap() / 1e6;
    let requests = v["requests"].as_u64().unwrap();
    let ms = |k: &str| v[k].as_f64().unwrap() / 1000.0;
    WrkResult {
        requests,
        seconds,
        rps: requests as f64 / seconds.max(1e-9),
        p50_ms: ms("p50_us"),
        p99_ms: ms("p99_us"),
        p999_ms: ms("p999_us"),
        socket_errors: v["socket_errors"].as_u64().unwrap(),
        statuses: v["statuses"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, n)| (k.parse().unwrap(), n.as_u64().unwrap()))
            .collect(),
    }
}

/// Short runs to warm caches and JITs before the measured one.
pub fn warm_up(url: &str, headers: &[(String, String)], body: &[u8], scratch: &Path) {
    let settings = WrkSettings {
        threads: 1,
        connections: 4,
        duration_s: 1,
    };
    let _ = run(url, headers, body, &settings, scratch);
}
