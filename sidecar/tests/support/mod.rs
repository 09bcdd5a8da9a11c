//! A real sidecar started in-process (`server::run_with` on 127.0.0.1:0
//! listeners, a temp data dir) with a real HTTP receiver as its one
//! destination, for the admin API, metrics and CLI tests.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::time::Duration;

use edgehook_proto::v1::admin_client::AdminClient;
use edgehook_proto::v1::ingest_client::IngestClient;
use edgehook_proto::v1::{Event, Header};
use edgehook_sidecar::config::Config;
use edgehook_sidecar::server::{self, Listeners};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::metadata::AsciiMetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

pub const TOKEN: &str = "test-admin-token-7f3a9c";
pub const DESTINATION: &str = "billing";
/// A secret header the destination sends; it must never show up anywhere.
pub const DESTINATION_SECRET: &str = "dest-header-secret-51b2";

/// Polls `f` until it gives `Some`, for at most 10 s.
pub async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An HTTP receiver answering with a status that tests can change.
#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    status: Arc<AtomicU16>,
    hits: Arc<AtomicUsize>,
}

impl Receiver {
    pub async fn start(status: u16) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let status = Arc::new(AtomicU16::new(status));
        let hits = Arc::new(AtomicUsize::new(0));
        let (s, h) = (status.clone(), hits.clone());
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move || {
                let (s, h) = (s.clone(), h.clone());
                async move {
                    h.fetch_add(1, Ordering::SeqCst);
                    let code = axum::http::StatusCode::from_u16(s.load(Ordering::SeqCst)).unwrap();
                    (code, format!("receiver said {}", code.as_u16()))
                }
            }),
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            url: format!("http://{addr}/hook"),
            status,
            hits,
        }
    }

    pub fn answer(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

pub struct Sidecar {
    pub ingest: SocketAddr,
    pub admin: SocketAddr,
    pub metrics: SocketAddr,
    pub receiver: Receiver,
    stop: CancellationToken,
    task: JoinHandle<Result<(), server::ServeError>>,
    _dir: tempfile::TempDir,
}

pub type Admin = AdminClient<InterceptedService<Channel, Bearer>>;

/// Adds the given `authorization` value, if any.
#[derive(Clone)]
pub struct Bearer(Option<AsciiMetadataValue>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            r.metadata_mut().insert("authorization", v.clone());
        }
        Ok(r)
    }
}

impl Sidecar {
    /// A sidecar whose one destination, `billing`, posts to a receiver that
    /// answers `status`; retries are fast and give up after 2 attempts.
    pub async fn start(status: u16) -> Sidecar {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let receiver = Receiver::start(status).await;
        let dir = tempfile::tempdir().unwrap();
        let toml = format!(
            "data_dir = {data:?}\ndurability = \"flush\"\n\
             [admin]\ntoken = {TOKEN:?}\n\
             [[destinations]]\nname = \"{DESTINATION}\"\nurl = \"{url}\"\ntimeout_ms = 2000\n\
             headers = {{ x-api-key = {DESTINATION_SECRET:?} }}\n\
             retry = {{ initial_ms = 20, max_delay_ms = 50, max_attempts = 2, max_age_s = 600 }}\n",
            data = dir.path().join("data").display().to_string(),
            url = receiver.url,
        );
        let config = Config::parse(&toml).expect("test config");
        let bind = || TcpListener::bind("127.0.0.1:0");
        let (ingest, admin, metrics) = (
            bind().await.unwrap(),
            bind().await.unwrap(),
            bind().await.unwrap(),
        );
        let addrs = (
            ingest.local_addr().unwrap(),
            admin.local_addr().unwrap(),
            metrics.local_addr().unwrap(),
        );
        let stop = CancellationToken::new();
        let task = tokio::spawn(server::run_with(
            config,
            Listeners {
                ingest,
                admin: Some(admin),
                metrics: Some(metrics),
            },
            stop.clone(),
        ));
        Sidecar {
            ingest: addrs.0,
            admin: addrs.1,
            metrics: addrs.2,
            receiver,
            stop,
            task,
            _dir: dir,
        }
    }

    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin)
    }

    pub async fn channel(&self) -> Channel {
        eventually("the admin API to accept connections", || async {
            Channel::from_shared(self.admin_url())
                .unwrap()
                .connect()
                .await
                .ok()
        })
        .await
    }

    /// An admin client sending `authorization: <auth>` (None: nothing).
    pub async fn admin_with(&self, auth: Option<&str>) -> Admin {
        let value = auth.map(|a| a.parse().unwrap());
        AdminClient::with_interceptor(self.channel().await, Bearer(value))
    }

    /// An admin client with the right token.
    pub async fn admin(&self) -> Admin {
        self.admin_with(Some(&format!("Bearer {TOKEN}"))).await
    }

    /// Publishes an event as the filter would and returns its id.
    pub async fn publish(&self, source: &str, provider_id: &str, event_type: &str) -> String {
        let mut client = eventually("the ingest API", || async {
            IngestClient::connect(format!("http://{}", self.ingest))
                .await
                .ok()
        })
        .await;
        let ack = client
            .publish(Event {
                source: source.into(),
                received_at_ms: edgehook_sidecar::clock::now_ms(),
                method: "POST".into(),
                path: format!("/hooks/{source}"),
                headers: vec![Header {
                    name: "content-type".into(),
                    value: b"application/json".to_vec(),
                }],
                client_address: "203.0.113.7".into(),
                provider_event_id: provider_id.into(),
                event_type: event_type.into(),
                body: format!(r#"{{"id":"{provider_id}","type":"{event_type}"}}"#).into_bytes(),
                request_id: format!("req-{provider_id}"),
                ..Default::default()
            })
            .await
            .expect("publish")
            .into_inner();
        ack.event_id
    }

    pub async fn scrape(&self) -> String {
        let url = format!("http://{}/metrics", self.metrics);
        let response = reqwest::get(&url).await.expect("GET /metrics");
        assert!(response.status().is_success());
        response.text().await.unwrap()
    }

    /// Graceful shutdown; returns what `run_with` returned.
    pub async fn stop(self) -> Result<(), server::ServeError> {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the sidecar stops within 10 s")
            .expect("the sidecar task")
    }
}
