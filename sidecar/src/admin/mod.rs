//! The admin gRPC API (`edgehook.v1.Admin`) with grpc.health.v1 and server
//! reflection beside it. It answers from the store, and after a pause,
//! resume or redrive it wakes the destination's loop so that it acts at
//! once; nothing else depends on it. The token check is in `auth`; health
//! and reflection need no token.

pub mod auth;

use std::collections::HashSet;
use std::sync::Arc;

use edgehook_proto::v1 as pb;
use edgehook_proto::v1::admin_server::{Admin, AdminServer};
use tokio::net::TcpListener;
use tokio::sync::{Notify, broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::activity::{Activity, Feed};
use crate::clock::Clock;
use crate::dispatch::breaker::BreakerState;
use crate::metrics::Metrics;
use crate::store::{
    self, AttemptRecord, DestId, EventQuery, JobState, JobStatus, PageRequest, Store, StoreError,
};

/// Page size when the request leaves it at 0, and the most it may ask for.
const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 1000;

/// A configured destination as the admin API shows it.
#[derive(Debug, Clone)]
pub struct DestinationInfo {
    pub name: String,
    pub id: DestId,
    /// Scheme, host and path only.
    pub url: String,
    pub wake: Arc<Notify>,
}

/// What the admin service reads and whom it wakes.
pub struct AdminContext {
    pub store: Arc<dyn Store>,
    pub destinations: Vec<DestinationInfo>,
    pub feed: Feed,
    pub metrics: Arc<Metrics>,
    pub clock: Clock,
    pub started_at_ms: i64,
    /// Ends open `Tail` streams so that a graceful shutdown is not held up.
    pub shutdown: CancellationToken,
}

#[derive(Clone)]
pub struct AdminService {
    ctx: Arc<AdminContext>,
}

impl AdminService {
    pub fn new(ctx: AdminContext) -> AdminService {
        AdminService { ctx: Arc::new(ctx) }
    }
}

/// Serves Admin (behind the token), health and reflection on `listener`
/// until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    service: AdminService,
    token: String,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let check = auth::RequireToken::new(&token, service.ctx.metrics.clone());
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<AdminServer<AdminService>>().await;
    // Only what this port serves is advertised (the descriptor set also
    // holds the Ingest service, which is on the ingest port).
    let reflection = reflection_builder()
        .with_service_name("grpc.reflection.v1.ServerReflection")
        .build_v1()
        .expect("the compiled-in descriptor sets are valid");
    // grpcurl before 1.9 asks v1alpha.
    let reflection_alpha = reflection_builder()
        .with_service_name("grpc.reflection.v1alpha.ServerReflection")
        .build_v1alpha()
        .expect("the compiled-in descriptor sets are valid");
    tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(AdminServer::with_interceptor(service, check))
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener),
            shutdown.cancelled(),
        )
        .await
}

fn reflection_builder() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .with_service_name("edgehook.v1.Admin")
        .with_service_name("grpc.health.v1.Health")
}

/// Scheme, host, port and path: a query or userinfo may carry credentials.
pub fn display_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => {
            let host = u.host_str().unwrap_or("");
            match u.port() {
                Some(p) => format!("{}://{host}:{p}{}", u.scheme(), u.path()),
                None => format!("{}://{host}{}", u.scheme(), u.path()),
            }
        }
        Err(_) => "<invalid url>".into(),
    }
}

fn store_error(e: StoreError) -> Status {
    match e {
        StoreError::BadPageToken => {
            Status::invalid_argument("page_token: not a token from a previous page")
        }
        other => Status::internal(other.to_string()),
    }
}

fn invalid(field: &str, why: &str) -> Status {
    Status::invalid_argument(format!("{field}: {why}"))
}

fn nonempty(s: String) -> Option<String> {
    if s.is_empty() { None } else { Some(s) }
}

fn bound(ms: i64, field: &str) -> Result<Option<i64>, Status> {
    match ms {
        0 => Ok(None),
        n if n < 0 => Err(invalid(field, "must be unix milliseconds, not negative")),
        n => Ok(Some(n)),
    }
}

fn page(size: u32, token: String, field: &str) -> Result<PageRequest, Status> {
    if size > MAX_PAGE {
        return Err(invalid(field, &format!("at most {MAX_PAGE}")));
    }
    Ok(PageRequest {
        limit: if size == 0 { DEFAULT_PAGE } else { size } as usize,
        token: nonempty(token),
    })
}

