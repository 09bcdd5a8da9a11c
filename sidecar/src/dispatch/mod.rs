//! Dispatch: delivers stored events to their destinations. Each destination
//! runs its own loop (see `destination`), so one that is down never delays
//! another. What an attempt's result means is decided in `outcome`; when to
//! try again, in `retry`.

mod attempt;
pub mod destination;
pub mod outcome;
pub mod retry;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use destination::Destination;

use crate::store::Store;

/// Starts one loop per destination; they stop when `shutdown` is
/// cancelled, after letting in-flight attempts finish within `grace`.
pub fn spawn(
    destinations: Vec<(Arc<Destination>, Arc<Notify>)>,
    store: Arc<dyn Store>,
    shutdown: CancellationToken,
    grace: Duration,
) -> Result<JoinSet<()>, reqwest::Error> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("edgehook/", env!("CARGO_PKG_VERSION")))
        .build()?;
    let mut set = JoinSet::new();
    for (dest, wake) in destinations {
        set.spawn(destination::run(
            dest,
            store.clone(),
            client.clone(),
            wake,
            shutdown.clone(),
            grace,
        ));
    }
    Ok(set)
}
