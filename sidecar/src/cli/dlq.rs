//! `edgehook dlq ls|redrive|purge`: the deliveries that were given up on,
//! and sending them again.

use clap::{Args, Subcommand};
use edgehook_proto::v1::{
    DeadLetterFilter, ListDeadLettersRequest, PurgeDeadLettersRequest, RedriveRequest,
};
use indicatif::{ProgressBar, ProgressStyle};

use super::admin::{CliError, Client};
use super::events::answer;
use super::output::{self, Format, ago, printable, table, to_json};

/// Which dead letters a command means.
#[derive(Debug, Clone, Args)]
pub struct FilterArgs {
    #[arg(long)]
    destination: Option<String>,
    #[arg(long)]
    source: Option<String>,
    /// Dead at or after: a duration back from now (15m, 2h, 7d) or an RFC 3339 time.
    #[arg(long, value_parser = output::parse_time)]
    since: Option<i64>,
    /// Dead before (same forms as --since).
    #[arg(long, value_parser = output::parse_time)]
    until: Option<i64>,
}

impl FilterArgs {
    fn filter(&self) -> DeadLetterFilter {
        DeadLetterFilter {
            destination: self.destination.clone().unwrap_or_default(),
            source: self.source.clone().unwrap_or_default(),
            since_ms: self.since.unwrap_or(0),
            until_ms: self.until.unwrap_or(0),
        }
    }

    fn is_empty(&self) -> bool {
        self.destination.is_none()
            && self.source.is_none()
            && self.since.is_none()
            && self.until.is_none()
    }
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead letters, newest first.
    #[command(after_help = "Examples:\n  \
        edgehook dlq ls\n  \
        edgehook dlq ls --destination billing --since 1d")]
    Ls {
        #[command(flatten)]
        filter: FilterArgs,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long)]
        page_token: Option<String>,
    },
    /// Queue dead deliveries again, by event id or by filter.
    #[command(after_help = "Examples:\n  \
        edgehook dlq redrive evt_0190f3c2a4b87c3e9a1d5f2b6c8e0a14\n  \
        edgehook dlq redrive --destination billing --since 2h\n  \
        edgehook dlq redrive --all\n\n\
        A delivery that is already queued or delivered is skipped, so running\n\
        the same redrive twice never delivers twice.")]
    Redrive {
        /// Event ids; with --destination, only their deliveries to it.
        ids: Vec<String>,
        #[command(flatten)]
        filter: FilterArgs,
        /// Redrive every dead letter (needed when no id or filter is given).
        #[arg(long)]
        all: bool,
    },
    /// Delete dead letters for good, by event id or by filter.
    #[command(after_help = "Examples:\n  \
        edgehook dlq purge evt_0190f3c2a4b87c3e9a1d5f2b6c8e0a14\n  \
        edgehook dlq purge --destination legacy --until 30d\n  \
        edgehook dlq purge --all")]
    Purge {
        ids: Vec<String>,
        #[command(flatten)]
        filter: FilterArgs,
        /// Purge every dead letter (needed when no id or filter is given).
        #[arg(long)]
        all: bool,
    },
}

/// Ids redriven per call in a bulk redrive (the progress bar's step).
const REDRIVE_CHUNK: usize = 100;