fn delivery_status(s: JobStatus) -> pb::DeliveryStatus {
    match s {
        JobStatus::Pending => pb::DeliveryStatus::Pending,
        JobStatus::Delivered => pb::DeliveryStatus::Delivered,
        JobStatus::Dead => pb::DeliveryStatus::Dead,
        JobStatus::Purged => pb::DeliveryStatus::Unspecified,
    }
}

fn attempt(a: &AttemptRecord) -> pb::Attempt {
    pb::Attempt {
        number: a.n,
        started_at_ms: a.started_ms,
        duration_ms: a.duration_ms,
        status_code: a.status,
        error: a.error.clone(),
        response_body: a.response_body.clone(),
        outcome: a.outcome.clone(),
    }
}

impl AdminContext {
    /// Runs a store call off the async threads.
    async fn blocking<T, F>(&self, f: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    {
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || f(store.as_ref())).await {
            Ok(r) => r.map_err(store_error),
            Err(e) => Err(Status::internal(format!("admin task failed: {e}"))),
        }
    }

    fn by_name(&self, field: &str, name: &str) -> Result<&DestinationInfo, Status> {
        if name.is_empty() {
            return Err(invalid(field, "required"));
        }
        self.destinations
            .iter()
            .find(|d| d.name == name)
            .ok_or_else(|| {
                let known: Vec<&str> = self.destinations.iter().map(|d| d.name.as_str()).collect();
                Status::not_found(format!(
                    "no destination named {name:?} (configured: {})",
                    known.join(", ")
                ))
            })
    }

    /// An optional destination filter.
    fn dest_filter(&self, field: &str, name: &str) -> Result<Option<DestId>, Status> {
        if name.is_empty() {
            Ok(None)
        } else {
            self.by_name(field, name).map(|d| Some(d.id))
        }
    }

    /// A destination id's name; a destination dropped from the config keeps
    /// a visible placeholder.
    fn dest_name(&self, id: DestId) -> String {
        self.destinations.iter().find(|d| d.id == id).map_or_else(
            || format!("#{id} (no longer configured)"),
            |d| d.name.clone(),
        )
    }

    fn delivery(&self, job: &JobState) -> pb::DeliverySummary {
        let status = delivery_status(job.job_status());
        pb::DeliverySummary {
            destination: self.dest_name(job.dest),
            status: status as i32,
            attempts: job.attempts,
            last_status_code: job.last_status,
            last_error: job.last_error.clone(),
            next_attempt_at_ms: if status == pb::DeliveryStatus::Pending {
                job.next_attempt_ms
            } else {
                0
            },
        }
    }

    fn summary(&self, e: &store::StoredEvent, jobs: &[JobState]) -> pb::EventSummary {
        let ev = e.event.clone().unwrap_or_default();
        pb::EventSummary {
            id: e.id.clone(),
            source: ev.source,
            event_type: ev.event_type,
            provider_event_id: ev.provider_event_id,
            received_at_ms: ev.received_at_ms,
            body_bytes: e.body_len(),
            deliveries: jobs.iter().map(|j| self.delivery(j)).collect(),
            request_id: ev.request_id,
        }
    }

    fn dead_letter_filter(
        &self,
        filter: Option<pb::DeadLetterFilter>,
        event_ids: Vec<String>,
    ) -> Result<store::DeadLetterFilter, Status> {
        let f = filter.unwrap_or_default();
        Ok(store::DeadLetterFilter {
            dest: self.dest_filter("filter.destination", &f.destination)?,
            source: nonempty(f.source),
            event_ids,
            since_ms: bound(f.since_ms, "filter.since_ms")?,
            until_ms: bound(f.until_ms, "filter.until_ms")?,
        })
    }

    /// The filter of a redrive or purge; refuses an empty one without
    /// `all`, so a slip cannot touch every dead letter.
    fn bulk_filter(
        &self,
        event_ids: Vec<String>,
        filter: Option<pb::DeadLetterFilter>,
        all: bool,
    ) -> Result<store::DeadLetterFilter, Status> {
        if event_ids.iter().any(String::is_empty) {
            return Err(invalid("event_ids", "contains an empty id"));
        }
        let f = self.dead_letter_filter(filter, event_ids)?;
        let empty = f.dest.is_none()
            && f.source.is_none()
            && f.event_ids.is_empty()
            && f.since_ms.is_none()
            && f.until_ms.is_none();
        if empty && !all {
            return Err(invalid(
                "filter",
                "empty: give event_ids or a filter, or set all = true to act on every dead letter",
            ));
        }
        Ok(f)
    }

    fn wake(&self, dests: impl IntoIterator<Item = DestId>) {
        let dests: HashSet<DestId> = dests.into_iter().collect();
        for d in &self.destinations {
            if dests.contains(&d.id) {
                d.wake.notify_one();
            }
        }
    }

