//! `edgehook events ls|show|tail`: find a webhook, see every attempt to
//! deliver it, watch new ones arrive.

use clap::Subcommand;
use edgehook_proto::v1::{
    DeliveryStatus, DeliverySummary, EventDetail, EventSummary, GetEventRequest, ListEventsRequest,
    TailRequest, tail_entry,
};

use super::admin::{CliError, Client};
use super::output::{self, Format, ago, printable, short_duration, table, to_json};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StatusArg {
    Pending,
    Delivered,
    Dead,
}

impl From<StatusArg> for DeliveryStatus {
    fn from(s: StatusArg) -> Self {
        match s {
            StatusArg::Pending => DeliveryStatus::Pending,
            StatusArg::Delivered => DeliveryStatus::Delivered,
            StatusArg::Dead => DeliveryStatus::Dead,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// List events, newest first.
    #[command(after_help = "Examples:\n  \
        edgehook events ls\n  \
        edgehook events ls --source stripe --type 'invoice.*' --since 2h\n  \
        edgehook events ls --status dead --destination billing\n  \
        edgehook events ls --provider-id evt_1NG8Du2eZvKYlo2C\n  \
        edgehook events ls --output json | jq '.events[].id'")]
    Ls {
        #[arg(long)]
        source: Option<String>,
        /// Only events with a delivery to this destination.
        #[arg(long)]
        destination: Option<String>,
        /// Only events with at least one delivery in this state.
        #[arg(long, value_enum)]
        status: Option<StatusArg>,
        /// Event type glob, as in the filter rules ("invoice.*").
        #[arg(long = "type")]
        event_type: Option<String>,
        /// The provider's own event id (Stripe evt_..., X-GitHub-Delivery, ...).
        #[arg(long)]
        provider_id: Option<String>,
        /// Received at or after: a duration back from now (15m, 2h, 7d) or an RFC 3339 time.
        #[arg(long, value_parser = output::parse_time)]
        since: Option<i64>,
        /// Received before (same forms as --since).
        #[arg(long, value_parser = output::parse_time)]
        until: Option<i64>,
        /// Events per page.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Continue a listing (printed under the previous page).
        #[arg(long)]
        page_token: Option<String>,
    },
    /// Show one event and every delivery attempt to every destination.
    #[command(after_help = "Examples:\n  \
        edgehook events show evt_0190f3c2a4b87c3e9a1d5f2b6c8e0a14\n  \
        edgehook events show evt_0190f3c2a4b87c3e9a1d5f2b6c8e0a14 --body")]
    Show {
        id: String,
        /// Also print the body as received.
        #[arg(long)]
        body: bool,
    },
    /// Follow new events and attempt outcomes as they happen (Ctrl-C stops).
    #[command(after_help = "Examples:\n  \
        edgehook events tail\n  \
        edgehook events tail --destination billing --output json")]
    Tail {
        #[arg(long)]
        source: Option<String>,
        #[arg(long)]
        destination: Option<String>,
    },
}

pub async fn run(cmd: EventsCommand, mut client: Client, format: Format) -> Result<(), CliError> {
    match cmd {
        EventsCommand::Ls {
            source,
            destination,
            status,
            event_type,
            provider_id,
            since,
            until,
            limit,
            page_token,
        } => {
            let req = ListEventsRequest {
                source: source.unwrap_or_default(),
                destination: destination.unwrap_or_default(),
                status: status.map_or(DeliveryStatus::Unspecified, Into::into) as i32,
                event_type: event_type.unwrap_or_default(),
                provider_event_id: provider_id.unwrap_or_default(),
                since_ms: since.unwrap_or(0),
                until_ms: until.unwrap_or(0),
                page_size: limit,
                page_token: page_token.unwrap_or_default(),
            };
            let page = client.list_events(req).await?.into_inner();
            if format == Format::Json {
                output::print_json(&to_json(&page, "edgehook.v1.ListEventsResponse"));
                return Ok(());
            }
            if page.events.is_empty() {
                println!("No events match.");
                return Ok(());
            }
            let mut t = table(&["ID", "SOURCE", "TYPE", "RECEIVED", "DELIVERIES"]);
            for e in &page.events {
                t.add_row(vec![
                    e.id.clone(),
                    e.source.clone(),
                    dash(&e.event_type),
                    ago(e.received_at_ms),
                    deliveries_cell(&e.deliveries),
                ]);
            }
            println!("{t}");
            if !page.next_page_token.is_empty() {
                println!("More: --page-token {}", page.next_page_token);
            }
            Ok(())
        }
        EventsCommand::Show { id, body } => {
            let detail = client
                .get_event(GetEventRequest {
                    id,
                    include_body: body,
                })
                .await?
                .into_inner();
            if format == Format::Json {
                output::print_json(&to_json(&detail, "edgehook.v1.EventDetail"));
            } else {
                print_detail(&detail, body);
            }
            Ok(())
        }
        EventsCommand::Tail {
            source,
            destination,
        } => {
            let mut stream = client
                .tail(TailRequest {
                    source: source.unwrap_or_default(),
                    destination: destination.unwrap_or_default(),
                })
                .await?
                .into_inner();
            if format == Format::Table {
                eprintln!("Following new events and attempts (Ctrl-C stops)...");
            }
            while let Some(entry) = stream.message().await? {
                if format == Format::Json {
                    // One object per line, so `jq` can read the stream.
                    println!("{}", to_json(&entry, "edgehook.v1.TailEntry"));
                    continue;
                }
                match entry.entry {
                    Some(tail_entry::Entry::Event(e)) => println!(
                        "{}  event    {}  {}  {}  {} bytes",
                        output::timestamp(e.received_at_ms),
                        e.id,
                        e.source,
                        dash(&e.event_type),
                        e.body_bytes
                    ),
                    Some(tail_entry::Entry::Attempt(a)) => {
                        let at = a.attempt.unwrap_or_default();
                        println!(
                            "{}  attempt  {}  → {}  #{}  {}  {}  {}",
                            output::timestamp(at.started_at_ms),
                            a.event_id,
                            a.destination,
                            at.number,
                            answer(at.status_code, &at.error),
                            at.outcome,
                            short_duration(std::time::Duration::from_millis(u64::from(
                                at.duration_ms
                            )))
                        )
                    }
                    None => {}
                }
            }
            Ok(())
        }
    }
}

fn dash(s: &str) -> String {
    if s.is_empty() { "-".into() } else { s.into() }
}

/// "HTTP 503", or the error when there was no HTTP answer.
pub fn answer(status_code: u32, error: &str) -> String {
    if status_code != 0 {
        format!("HTTP {status_code}")
    } else if error.is_empty() {
        "-".into()
    } else {
        error.into()
    }
}

pub fn status_word(status: i32) -> &'static str {
    match DeliveryStatus::try_from(status) {
        Ok(DeliveryStatus::Pending) => "pending",
        Ok(DeliveryStatus::Delivered) => "delivered",
        Ok(DeliveryStatus::Dead) => "dead",
        _ => "unknown",
    }
}

/// "billing delivered, crm pending (3 attempts)".
fn deliveries_cell(deliveries: &[DeliverySummary]) -> String {
    if deliveries.is_empty() {
        return "no destination".into();
    }
    deliveries
        .iter()
        .map(|d| {
            let word = status_word(d.status);
            if d.attempts > 1 || d.status != DeliveryStatus::Delivered as i32 {
                format!("{} {word} ({} attempts)", d.destination, d.attempts)
            } else {
                format!("{} {word}", d.destination)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn print_detail(detail: &EventDetail, with_body: bool) {
    let s: EventSummary = detail.summary.clone().unwrap_or_default();
    let query = if detail.query.is_empty() {
        String::new()
    } else {
        format!("?{}", detail.query)
    };
    println!("Event        {}", s.id);
    println!("Source       {}", s.source);
    println!("Type         {}", dash(&s.event_type));
    println!("Provider id  {}", dash(&s.provider_event_id));
    println!(
        "Received     {} ({})",
        output::timestamp(s.received_at_ms),
        ago(s.received_at_ms)
    );
    println!("Request      {} {}{}", detail.method, detail.path, query);
    println!("Request id   {}", dash(&s.request_id));
    println!("Client       {}", dash(&detail.client_address));
    println!("Body         {} bytes", s.body_bytes);
    if !detail.headers.is_empty() {
        println!("Headers");
        for h in &detail.headers {
            println!("  {}: {}", h.name, printable(&h.value, 200));
        }
    }
    for d in &detail.deliveries {
        let sum = d.summary.clone().unwrap_or_default();
        let next = if sum.status == DeliveryStatus::Pending as i32 && sum.next_attempt_at_ms > 0 {
            format!(", next attempt {}", ago(sum.next_attempt_at_ms))
        } else {
            String::new()
        };
        println!();
        println!(
            "→ {}: {} after {} attempt(s){next}",
            sum.destination,
            status_word(sum.status),
            sum.attempts
        );
        if d.attempts.is_empty() {
            continue;
        }
        let mut t = table(&["#", "STARTED", "TOOK", "ANSWER", "OUTCOME", "RESPONSE"]);
        for a in &d.attempts {
            t.add_row(vec![
                a.number.to_string(),
                ago(a.started_at_ms),
                short_duration(std::time::Duration::from_millis(u64::from(a.duration_ms))),
                answer(a.status_code, &a.error),
                a.outcome.clone(),
                printable(&a.response_body, 60),
            ]);
        }
        println!("{t}");
    }
    if with_body {
        println!();
        println!("{}", printable(&detail.body, usize::MAX));
    }
}
