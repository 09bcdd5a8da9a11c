//! The `edgehook` admin CLI, run as the built binary against a sidecar
//! running in-process: tables for people, `--output json` for scripts, and
//! the documented exit codes.

mod support;

use std::process::Output;

use serde_json::Value;
use support::{DESTINATION, DESTINATION_SECRET, Sidecar, TOKEN, eventually};

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `edgehook <args>` against `admin` with `token` from the environment.
async fn edgehook_with(admin: &str, token: Option<&str>, args: &[&str]) -> Run {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_edgehook"));
    cmd.args(args)
        .env("EDGEHOOK_ADMIN_ADDR", admin)
        .env_remove("EDGEHOOK_ADMIN_TOKEN")
        .env("NO_COLOR", "1");
    if let Some(t) = token {
        cmd.env("EDGEHOOK_ADMIN_TOKEN", t);
    }
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().await.expect("run edgehook");
    let run = Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    };
    for text in [&run.stdout, &run.stderr] {
        assert!(!text.contains(DESTINATION_SECRET), "a secret was printed");
    }
    run
}

async fn edgehook(sidecar: &Sidecar, args: &[&str]) -> Run {
    let run = edgehook_with(&sidecar.admin_url(), Some(TOKEN), args).await;
    assert_eq!(
        run.code, 0,
        "edgehook {args:?} failed:\n{}\n{}",
        run.stdout, run.stderr
    );
    run
}

async fn json(sidecar: &Sidecar, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["--output", "json"]);
    let run = edgehook(sidecar, &all).await;
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout))
}