    /// Blocking: reads the destination's queue and counters.
    fn destination(
        store: &dyn Store,
        metrics: &Metrics,
        d: &DestinationInfo,
        totals: &store::Totals,
        now_ms: i64,
    ) -> Result<pb::Destination, StoreError> {
        let paused = store.destination_state(d.id)?.paused;
        let queue = store.queue_stats(d.id)?;
        let state = if paused {
            pb::DestinationState::Paused
        } else {
            match metrics.breaker(&d.name) {
                BreakerState::Closed => pb::DestinationState::Active,
                BreakerState::Open => pb::DestinationState::BreakerOpen,
                BreakerState::HalfOpen => pb::DestinationState::BreakerHalfOpen,
            }
        };
        Ok(pb::Destination {
            name: d.name.clone(),
            url: d.url.clone(),
            state: state as i32,
            queue_depth: queue.depth,
            oldest_due_age_ms: queue.oldest_due_ms.map_or(0, |due| (now_ms - due).max(0)),
            success_rate: metrics.success_rate(&d.name).unwrap_or(-1.0),
            dead_letters: totals.destinations.get(&d.id).map_or(0, |t| t.dead_now),
            in_flight: metrics.in_flight(&d.name),
        })
    }

    async fn destinations_now(
        self: &Arc<Self>,
        only: Option<DestinationInfo>,
    ) -> Result<Vec<pb::Destination>, Status> {
        let ctx = self.clone();
        let now_ms = self.clock.now_ms();
        self.blocking(move |store| {
            let totals = store.totals()?;
            let list: Vec<&DestinationInfo> = match &only {
                Some(d) => vec![d],
                None => ctx.destinations.iter().collect(),
            };
            list.into_iter()
                .map(|d| AdminContext::destination(store, &ctx.metrics, d, &totals, now_ms))
                .collect()
        })
        .await
    }
}

