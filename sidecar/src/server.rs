//! `edgehook serve`: opens the store, starts the group-commit writer and the
//! dispatcher, and serves the ingest API until `shutdown` is cancelled. Then
//! it stops taking events, commits what was already submitted, lets
//! in-flight deliveries finish within the grace period, and flushes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use edgehook_proto::v1::ingest_server::IngestServer;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::dispatch::{self, Destination};
use crate::ingest::{IngestService, Writer};
use crate::routing::Router;
use crate::store::{SledStore, Store, StoreError};

/// How long in-flight deliveries may run on after shutdown begins.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot open the data directory {path}: {source}")]
    Store { path: String, source: StoreError },
    #[error("destination {name}: {message}")]
    Destination { name: String, message: String },
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("ingest server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

pub async fn run(
    config: Config,
    ingest: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let path = config.data_dir.clone();
    let durability = config.durability;
    let opened = tokio::task::spawn_blocking(move || SledStore::open(&path, durability)).await;
    let store: Arc<dyn Store> = match opened {
        Ok(Ok(s)) => Arc::new(s),
        Ok(Err(source)) => {
            return Err(ServeError::Store {
                path: config.data_dir.display().to_string(),
                source,
            });
        }
        Err(join) => {
            return Err(ServeError::Store {
                path: config.data_dir.display().to_string(),
                source: StoreError::Io(std::io::Error::other(join.to_string())),
            });
        }
    };

    let mut routed = Vec::new();
    let mut destinations = Vec::new();
    let mut wakers = HashMap::new();
    for d in &config.destinations {
        let id = store
            .destination_id(&d.name)
            .map_err(|e| ServeError::Destination {
                name: d.name.clone(),
                message: e.to_string(),
            })?;
        let signing_key = match &d.signing_secret {
            None => None,
            Some(s) => Some(
                s.resolve()
                    .and_then(|text| crate::signing::decode_secret(&text).map_err(str::to_string))
                    .map_err(|message| ServeError::Destination {
                        name: d.name.clone(),
                        message,
                    })?,
            ),
        };
        let wake = Arc::new(Notify::new());
        wakers.insert(id, wake.clone());
        routed.push((id, d));
        destinations.push((
            Arc::new(Destination {
                id,
                name: d.name.clone(),
                url: d.url.clone(),
                timeout: Duration::from_millis(d.timeout_ms),
                max_concurrency: d.max_concurrency,
                signing_key,
                retry: d.retry.into(),
            }),
            wake,
        ));
    }
    let router = Router::new(routed);

    let (writer, writer_task) = Writer::spawn(
        store.clone(),
        router,
        wakers,
        config.ingest.queue_capacity,
        config.ingest.max_batch,
    );
    let dispatch_stop = CancellationToken::new();
    let mut dispatchers = dispatch::spawn(
        destinations,
        store.clone(),
        dispatch_stop.clone(),
        SHUTDOWN_GRACE,
    )?;

    let ingest_service = IngestServer::new(IngestService::new(writer))
        .max_decoding_message_size(config.ingest.max_message_bytes);
    tracing::info!(
        ingest = %ingest.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        data_dir = %config.data_dir.display(),
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
    dispatch_stop.cancel();
    while dispatchers.join_next().await.is_some() {}
    let flushed = tokio::task::spawn_blocking(move || store.commit(Vec::new())).await;
    if let Ok(Err(e)) = flushed {
        tracing::error!(error = %e, "final flush failed");
    }
    tracing::info!("edgehook sidecar stopped");
    served.map_err(ServeError::from)
}
