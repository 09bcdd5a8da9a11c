//! `edgehook serve`: opens the store, starts the group-commit writer and the
//! dispatcher, and serves the ingest API until `shutdown` is cancelled. Then
//! it stops taking events, commits what was already submitted, lets
//! in-flight deliveries finish within the grace period, and flushes.
//! Retention sweeps run beside them, and so do the admin API and
//! `/metrics` when their listeners are given; shutdown stops them too.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use edgehook_proto::v1::ingest_server::IngestServer;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::activity::Feed;
use crate::admin::{self, AdminContext, AdminService, DestinationInfo};
use crate::clock::Clock;
use crate::config::Config;
use crate::dispatch::{self, Destination, HttpTransport, Shared};
use crate::ingest::{IngestService, Writer, WriterConfig};
use crate::metrics::{self, Metrics};
use crate::retention;
use crate::routing::Router;
use crate::store::{SledStore, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot open the data directory {path}: {source}")]
    Store { path: String, source: StoreError },
    #[error("destination {name}: {message}")]
    Destination { name: String, message: String },
    #[error("{0}")]
    Routing(String),
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("ingest server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("admin.token: {0}")]
    AdminToken(String),
}

/// Where the sidecar listens. Without `admin` or `metrics` those are not
/// served (tests pass 127.0.0.1:0 listeners and read the bound ports).
pub struct Listeners {
    pub ingest: TcpListener,
    pub admin: Option<TcpListener>,
    pub metrics: Option<TcpListener>,
}

/// Serves ingest only.
pub async fn run(
    config: Config,
    ingest: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let listeners = Listeners {
        ingest,
        admin: None,
        metrics: None,
    };
    run_with(config, listeners, shutdown).await
}

pub async fn run_with(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let Listeners {
        ingest,
        admin: admin_listener,
        metrics: metrics_listener,
    } = listeners;
    // The token is read before anything starts, so a missing environment
    // variable fails the start, naming the key (never the value).
    let admin_token = match (&admin_listener, &config.admin.token) {
        (None, _) => None,
        (Some(_), None) => {
            return Err(ServeError::AdminToken(
                "not set; the admin API is served only with a token".into(),
            ));
        }
        (Some(_), Some(t)) => Some(t.resolve().map_err(ServeError::AdminToken)?),
    };
    let store = open_store(&config).await?;
    let clock = Clock::system();
    let feed = Feed::default();
    let metrics = Arc::new(Metrics::new());
    let mut admin_destinations = Vec::new();

    let mut routed = Vec::new();
    let mut destinations = Vec::new();
    let mut wakers = HashMap::new();
    for d in &config.destinations {
        let invalid = |message: String| ServeError::Destination {
            name: d.name.clone(),
            message,
        };
        let id = store
            .destination_id(&d.name)
            .map_err(|e| invalid(e.to_string()))?;
        let dest = Destination::from_config(id, d).map_err(invalid)?;
        let wake = Arc::new(Notify::new());
        wakers.insert(id, wake.clone());
        admin_destinations.push(DestinationInfo {
            name: d.name.clone(),
            id,
            url: admin::display_url(&d.url),
            wake: wake.clone(),
        });
        routed.push((id, d));
        destinations.push((Arc::new(dest), wake));
    }
    let router = Router::new(routed).map_err(ServeError::Routing)?;

    let (writer, writer_task) = Writer::spawn(
        store.clone(),
        WriterConfig {
            router,
            wakers,
            capacity: config.ingest.queue_capacity,
            max_batch: config.ingest.max_batch,
            min_free_disk_bytes: config.ingest.min_free_disk_bytes,
            feed: feed.clone(),
            metrics: metrics.clone(),
        },
    );
    let background_stop = CancellationToken::new();
    let shared = Arc::new(Shared {
        store: store.clone(),
        transport: HttpTransport::new()?,
        clock,
        feed: feed.clone(),
        shutdown: background_stop.clone(),
        grace: Duration::from_millis(config.shutdown_grace_ms),
        metrics: metrics.clone(),
    });
    let mut background = dispatch::spawn(destinations, shared);
    background.spawn(retention::run(
        store.clone(),
        config.retention,
        clock,
        background_stop.clone(),
    ));

    // The admin API and /metrics stop with ingest (on `shutdown`), before
    // the dispatcher drains.
    let mut side = tokio::task::JoinSet::new();
    let admin_addr = admin_listener.as_ref().and_then(|l| l.local_addr().ok());
    if let (Some(listener), Some(token)) = (admin_listener, admin_token) {
        let service = AdminService::new(AdminContext {
            store: store.clone(),
            destinations: admin_destinations,
            feed,
            metrics: metrics.clone(),
            clock,
            started_at_ms: clock.now_ms(),
            shutdown: shutdown.clone(),
        });
        let stop = shutdown.clone();
        side.spawn(async move {
            if let Err(e) = admin::serve(listener, service, token, stop).await {
                tracing::error!(error = %e, "admin API server failed");
            }
        });
    } else {
        tracing::info!("the admin API is off (set admin.token to serve it)");
    }
    let metrics_addr = metrics_listener.as_ref().and_then(|l| l.local_addr().ok());
    if let Some(listener) = metrics_listener {
        let (m, st, stop) = (metrics.clone(), store.clone(), shutdown.clone());
        side.spawn(async move {
            if let Err(e) = metrics::serve(listener, m, st, clock, stop).await {
                tracing::error!(error = %e, "metrics server failed");
            }
        });
    }

    let ingest_service = IngestServer::new(IngestService::new(writer))
        .max_decoding_message_size(config.ingest.max_message_bytes);
    tracing::info!(
        ingest = %ingest.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        admin = %admin_addr.map(|a| a.to_string()).unwrap_or_else(|| "off".into()),
        metrics = %metrics_addr.map(|a| a.to_string()).unwrap_or_else(|| "off".into()),
        data_dir = %config.data_dir.display(),
        durability = ?config.durability,
        destinations = config.destinations.len(),
        "edgehook sidecar serving"
    );
    let served = tonic::transport::Server::builder()
        .add_service(ingest_service)
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(ingest).with_nodelay(Some(true)),
            shutdown.cancelled(),
        )
        .await;

    // The server has dropped its Writer handles: the writer commits what is
    // queued and ends.
    let _ = writer_task.await;
    while side.join_next().await.is_some() {}
    background_stop.cancel();
    while background.join_next().await.is_some() {}
    let flushed = tokio::task::spawn_blocking(move || store.flush()).await;
    if let Ok(Err(e)) = flushed {
        tracing::error!(error = %e, "final flush failed");
    }
    tracing::info!("edgehook sidecar stopped");
    served.map_err(ServeError::from)
}

/// Opens sled off the async threads; the error names the data directory.
async fn open_store(config: &Config) -> Result<Arc<dyn Store>, ServeError> {
    let path = config.data_dir.clone();
    let durability = config.durability;
    let storage = config.storage.clone();
    let opened =
        tokio::task::spawn_blocking(move || SledStore::open(&path, durability, &storage)).await;
    let error = |source: StoreError| ServeError::Store {
        path: config.data_dir.display().to_string(),
        source,
    };
    match opened {
        Ok(Ok(s)) => Ok(Arc::new(s)),
        Ok(Err(source)) => Err(error(source)),
        Err(join) => Err(error(StoreError::Io(std::io::Error::other(
            join.to_string(),
        )))),
    }
}
