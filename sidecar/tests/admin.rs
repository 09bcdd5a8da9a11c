//! The admin API, health, reflection and /metrics of a sidecar running
//! in-process, delivering to a real HTTP receiver.

mod support;

use std::collections::HashMap;

use edgehook_proto::v1::{
    DeadLetterFilter, DeliveryStatus, DestinationRequest, DestinationState, GetEventRequest,
    ListDeadLettersRequest, ListDestinationsRequest, ListEventsRequest, PurgeDeadLettersRequest,
    RedriveRequest, StatsRequest, TailRequest, tail_entry,
};
use prost::Message;
use serde_json::Value;
use support::{Admin, DESTINATION, DESTINATION_SECRET, Sidecar, TOKEN, eventually};
use tonic::Code;

async fn event_status(admin: &mut Admin, id: &str) -> Option<i32> {
    let detail = admin
        .get_event(GetEventRequest {
            id: id.into(),
            include_body: false,
        })
        .await
        .ok()?
        .into_inner();
    Some(detail.summary?.deliveries.first()?.status)
}

async fn wait_status(admin: &Admin, id: &str, want: DeliveryStatus) {
    eventually(&format!("event {id} to be {want:?}"), || {
        let mut a = admin.clone();
        let id = id.to_string();
        async move { (event_status(&mut a, &id).await == Some(want as i32)).then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn every_admin_call_needs_the_token_and_health_does_not() {
    let sidecar = Sidecar::start(200).await;
    // The token with its last character changed: compared in full, not by prefix.
    let mut one_off = format!("Bearer {TOKEN}");
    let last = one_off.pop().unwrap();
    one_off.push(if last == 'x' { 'y' } else { 'x' });
    for auth in [
        None,
        Some("Bearer wrong-token"),
        Some(TOKEN),
        Some(one_off.as_str()),
    ] {
        let mut admin = sidecar.admin_with(auth).await;
        let err = admin.stats(StatsRequest {}).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{auth:?}");
        assert!(!err.message().contains("wrong-token"), "{}", err.message());
        let err = admin
            .list_events(ListEventsRequest::default())
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated);
    }
    let mut health = tonic_health::pb::health_client::HealthClient::new(sidecar.channel().await);
    let answer = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health needs no token")
        .into_inner();
    assert_eq!(
        answer.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    let answer = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "edgehook.v1.Admin".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        answer.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    let stats = sidecar.admin().await.stats(StatsRequest {}).await;
    assert!(stats.is_ok(), "the right token works: {stats:?}");
    let metrics =
        prometheus_parse::Scrape::parse(sidecar.scrape().await.lines().map(|l| Ok(l.to_string())))
            .unwrap();
    let refused = metrics
        .samples
        .iter()
        .find(|s| s.metric == "edgehook_admin_unauthenticated_total")
        .expect("the unauthenticated counter");
    assert_eq!(refused.value, prometheus_parse::Value::Counter(8.0));
    sidecar.stop().await.unwrap();
}

#[tokio::test]
async fn a_failed_webhook_is_found_shown_redriven_once_and_delivered() {
    let sidecar = Sidecar::start(400).await;
    let mut admin = sidecar.admin().await;
    let id = sidecar
        .publish("stripe", "evt_redrive_1", "invoice.paid")
        .await;
    let other = sidecar.publish("github", "gh-1", "push").await;
    wait_status(&admin, &id, DeliveryStatus::Dead).await;
    wait_status(&admin, &other, DeliveryStatus::Dead).await;

    // Find it by the provider's id, by source, by status and type.
    let found = admin
        .list_events(ListEventsRequest {
            provider_event_id: "evt_redrive_1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.events.len(), 1);
    assert_eq!(found.events[0].id, id);
    let dead_stripe = admin
        .list_events(ListEventsRequest {
            source: "stripe".into(),
            status: DeliveryStatus::Dead as i32,
            event_type: "invoice.*".into(),
            destination: DESTINATION.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = dead_stripe.events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, [id.as_str()]);
    // Newest first, paged.
    let page1 = admin
        .list_events(ListEventsRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page1.events[0].id, other);
    assert!(!page1.next_page_token.is_empty());
    let page2 = admin
        .list_events(ListEventsRequest {
            page_size: 1,
            page_token: page1.next_page_token,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page2.events[0].id, id);

    // Every attempt, with what the receiver said; the body only on request.
    let detail = admin
        .get_event(GetEventRequest {
            id: id.clone(),
            include_body: true,
        })
        .await
        .unwrap()
        .into_inner();
    let summary = detail.summary.clone().unwrap();
    assert_eq!(summary.provider_event_id, "evt_redrive_1");
    assert_eq!(summary.request_id, "req-evt_redrive_1");
    assert_eq!(detail.method, "POST");
    assert_eq!(detail.client_address, "203.0.113.7");
    assert!(String::from_utf8_lossy(&detail.body).contains("evt_redrive_1"));
    assert_eq!(detail.headers[0].name, "content-type");
    let delivery = &detail.deliveries[0];
    assert_eq!(delivery.summary.as_ref().unwrap().destination, DESTINATION);
    assert_eq!(delivery.attempts.len(), 1);
    let first = &delivery.attempts[0];
    assert_eq!(
        (first.number, first.status_code, first.outcome.as_str()),
        (1, 400, "give_up")
    );
    assert_eq!(first.response_body, b"receiver said 400");
    let without_body = admin
        .get_event(GetEventRequest {
            id: id.clone(),
            include_body: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(without_body.body.is_empty());

    // The dead-letter queue, filtered.
    let dead = admin
        .list_dead_letters(ListDeadLettersRequest {
            filter: Some(DeadLetterFilter {
                source: "stripe".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(dead.dead_letters.len(), 1);
    let letter = &dead.dead_letters[0];
    assert_eq!(
        (letter.event_id.as_str(), letter.destination.as_str()),
        (id.as_str(), DESTINATION)
    );
    assert_eq!((letter.last_status_code, letter.attempts), (400, 1));

    // Watch, redrive, see it succeed; a second redrive does nothing.
    let mut tail = admin
        .tail(TailRequest {
            source: "stripe".into(),
            destination: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    sidecar.receiver.answer(200);
    let hits_before = sidecar.receiver.hits();
    let redriven = admin
        .redrive(RedriveRequest {
            event_ids: vec![id.clone()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(redriven.requeued, 1);
    assert!(redriven.skipped.is_empty());
    let again = admin
        .redrive(RedriveRequest {
            event_ids: vec![id.clone()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.requeued, 0);
    assert_eq!(again.skipped, std::slice::from_ref(&id));
    let entry = tokio::time::timeout(std::time::Duration::from_secs(10), tail.message())
        .await
        .expect("an attempt on the tail")
        .unwrap()
        .expect("the stream is open");
    match entry.entry {
        Some(tail_entry::Entry::Attempt(a)) => {
            assert_eq!(a.event_id, id);
            assert_eq!(a.destination, DESTINATION);
            let at = a.attempt.unwrap();
            assert_eq!((at.number, at.status_code), (2, 200));
            assert_eq!(at.outcome, "delivered");
        }
        other => panic!("expected the redriven attempt, got {other:?}"),
    }
    wait_status(&admin, &id, DeliveryStatus::Delivered).await;
    assert_eq!(sidecar.receiver.hits(), hits_before + 1, "delivered once");
    let dead = admin
        .list_dead_letters(ListDeadLettersRequest::default())
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = dead
        .dead_letters
        .iter()
        .map(|d| d.event_id.as_str())
        .collect();
    assert_eq!(ids, [other.as_str()], "only the github event is still dead");

    // Purge: refused without a filter, then by filter.
    let err = admin
        .purge_dead_letters(PurgeDeadLettersRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("filter:"), "{}", err.message());
    let purged = admin
        .purge_dead_letters(PurgeDeadLettersRequest {
            filter: Some(DeadLetterFilter {
                destination: DESTINATION.into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(purged.purged, 1);
    let dead = admin
        .list_dead_letters(ListDeadLettersRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(dead.dead_letters.is_empty());

    let stats = admin.stats(StatsRequest {}).await.unwrap().into_inner();
    assert_eq!((stats.events, stats.delivered, stats.dead), (2, 1, 0));
    assert_eq!(stats.destinations[0].name, DESTINATION);
    assert!(stats.storage_bytes > 0);
    assert!(stats.started_at_ms > 0);
    sidecar.stop().await.unwrap();
}

#[tokio::test]
async fn a_paused_destination_holds_its_queue_until_resumed() {
    let sidecar = Sidecar::start(200).await;
    let mut admin = sidecar.admin().await;
    let paused = admin
        .pause_destination(DestinationRequest {
            name: DESTINATION.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(paused.state, DestinationState::Paused as i32);
    let id = sidecar
        .publish("stripe", "evt_paused", "invoice.paid")
        .await;
    let listed = admin
        .list_destinations(ListDestinationsRequest {})
        .await
        .unwrap()
        .into_inner();
    let d = &listed.destinations[0];
    assert_eq!(d.name, DESTINATION);
    assert_eq!(d.state, DestinationState::Paused as i32);
    assert_eq!(d.queue_depth, 1);
    assert_eq!(d.success_rate, -1.0, "no attempts yet");
    assert!(
        d.url.starts_with("http://127.0.0.1:") && d.url.ends_with("/hook"),
        "{}",
        d.url
    );
    assert_eq!(
        event_status(&mut admin, &id).await,
        Some(DeliveryStatus::Pending as i32)
    );
    let resumed = admin
        .resume_destination(DestinationRequest {
            name: DESTINATION.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resumed.state, DestinationState::Active as i32);
    wait_status(&admin, &id, DeliveryStatus::Delivered).await;
    let listed = admin
        .list_destinations(ListDestinationsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.destinations[0].queue_depth, 0);
    assert_eq!(listed.destinations[0].success_rate, 1.0);
    sidecar.stop().await.unwrap();
}

#[tokio::test]
async fn bad_requests_get_codes_and_messages_a_person_can_act_on() {
    let sidecar = Sidecar::start(200).await;
    let mut admin = sidecar.admin().await;
    let expect = |r: Result<_, tonic::Status>, code: Code, starts: &str| {
        let e = r.map(|_: ()| ()).unwrap_err();
        assert_eq!(e.code(), code, "{}", e.message());
        assert!(
            e.message().contains(starts),
            "{:?} lacks {starts:?}",
            e.message()
        );
    };
    expect(
        admin
            .get_event(GetEventRequest {
                id: "evt_nope".into(),
                include_body: false,
            })
            .await
            .map(drop),
        Code::NotFound,
        "evt_nope",
    );
    expect(
        admin.get_event(GetEventRequest::default()).await.map(drop),
        Code::InvalidArgument,
        "id:",
    );
    expect(
        admin
            .list_events(ListEventsRequest {
                page_size: 5000,
                ..Default::default()
            })
            .await
            .map(drop),
        Code::InvalidArgument,
        "page_size:",
    );
    expect(
        admin
            .list_events(ListEventsRequest {
                page_token: "garbage".into(),
                ..Default::default()
            })
            .await
            .map(drop),
        Code::InvalidArgument,
        "page_token:",
    );
    expect(
        admin
            .list_events(ListEventsRequest {
                destination: "nowhere".into(),
                ..Default::default()
            })
            .await
            .map(drop),
        Code::NotFound,
        "nowhere",
    );
    expect(
        admin
            .pause_destination(DestinationRequest {
                name: "nowhere".into(),
            })
            .await
            .map(drop),
        Code::NotFound,
        "billing",
    );
    expect(
        admin.redrive(RedriveRequest::default()).await.map(drop),
        Code::InvalidArgument,
        "filter:",
    );
    let everything = admin
        .redrive(RedriveRequest {
            all: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(everything.requeued, 0);
    sidecar.stop().await.unwrap();
}

/// Lists the services and reads the Admin service's methods through
/// reflection alone, with no compiled-in knowledge of the edgehook protos.
#[tokio::test]
async fn reflection_describes_the_services_without_protos() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let sidecar = Sidecar::start(200).await;
    let mut client = ServerReflectionClient::new(sidecar.channel().await);
    let ask = |m: MessageRequest| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(m),
    };
    let requests = vec![
        ask(MessageRequest::ListServices(String::new())),
        ask(MessageRequest::FileContainingSymbol(
            "edgehook.v1.Admin".into(),
        )),
    ];
    let mut answers = client
        .server_reflection_info(tokio_stream_iter(requests))
        .await
        .expect("reflection needs no token")
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        answers.message().await.unwrap().unwrap().message_response
    else {
        panic!("expected the service list");
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "edgehook.v1.Admin",
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection"
        ],
        "what the admin port serves, and nothing else"
    );
    let Some(MessageResponse::FileDescriptorResponse(files)) =
        answers.message().await.unwrap().unwrap().message_response
    else {
        panic!("expected file descriptors");
    };
    let mut pool = prost_reflect::DescriptorPool::new();
    let set = prost_reflect::prost_types::FileDescriptorSet {
        file: files
            .file_descriptor_proto
            .iter()
            .map(|b| prost_reflect::prost_types::FileDescriptorProto::decode(b.as_slice()).unwrap())
            .collect(),
    };
    pool.add_file_descriptor_set(set).unwrap();
    let admin = pool.get_service_by_name("edgehook.v1.Admin").unwrap();
    let methods: HashMap<String, bool> = admin
        .methods()
        .map(|m| (m.name().to_string(), m.is_server_streaming()))
        .collect();
    for m in [
        "ListEvents",
        "GetEvent",
        "Redrive",
        "PauseDestination",
        "Stats",
    ] {
        assert_eq!(methods.get(m), Some(&false), "{m}");
    }
    assert_eq!(methods.get("Tail"), Some(&true));
    sidecar.stop().await.unwrap();
}

fn tokio_stream_iter<T: Send + 'static>(
    items: Vec<T>,
) -> impl tonic::codegen::tokio_stream::Stream<Item = T> + Send + 'static {
    tonic::codegen::tokio_stream::iter(items)
}

fn sample(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            prometheus_parse::Value::Histogram(h) => h.iter().map(|b| b.count).fold(0.0, f64::max),
            prometheus_parse::Value::Summary(_) => f64::NAN,
        })
}

async fn scrape(sidecar: &Sidecar) -> prometheus_parse::Scrape {
    let text = sidecar.scrape().await;
    assert!(!text.contains(DESTINATION_SECRET), "no secret in /metrics");
    assert!(!text.contains(TOKEN), "no token in /metrics");
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("valid text format")
}

#[tokio::test]
async fn metrics_parse_and_move_as_events_flow() {
    let sidecar = Sidecar::start(200).await;
    let admin = sidecar.admin().await;
    let before = scrape(&sidecar).await;
    assert_eq!(
        sample(
            &before,
            "edgehook_events_ingested_total",
            &[("source", "stripe")]
        ),
        None
    );
    assert_eq!(
        sample(
            &before,
            "edgehook_queue_depth",
            &[("destination", DESTINATION)]
        ),
        Some(0.0)
    );
    let id = sidecar.publish("stripe", "evt_m1", "invoice.paid").await;
    let dup = sidecar.publish("stripe", "evt_m1", "invoice.paid").await;
    assert_eq!(id, dup);
    wait_status(&admin, &id, DeliveryStatus::Delivered).await;
    let after = scrape(&sidecar).await;
    let get = |name: &str, labels: &[(&str, &str)]| sample(&after, name, labels);
    assert_eq!(
        get("edgehook_events_ingested_total", &[("source", "stripe")]),
        Some(1.0)
    );
    assert_eq!(
        get(
            "edgehook_events_deduplicated_total",
            &[("source", "stripe")]
        ),
        Some(1.0)
    );
    assert_eq!(
        get(
            "edgehook_delivery_attempts_total",
            &[("destination", DESTINATION), ("outcome", "delivered")]
        ),
        Some(1.0)
    );
    assert_eq!(
        get(
            "edgehook_delivery_duration_seconds_count",
            &[("destination", DESTINATION)]
        ),
        Some(1.0)
    );
    assert_eq!(
        get("edgehook_group_commit_batch_size_count", &[]),
        Some(2.0)
    );
    assert!(get("edgehook_group_commit_seconds_count", &[]).is_some());
    assert_eq!(
        get("edgehook_breaker_state", &[("destination", DESTINATION)]),
        Some(0.0)
    );
    assert_eq!(
        get("edgehook_dead_letters", &[("destination", DESTINATION)]),
        Some(0.0)
    );
    assert_eq!(
        get(
            "edgehook_oldest_due_age_seconds",
            &[("destination", DESTINATION)]
        ),
        Some(0.0)
    );
    assert!(get("edgehook_storage_bytes", &[]).unwrap() > 0.0);

    // Prometheus asks for OpenMetrics and gets it.
    let response = reqwest::Client::new()
        .get(format!("http://{}/metrics", sidecar.metrics))
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
        )
        .send()
        .await
        .unwrap();
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = response.text().await.unwrap();
    assert!(text.contains("edgehook_events_ingested_total{source=\"stripe\"} 1"));
    assert!(text.ends_with("# EOF\n"));
    sidecar.stop().await.unwrap();
}

/// Log lines captured from this test's thread.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

/// The sidecar runs on this test's single thread, so a thread-local
/// subscriber sees every line it logs.
#[tokio::test]
async fn json_logs_carry_each_delivery_outcome_and_no_secret() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(captured.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let sidecar = Sidecar::start(503).await;
    let admin = sidecar.admin().await;
    let mut wrong = sidecar.admin_with(Some("Bearer wrong-token-xyz")).await;
    assert!(wrong.stats(StatsRequest {}).await.is_err());
    let id = sidecar.publish("stripe", "evt_logs", "invoice.paid").await;
    wait_status(&admin, &id, DeliveryStatus::Dead).await;
    sidecar.stop().await.unwrap();

    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    for secret in [TOKEN, "wrong-token-xyz", DESTINATION_SECRET] {
        assert!(!text.contains(secret), "{secret} was logged");
    }
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let outcomes: Vec<(u64, &str)> = lines
        .iter()
        .filter(|l| l["fields"]["event_id"] == id.as_str())
        .filter(|l| l["fields"]["destination"] == DESTINATION)
        .filter(|l| l["fields"]["status"] == 503)
        .map(|l| {
            (
                l["fields"]["attempt"].as_u64().unwrap(),
                l["fields"]["message"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            (1, "attempt failed; will retry"),
            (2, "giving up; dead-lettered")
        ],
        "one line per delivery outcome"
    );
}

#[tokio::test]
async fn an_admin_listener_without_a_token_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = edgehook_sidecar::config::Config::parse(&format!(
        "data_dir = {:?}\n",
        dir.path().display().to_string()
    ))
    .unwrap();
    let bind = || tokio::net::TcpListener::bind("127.0.0.1:0");
    let listeners = edgehook_sidecar::server::Listeners {
        ingest: bind().await.unwrap(),
        admin: Some(bind().await.unwrap()),
        metrics: None,
    };
    let err = edgehook_sidecar::server::run_with(
        config,
        listeners,
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().starts_with("admin.token: not set"), "{err}");
}
