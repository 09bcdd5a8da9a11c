//! How the admin CLI shows things: readable tables for people, protobuf's
//! JSON mapping for scripts (`--output json`), times relative to now
//! ("3m ago"), and the exit code each kind of failure maps to.

use std::time::{Duration, UNIX_EPOCH};

use clap::ValueEnum;
use comfy_table::presets::UTF8_BORDERS_ONLY;
use comfy_table::{ContentArrangement, Table};
use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};
use tonic::Code;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Tables and sentences, for a terminal.
    Table,
    /// One JSON document per answer (protobuf's JSON mapping, proto field
    /// names, numbers as numbers), for scripts and jq.
    Json,
}

/// A table with the CLI's look; `headers` are upper-case by convention.
pub fn table(headers: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(headers.iter().copied());
    t
}

/// A message as JSON, following the proto's own field names and enum names
/// (the same shape `grpcurl` prints).
pub fn to_json<M: prost::Message>(message: &M, full_name: &str) -> serde_json::Value {
    let decoded = DescriptorPool::decode(edgehook_proto::v1::FILE_DESCRIPTOR_SET)
        .ok()
        .and_then(|pool| pool.get_message_by_name(full_name))
        .and_then(|desc| DynamicMessage::decode(desc, message.encode_to_vec().as_slice()).ok());
    let Some(dynamic) = decoded else {
        return serde_json::Value::Null;
    };
    let options = SerializeOptions::new()
        .use_proto_field_name(true)
        .stringify_64_bit_integers(false)
        .skip_default_fields(false);
    let mut out = serde_json::Serializer::new(Vec::new());
    match dynamic.serialize_with_options(&mut out, &options) {
        Ok(()) => serde_json::from_slice(&out.into_inner()).unwrap_or(serde_json::Value::Null),
        Err(_) => serde_json::Value::Null,
    }
}

pub fn print_json(value: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

fn now_ms() -> i64 {
    crate::clock::now_ms()
}

/// "12s ago", "3m ago", "5h ago", "2d ago"; "in 40s" for future times;
/// "-" for 0 (unset).
pub fn ago(at_ms: i64) -> String {
    ago_from(at_ms, now_ms())
}

pub fn ago_from(at_ms: i64, now_ms: i64) -> String {
    if at_ms == 0 {
        return "-".into();
    }
    let delta = now_ms - at_ms;
    let span = short_duration(Duration::from_millis(delta.unsigned_abs()));
    if delta >= 0 {
        format!("{span} ago")
    } else {
        format!("in {span}")
    }
}

/// The largest whole unit: "850ms", "12s", "3m", "5h", "2d".
pub fn short_duration(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{}s", ms / 1_000),
        60_000..3_600_000 => format!("{}m", ms / 60_000),
        3_600_000..86_400_000 => format!("{}h", ms / 3_600_000),
        _ => format!("{}d", ms / 86_400_000),
    }
}

/// A `--since`/`--until` value: a duration back from now ("15m", "2h",
/// "7d") or an RFC 3339 time ("2026-12-01T10:00:00Z"). Unix ms.
pub fn parse_time(text: &str) -> Result<i64, String> {
    if let Ok(d) = humantime::parse_duration(text) {
        return Ok(now_ms() - i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    }
    let t = humantime::parse_rfc3339_weak(text).map_err(|_| {
        format!("{text:?} is neither a duration (15m, 2h, 7d) nor a time (2026-12-01T10:00:00Z)")
    })?;
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    Ok(i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
}

/// An RFC 3339 time in UTC, to the second.
pub fn timestamp(at_ms: i64) -> String {
    if at_ms <= 0 {
        return "-".into();
    }
    let t = UNIX_EPOCH + Duration::from_millis(at_ms.unsigned_abs());
    humantime::format_rfc3339_seconds(t).to_string()
}

/// A body or response shown in a terminal: text as it is (cut at `limit`
/// characters), anything else as a byte count.
pub fn printable(bytes: &[u8], limit: usize) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) if text.chars().count() > limit => {
            let cut: String = text.chars().take(limit).collect();
            format!("{cut}… ({} bytes)", bytes.len())
        }
        Ok(text) => text.to_string(),
        Err(_) => format!("<{} bytes, not UTF-8>", bytes.len()),
    }
}

