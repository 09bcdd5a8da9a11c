//! `edgehook destinations ls|pause|resume`: where events go, how each
//! destination is doing, and holding one back while its owner fixes it.

use clap::Subcommand;
use edgehook_proto::v1::{
    Destination, DestinationRequest, DestinationState, ListDestinationsRequest,
};

use super::admin::{CliError, Client};
use super::output::{self, Format, short_duration, table, to_json};

#[derive(Debug, Subcommand)]
pub enum DestinationsCommand {
    /// List destinations with their state, queue and recent success rate.
    #[command(
        after_help = "Examples:\n  edgehook destinations ls\n  edgehook destinations ls -o json"
    )]
    Ls,
    /// Stop delivering to a destination; its queue is kept.
    #[command(after_help = "Examples:\n  edgehook destinations pause billing")]
    Pause { name: String },
    /// Deliver to a paused destination again.
    #[command(after_help = "Examples:\n  edgehook destinations resume billing")]
    Resume { name: String },
}

pub async fn run(
    cmd: DestinationsCommand,
    mut client: Client,
    format: Format,
) -> Result<(), CliError> {
    let list = match cmd {
        DestinationsCommand::Ls => {
            let r = client
                .list_destinations(ListDestinationsRequest {})
                .await?
                .into_inner();
            if format == Format::Json {
                output::print_json(&to_json(&r, "edgehook.v1.ListDestinationsResponse"));
                return Ok(());
            }
            r.destinations
        }
        DestinationsCommand::Pause { name } => {
            let d = client
                .pause_destination(DestinationRequest { name })
                .await?
                .into_inner();
            if format == Format::Table {
                println!(
                    "Paused {}; its queue waits until `edgehook destinations resume {}`.",
                    d.name, d.name
                );
            }
            vec![d]
        }
        DestinationsCommand::Resume { name } => {
            let d = client
                .resume_destination(DestinationRequest { name })
                .await?
                .into_inner();
            if format == Format::Table {
                println!("Resumed {}.", d.name);
            }
            vec![d]
        }
    };
    if format == Format::Json {
        for d in &list {
            output::print_json(&to_json(d, "edgehook.v1.Destination"));
        }
        return Ok(());
    }
    if list.is_empty() {
        println!("No destinations are configured.");
        return Ok(());
    }
    println!("{}", destinations_table(&list));
    Ok(())
}

pub fn state_word(state: i32) -> &'static str {
    match DestinationState::try_from(state) {
        Ok(DestinationState::Active) => "active",
        Ok(DestinationState::Paused) => "paused",
        Ok(DestinationState::BreakerOpen) => "breaker open",
        Ok(DestinationState::BreakerHalfOpen) => "half-open",
        _ => "unknown",
    }
}

pub fn destinations_table(list: &[Destination]) -> comfy_table::Table {
    let mut t = table(&[
        "NAME",
        "STATE",
        "QUEUE",
        "OLDEST DUE",
        "SUCCESS",
        "IN FLIGHT",
        "DEAD",
        "URL",
    ]);
    for d in list {
        let oldest = if d.oldest_due_age_ms > 0 {
            short_duration(std::time::Duration::from_millis(
                d.oldest_due_age_ms.unsigned_abs(),
            ))
        } else {
            "-".into()
        };
        let success = if d.success_rate < 0.0 {
            "-".into()
        } else {
            format!("{:.1}%", d.success_rate * 100.0)
        };
        t.add_row(vec![
            d.name.clone(),
            state_word(d.state).to_string(),
            d.queue_depth.to_string(),
            oldest,
            success,
            d.in_flight.to_string(),
            d.dead_letters.to_string(),
            d.url.clone(),
        ]);
    }
    t
}