pub async fn run(cmd: DlqCommand, mut client: Client, format: Format) -> Result<(), CliError> {
    match cmd {
        DlqCommand::Ls {
            filter,
            limit,
            page_token,
        } => {
            let page = client
                .list_dead_letters(ListDeadLettersRequest {
                    filter: Some(filter.filter()),
                    page_size: limit,
                    page_token: page_token.unwrap_or_default(),
                })
                .await?
                .into_inner();
            if format == Format::Json {
                output::print_json(&to_json(&page, "edgehook.v1.ListDeadLettersResponse"));
                return Ok(());
            }
            if page.dead_letters.is_empty() {
                println!("The dead-letter queue is empty (for this filter).");
                return Ok(());
            }
            let mut t = table(&[
                "EVENT",
                "DESTINATION",
                "SOURCE",
                "TYPE",
                "ATTEMPTS",
                "LAST ANSWER",
                "DEAD",
                "RESPONSE",
            ]);
            for d in &page.dead_letters {
                t.add_row(vec![
                    d.event_id.clone(),
                    d.destination.clone(),
                    d.source.clone(),
                    d.event_type.clone(),
                    d.attempts.to_string(),
                    answer(d.last_status_code, &d.last_error),
                    ago(d.dead_at_ms),
                    printable(&d.response_body, 40),
                ]);
            }
            println!("{t}");
            if !page.next_page_token.is_empty() {
                println!("More: --page-token {}", page.next_page_token);
            }
            Ok(())
        }
        DlqCommand::Redrive { ids, filter, all } => {
            guard(&ids, &filter, all, "redrive")?;
            let ids = if ids.is_empty() {
                matching_ids(&mut client, &filter).await?
            } else {
                ids
            };
            let bar = if format == Format::Table && ids.len() > REDRIVE_CHUNK {
                let bar = ProgressBar::new(ids.len() as u64);
                bar.set_style(
                    ProgressStyle::with_template("{bar:40} {pos}/{len} events redriven ({eta})")
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                bar
            } else {
                ProgressBar::hidden()
            };
            let (mut requeued, mut skipped) = (0u32, Vec::new());
            for chunk in ids.chunks(REDRIVE_CHUNK) {
                let r = client
                    .redrive(RedriveRequest {
                        event_ids: chunk.to_vec(),
                        filter: Some(filter.filter()),
                        all: false,
                    })
                    .await?
                    .into_inner();
                requeued += r.requeued;
                skipped.extend(r.skipped);
                bar.inc(chunk.len() as u64);
            }
            bar.finish_and_clear();
            if format == Format::Json {
                let r = edgehook_proto::v1::RedriveResponse { requeued, skipped };
                output::print_json(&to_json(&r, "edgehook.v1.RedriveResponse"));
            } else {
                println!("Requeued {requeued} delivery(ies).");
                if !skipped.is_empty() {
                    println!(
                        "Skipped {} event(s) with no dead delivery: {}",
                        skipped.len(),
                        skipped.join(", ")
                    );
                }
            }
            Ok(())
        }
        DlqCommand::Purge { ids, filter, all } => {
            guard(&ids, &filter, all, "purge")?;
            let r = client
                .purge_dead_letters(PurgeDeadLettersRequest {
                    event_ids: ids,
                    filter: Some(filter.filter()),
                    all,
                })
                .await?
                .into_inner();
            if format == Format::Json {
                output::print_json(&to_json(&r, "edgehook.v1.PurgeDeadLettersResponse"));
            } else {
                println!("Purged {} dead letter(s).", r.purged);
            }
            Ok(())
        }
    }
}

/// Bulk operations on the whole queue need `--all`, so that a forgotten
/// argument cannot redrive or delete everything.
fn guard(ids: &[String], filter: &FilterArgs, all: bool, verb: &str) -> Result<(), CliError> {
    if ids.is_empty() && filter.is_empty() && !all {
        return Err(CliError::Usage(format!(
            "give event ids or a filter (--destination, --source, --since, --until), \
             or --all to {verb} every dead letter"
        )));
    }
    Ok(())
}

/// Every event id with a dead letter matching `filter`, collected before
/// anything is redriven (redriving removes letters, which would shift pages).
async fn matching_ids(client: &mut Client, filter: &FilterArgs) -> Result<Vec<String>, CliError> {
    let mut ids = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_dead_letters(ListDeadLettersRequest {
                filter: Some(filter.filter()),
                page_size: 1000,
                page_token: token,
            })
            .await?
            .into_inner();
        ids.extend(page.dead_letters.into_iter().map(|d| d.event_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    ids.sort();
    ids.dedup();
    Ok(ids)
}