async fn status_of(sidecar: &Sidecar, id: &str) -> String {
    let v = json(sidecar, &["events", "show", id]).await;
    v["deliveries"][0]["summary"]["status"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn find_a_failed_webhook_redrive_it_and_see_it_delivered() {
    let sidecar = Sidecar::start(400).await;
    sidecar.channel().await;
    let id = sidecar.publish("stripe", "evt_cli_1", "invoice.paid").await;
    eventually("the event to be dead-lettered", || async {
        (status_of(&sidecar, &id).await == "DELIVERY_STATUS_DEAD").then_some(())
    })
    .await;

    // Find it by the provider's id.
    let table = edgehook(&sidecar, &["events", "ls", "--provider-id", "evt_cli_1"]).await;
    for want in [
        id.as_str(),
        "stripe",
        "invoice.paid",
        "billing dead (1 attempts)",
        "ago",
    ] {
        assert!(table.stdout.contains(want), "{want:?} in\n{}", table.stdout);
    }
    let listed = json(
        &sidecar,
        &["events", "ls", "--status", "dead", "--since", "1h"],
    )
    .await;
    assert_eq!(listed["events"][0]["id"], id.as_str());
    assert_eq!(
        listed["events"][0]["deliveries"][0]["last_status_code"],
        400
    );

    // Every attempt.
    let shown = edgehook(&sidecar, &["events", "show", &id, "--body"]).await;
    for want in [
        "Provider id  evt_cli_1",
        "→ billing: dead after 1 attempt(s)",
        "HTTP 400",
        "give_up",
        "receiver said 400",
        r#"{"id":"evt_cli_1""#,
    ] {
        assert!(shown.stdout.contains(want), "{want:?} in\n{}", shown.stdout);
    }

    let dlq = edgehook(&sidecar, &["dlq", "ls"]).await;
    assert!(
        dlq.stdout.contains(&id) && dlq.stdout.contains("HTTP 400"),
        "{}",
        dlq.stdout
    );
    let dlq = json(&sidecar, &["dlq", "ls", "--destination", DESTINATION]).await;
    assert_eq!(dlq["dead_letters"][0]["event_id"], id.as_str());

    // Redrive, twice: the second finds nothing to do.
    sidecar.receiver.answer(200);
    let redrive = edgehook(&sidecar, &["dlq", "redrive", &id]).await;
    assert!(
        redrive.stdout.contains("Requeued 1 delivery(ies)."),
        "{}",
        redrive.stdout
    );
    let again = json(&sidecar, &["dlq", "redrive", &id]).await;
    assert_eq!(again["requeued"], 0);
    assert_eq!(again["skipped"][0], id.as_str());
    eventually("the redriven event to be delivered", || async {
        (status_of(&sidecar, &id).await == "DELIVERY_STATUS_DELIVERED").then_some(())
    })
    .await;
    let shown = edgehook(&sidecar, &["events", "show", &id]).await;
    assert!(
        shown
            .stdout
            .contains("→ billing: delivered after 2 attempt(s)"),
        "{}",
        shown.stdout
    );
    let empty = edgehook(&sidecar, &["dlq", "ls"]).await;
    assert!(
        empty.stdout.contains("The dead-letter queue is empty"),
        "{}",
        empty.stdout
    );
    sidecar.stop().await.unwrap();
}

#[tokio::test]
async fn destinations_and_stats_as_tables_and_json() {
    let sidecar = Sidecar::start(200).await;
    sidecar.channel().await;
    let paused = edgehook(&sidecar, &["destinations", "pause", DESTINATION]).await;
    assert!(
        paused.stdout.contains("Paused billing"),
        "{}",
        paused.stdout
    );
    let id = sidecar.publish("stripe", "evt_cli_2", "invoice.paid").await;
    let ls = edgehook(&sidecar, &["destinations", "ls"]).await;
    for want in ["NAME", "STATE", "billing", "paused"] {
        assert!(ls.stdout.contains(want), "{want:?} in\n{}", ls.stdout);
    }
    let ls = json(&sidecar, &["destinations", "ls"]).await;
    let d = &ls["destinations"][0];
    assert_eq!(d["state"], "DESTINATION_STATE_PAUSED");
    assert_eq!(d["queue_depth"], 1);
    edgehook(&sidecar, &["destinations", "resume", DESTINATION]).await;
    eventually("the held event to be delivered", || async {
        (status_of(&sidecar, &id).await == "DELIVERY_STATUS_DELIVERED").then_some(())
    })
    .await;
    let stats = edgehook(&sidecar, &["stats"]).await;
    for want in [
        "Events        1 stored",
        "1 delivered, 0 pending, 0 dead",
        "active",
    ] {
        assert!(stats.stdout.contains(want), "{want:?} in\n{}", stats.stdout);
    }
    let stats = json(&sidecar, &["stats"]).await;
    assert_eq!(stats["delivered"], 1);
    assert_eq!(stats["destinations"][0]["success_rate"], 1.0);
    sidecar.stop().await.unwrap();
}

#[tokio::test]
async fn failures_exit_with_the_documented_codes() {
    let sidecar = Sidecar::start(200).await;
    let admin = sidecar.admin_url();
    sidecar.channel().await;
    let refused = edgehook_with(&admin, Some("not-the-token"), &["stats"]).await;
    assert_eq!(refused.code, 4, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("refused the token"),
        "{}",
        refused.stderr
    );
    assert!(!refused.stderr.contains("not-the-token"));
    let missing = edgehook_with(&admin, None, &["stats"]).await;
    assert_eq!(missing.code, 4, "{}", missing.stderr);
    let unknown = edgehook_with(&admin, Some(TOKEN), &["events", "show", "evt_nope"]).await;
    assert_eq!(unknown.code, 3, "{}", unknown.stderr);
    assert!(unknown.stderr.contains("evt_nope"), "{}", unknown.stderr);
    let unguarded = edgehook_with(&admin, Some(TOKEN), &["dlq", "purge"]).await;
    assert_eq!(unguarded.code, 2, "{}", unguarded.stderr);
    assert!(unguarded.stderr.contains("--all"), "{}", unguarded.stderr);
    sidecar.stop().await.unwrap();
    let gone = edgehook_with(&admin, Some(TOKEN), &["stats"]).await;
    assert_eq!(gone.code, 5, "{}", gone.stderr);
}

#[tokio::test]
async fn every_admin_command_has_help_with_examples() {
    for args in [
        &["events", "ls", "--help"][..],
        &["events", "show", "--help"],
        &["events", "tail", "--help"],
        &["dlq", "ls", "--help"],
        &["dlq", "redrive", "--help"],
        &["dlq", "purge", "--help"],
        &["destinations", "ls", "--help"],
        &["destinations", "pause", "--help"],
        &["destinations", "resume", "--help"],
        &["stats", "--help"],
    ] {
        let run = edgehook_with("http://127.0.0.1:1", None, args).await;
        assert_eq!(run.code, 0, "{args:?}");
        assert!(
            run.stdout.contains("Examples:\n  edgehook "),
            "{args:?}:\n{}",
            run.stdout
        );
    }
}

#[tokio::test]
async fn tail_follows_new_events_and_attempts() {
    use tokio::io::{AsyncBufReadExt, BufReader};

    let sidecar = Sidecar::start(200).await;
    sidecar.channel().await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_edgehook"))
        .args(["events", "tail", "--admin", &sidecar.admin_url()])
        .env("EDGEHOOK_ADMIN_TOKEN", TOKEN)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let following = stderr.next_line().await.unwrap().unwrap_or_default();
    // Printed once the stream is open, so nothing published after it is missed.
    assert!(following.starts_with("Following new events"), "{following}");
    let id = sidecar.publish("stripe", "evt_tail", "invoice.paid").await;
    let read = async {
        let event = stdout.next_line().await.unwrap().unwrap();
        let attempt = stdout.next_line().await.unwrap().unwrap();
        (event, attempt)
    };
    let (event, attempt) = tokio::time::timeout(std::time::Duration::from_secs(10), read)
        .await
        .expect("two tail lines");
    assert!(
        event.contains("event") && event.contains(&id) && event.contains("invoice.paid"),
        "{event}"
    );
    assert!(
        attempt.contains("attempt") && attempt.contains(&id) && attempt.contains("HTTP 200"),
        "{attempt}"
    );
    assert!(attempt.contains("delivered"), "{attempt}");
    child.kill().await.unwrap();
    sidecar.stop().await.unwrap();
}