/// Exit codes, documented in `edgehook --help`.
pub mod exit {
    pub const OK: u8 = 0;
    pub const FAILED: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const NOT_FOUND: u8 = 3;
    pub const UNAUTHENTICATED: u8 = 4;
    pub const UNAVAILABLE: u8 = 5;
}

/// The exit code for a failed admin call.
pub fn exit_code(status: &tonic::Status) -> u8 {
    match status.code() {
        Code::NotFound => exit::NOT_FOUND,
        Code::Unauthenticated | Code::PermissionDenied => exit::UNAUTHENTICATED,
        Code::Unavailable | Code::DeadlineExceeded => exit::UNAVAILABLE,
        Code::InvalidArgument => exit::USAGE,
        _ => exit::FAILED,
    }
}

/// A sentence for a failed admin call.
pub fn describe(status: &tonic::Status) -> String {
    match status.code() {
        Code::Unauthenticated => format!(
            "the admin API refused the token ({}); set --token or EDGEHOOK_ADMIN_TOKEN",
            status.message()
        ),
        Code::Unavailable => format!("the admin API is unreachable: {}", status.message()),
        _ => status.message().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times_read_like_a_person_would_say_them() {
        let now = 1_000_000_000;
        assert_eq!(ago_from(now - 12_000, now), "12s ago");
        assert_eq!(ago_from(now - 180_000, now), "3m ago");
        assert_eq!(ago_from(now - 5 * 3_600_000, now), "5h ago");
        assert_eq!(ago_from(now - 2 * 86_400_000, now), "2d ago");
        assert_eq!(ago_from(now + 40_000, now), "in 40s");
        assert_eq!(ago_from(now - 850, now), "850ms ago");
        assert_eq!(ago_from(0, now), "-");
    }

    #[test]
    fn times_parse_as_durations_back_or_rfc3339() {
        let before = now_ms();
        let t = parse_time("2h").unwrap();
        assert!((before - 7_200_000 - t).abs() < 5_000, "{t}");
        assert_eq!(
            parse_time("2026-12-01T10:00:00Z").unwrap(),
            1_796_119_200_000
        );
        assert!(parse_time("yesterday").unwrap_err().contains("yesterday"));
        assert_eq!(timestamp(1_796_119_200_000), "2026-12-01T10:00:00Z");
    }

    #[test]
    fn failures_map_to_documented_exit_codes() {
        assert_eq!(exit_code(&tonic::Status::not_found("x")), exit::NOT_FOUND);
        assert_eq!(
            exit_code(&tonic::Status::unauthenticated("x")),
            exit::UNAUTHENTICATED
        );
        assert_eq!(
            exit_code(&tonic::Status::unavailable("x")),
            exit::UNAVAILABLE
        );
        assert_eq!(exit_code(&tonic::Status::internal("x")), exit::FAILED);
    }

    #[test]
    fn json_uses_proto_names_and_plain_numbers() {
        let d = edgehook_proto::v1::DeliverySummary {
            destination: "billing".into(),
            status: edgehook_proto::v1::DeliveryStatus::Dead as i32,
            attempts: 3,
            next_attempt_at_ms: 1_700_000_000_000,
            ..Default::default()
        };
        let v = to_json(&d, "edgehook.v1.DeliverySummary");
        assert_eq!(v["destination"], "billing");
        assert_eq!(v["status"], "DELIVERY_STATUS_DEAD");
        assert_eq!(v["next_attempt_at_ms"], 1_700_000_000_000i64);
        assert_eq!(v["last_status_code"], 0);
    }

    #[test]
    fn printable_cuts_text_and_counts_binary() {
        assert_eq!(printable(b"hello", 10), "hello");
        assert_eq!(printable(b"hello world", 5), "hello… (11 bytes)");
        assert_eq!(printable(&[0xff, 0x00], 5), "<2 bytes, not UTF-8>");
    }
}
