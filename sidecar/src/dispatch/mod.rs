//! Dispatch: delivers stored events to their destinations. Each destination
//! runs its own loop (see `destination`), so one that is down never delays
//! another. What an attempt's result means is decided in `outcome`; when to
//! try again, in `retry`; whether to try at all, in `breaker` and `rate`.

pub mod attempt;
pub mod breaker;
pub mod destination;
pub mod outcome;
pub mod rate;
pub mod retry;

use std::sync::Arc;

use tokio::sync::Notify;
use tokio::task::JoinSet;

pub use attempt::{HttpTransport, Transport};
pub use destination::{Destination, Shared};

/// Starts one loop per destination; they stop when `shared.shutdown` is
/// cancelled, after letting in-flight attempts finish within the grace.
pub fn spawn<T: Transport + Clone>(
    destinations: Vec<(Arc<Destination>, Arc<Notify>)>,
    shared: Arc<Shared<T>>,
) -> JoinSet<()> {
    let mut set = JoinSet::new();
    for (dest, wake) in destinations {
        set.spawn(destination::run(dest, shared.clone(), wake));
    }
    set
}