type AdminResult<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl Admin for AdminService {
    async fn list_events(
        &self,
        request: Request<pb::ListEventsRequest>,
    ) -> AdminResult<pb::ListEventsResponse> {
        let r = request.into_inner();
        let ctx = &self.ctx;
        let status = match pb::DeliveryStatus::try_from(r.status) {
            Ok(pb::DeliveryStatus::Unspecified) => None,
            Ok(pb::DeliveryStatus::Pending) => Some(JobStatus::Pending),
            Ok(pb::DeliveryStatus::Delivered) => Some(JobStatus::Delivered),
            Ok(pb::DeliveryStatus::Dead) => Some(JobStatus::Dead),
            Err(_) => return Err(invalid("status", "not a DeliveryStatus")),
        };
        let query = EventQuery {
            source: nonempty(r.source),
            dest: ctx.dest_filter("destination", &r.destination)?,
            status,
            event_type: nonempty(r.event_type),
            provider_event_id: nonempty(r.provider_event_id),
            since_ms: bound(r.since_ms, "since_ms")?,
            until_ms: bound(r.until_ms, "until_ms")?,
        };
        if let (Some(s), Some(u)) = (query.since_ms, query.until_ms)
            && s >= u
        {
            return Err(invalid("until_ms", "must be after since_ms"));
        }
        let page = page(r.page_size, r.page_token, "page_size")?;
        let found = ctx.blocking(move |s| s.list_events(&query, &page)).await?;
        Ok(Response::new(pb::ListEventsResponse {
            events: found
                .items
                .iter()
                .map(|e| ctx.summary(&e.event, &e.jobs))
                .collect(),
            next_page_token: found.next_token.unwrap_or_default(),
        }))
    }

    async fn get_event(
        &self,
        request: Request<pb::GetEventRequest>,
    ) -> AdminResult<pb::EventDetail> {
        let r = request.into_inner();
        if r.id.is_empty() {
            return Err(invalid("id", "required"));
        }
        let ctx = &self.ctx;
        let id = r.id.clone();
        let Some(detail) = ctx.blocking(move |s| s.get_event(&id)).await? else {
            return Err(Status::not_found(format!("no event with id {:?}", r.id)));
        };
        let jobs: Vec<JobState> = detail.deliveries.iter().map(|d| d.job.clone()).collect();
        let ev = detail.event.event.clone().unwrap_or_default();
        Ok(Response::new(pb::EventDetail {
            summary: Some(ctx.summary(&detail.event, &jobs)),
            method: ev.method,
            path: ev.path,
            query: ev.query,
            client_address: ev.client_address,
            headers: ev
                .headers
                .into_iter()
                .map(|h| pb::KeptHeader {
                    name: h.name,
                    value: h.value,
                })
                .collect(),
            body: if r.include_body { ev.body } else { Vec::new() },
            deliveries: detail
                .deliveries
                .iter()
                .map(|d| pb::DeliveryDetail {
                    summary: Some(ctx.delivery(&d.job)),
                    attempts: d.attempts.iter().map(attempt).collect(),
                })
                .collect(),
        }))
    }

    async fn list_dead_letters(
        &self,
        request: Request<pb::ListDeadLettersRequest>,
    ) -> AdminResult<pb::ListDeadLettersResponse> {
        let r = request.into_inner();
        let ctx = &self.ctx;
        let filter = ctx.dead_letter_filter(r.filter, Vec::new())?;
        let page = page(r.page_size, r.page_token, "page_size")?;
        let found = ctx
            .blocking(move |s| s.list_dead_letters(&filter, &page))
            .await?;
        Ok(Response::new(pb::ListDeadLettersResponse {
            dead_letters: found
                .items
                .into_iter()
                .map(|d| pb::DeadLetter {
                    destination: ctx.dest_name(d.dest),
                    event_id: d.event_id,
                    source: d.source,
                    event_type: d.event_type,
                    attempts: d.attempts,
                    last_status_code: d.last_status,
                    last_error: d.last_error,
                    response_body: d.response_body,
                    dead_at_ms: d.dead_at_ms,
                    received_at_ms: d.stored_at_ms,
                })
                .collect(),
            next_page_token: found.next_token.unwrap_or_default(),
        }))
    }

    async fn redrive(
        &self,
        request: Request<pb::RedriveRequest>,
    ) -> AdminResult<pb::RedriveResponse> {
        let r = request.into_inner();
        let ctx = &self.ctx;
        let ids = r.event_ids.clone();
        let filter = ctx.bulk_filter(r.event_ids, r.filter, r.all)?;
        let now_ms = ctx.clock.now_ms();
        let (requeued, skipped) = ctx
            .blocking(move |s| {
                let jobs = s.redrive(&filter, now_ms)?;
                let seqs: HashSet<u64> = jobs.iter().map(|j| j.seq).collect();
                let mut skipped = Vec::new();
                for id in ids {
                    let seq = s.event_summary(&id)?.map(|e| e.event.seq);
                    if !seq.is_some_and(|seq| seqs.contains(&seq)) {
                        skipped.push(id);
                    }
                }
                Ok((jobs, skipped))
            })
            .await?;
        ctx.wake(requeued.iter().map(|j| j.dest));
        tracing::info!(
            requeued = requeued.len(),
            skipped = skipped.len(),
            "dead letters redriven by admin"
        );
        Ok(Response::new(pb::RedriveResponse {
            requeued: u32::try_from(requeued.len()).unwrap_or(u32::MAX),
            skipped,
        }))
    }

    async fn purge_dead_letters(
        &self,
        request: Request<pb::PurgeDeadLettersRequest>,
    ) -> AdminResult<pb::PurgeDeadLettersResponse> {
        let r = request.into_inner();
        let ctx = &self.ctx;
        let filter = ctx.bulk_filter(r.event_ids, r.filter, r.all)?;
        let now_ms = ctx.clock.now_ms();
        let purged = ctx
            .blocking(move |s| s.purge_dead_letters(&filter, now_ms))
            .await?;
        tracing::info!(purged, "dead letters purged by admin");
        Ok(Response::new(pb::PurgeDeadLettersResponse {
            purged: u32::try_from(purged).unwrap_or(u32::MAX),
        }))
    }

    async fn list_destinations(
        &self,
        _request: Request<pb::ListDestinationsRequest>,
    ) -> AdminResult<pb::ListDestinationsResponse> {
        Ok(Response::new(pb::ListDestinationsResponse {
            destinations: self.ctx.destinations_now(None).await?,
        }))
    }

    async fn pause_destination(
        &self,
        request: Request<pb::DestinationRequest>,
    ) -> AdminResult<pb::Destination> {
        self.set_paused(&request.into_inner().name, true).await
    }

    async fn resume_destination(
        &self,
        request: Request<pb::DestinationRequest>,
    ) -> AdminResult<pb::Destination> {
        self.set_paused(&request.into_inner().name, false).await
    }

    async fn stats(&self, _request: Request<pb::StatsRequest>) -> AdminResult<pb::StatsResponse> {
        let ctx = &self.ctx;
        let (totals, storage_bytes) = ctx
            .blocking(|s| Ok((s.totals()?, s.size_on_disk()?)))
            .await?;
        let sum = |f: fn(&store::DestTotals) -> u64| totals.destinations.values().map(f).sum();
        Ok(Response::new(pb::StatsResponse {
            events: totals.ingested.saturating_sub(totals.expired),
            duplicates: totals.duplicates,
            delivered: sum(|t| t.delivered),
            pending: sum(|t| t.pending),
            dead: sum(|t| t.dead_now),
            attempts_failed: sum(|t| t.failed_attempts),
            storage_bytes,
            destinations: ctx.destinations_now(None).await?,
            started_at_ms: ctx.started_at_ms,
        }))
    }

    type TailStream = ReceiverStream<Result<pb::TailEntry, Status>>;

    async fn tail(&self, request: Request<pb::TailRequest>) -> AdminResult<Self::TailStream> {
        let r = request.into_inner();
        let ctx = self.ctx.clone();
        let dest = ctx.dest_filter("destination", &r.destination)?;
        let source = nonempty(r.source);
        let mut feed = ctx.feed.subscribe();
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let activity = tokio::select! {
                    a = feed.recv() => a,
                    _ = tx.closed() => break,
                    _ = ctx.shutdown.cancelled() => break,
                };
                let entry = match activity {
                    Ok(a) => ctx.tail_entry(a, source.as_deref(), dest).await,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::debug!(missed = n, "a tail listener fell behind");
                        continue;
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                };
                if let Some(entry) = entry
                    && tx.send(Ok(entry)).await.is_err()
                {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

impl AdminService {
    async fn set_paused(&self, name: &str, paused: bool) -> AdminResult<pb::Destination> {
        let ctx = &self.ctx;
        let d = ctx.by_name("name", name)?.clone();
        let (id, now_ms) = (d.id, ctx.clock.now_ms());
        ctx.blocking(move |s| s.set_paused(id, paused, now_ms))
            .await?;
        // The loop re-reads the flag when it wakes.
        d.wake.notify_one();
        tracing::info!(destination = %d.name, paused, "destination paused state changed by admin");
        let mut now = ctx.destinations_now(Some(d)).await?;
        now.pop()
            .map(Response::new)
            .ok_or_else(|| Status::internal("the destination vanished"))
    }
}

impl AdminContext {
    /// What one activity looks like on the tail, if it passes the filters.
    async fn tail_entry(
        self: &Arc<Self>,
        activity: Activity,
        source: Option<&str>,
        dest: Option<DestId>,
    ) -> Option<pb::TailEntry> {
        match activity {
            Activity::Ingested {
                event_id,
                source: event_source,
                event_type,
                duplicate,
            } => {
                // A duplicate is the event already shown, not a new one; and
                // a new event has no attempts to match a destination yet.
                if duplicate || source.is_some_and(|s| s != event_source) {
                    return None;
                }
                let summary = self
                    .blocking(move |s| s.event_summary(&event_id))
                    .await
                    .ok()
                    .flatten();
                let event = match summary {
                    Some(e) => {
                        if dest.is_some_and(|want| !e.event.destinations.contains(&want)) {
                            return None;
                        }
                        self.summary(&e.event, &e.jobs)
                    }
                    None => pb::EventSummary {
                        source: event_source,
                        event_type,
                        received_at_ms: self.clock.now_ms(),
                        ..Default::default()
                    },
                };
                Some(pb::TailEntry {
                    entry: Some(pb::tail_entry::Entry::Event(event)),
                })
            }
            Activity::Attempted {
                event_id,
                dest: attempted,
                attempt: record,
                ..
            } => {
                if dest.is_some_and(|want| want != attempted) {
                    return None;
                }
                if let Some(want) = source {
                    let id = event_id.clone();
                    let stored = self
                        .blocking(move |s| s.event_summary(&id))
                        .await
                        .ok()
                        .flatten();
                    if stored.is_none_or(|e| e.event.source() != want) {
                        return None;
                    }
                }
                Some(pb::TailEntry {
                    entry: Some(pb::tail_entry::Entry::Attempt(pb::AttemptOutcome {
                        event_id,
                        destination: self.dest_name(attempted),
                        attempt: Some(attempt(&record)),
                    })),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_urls_drop_credentials_and_queries() {
        assert_eq!(
            display_url("https://user:pw@hooks.example.com:8443/in?token=abc#x"),
            "https://hooks.example.com:8443/in"
        );
        assert_eq!(
            display_url("http://127.0.0.1/webhooks"),
            "http://127.0.0.1/webhooks"
        );
        assert_eq!(display_url("not a url"), "<invalid url>");
    }
}
