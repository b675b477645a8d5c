//! What every controller gets: the API client, the event recorder and the settings, and
//! the stop signal.

use std::sync::Arc;

use rkube_component::Recorder;
use tokio::sync::watch;

use crate::Config;

/// Turns `true` when the controllers must stop (shutdown or lost leadership).
pub type Stop = watch::Receiver<bool>;

/// Shared by every controller.
#[derive(Clone)]
pub struct Context {
    /// The API client.
    pub client: kube::Client,
    /// Writes core/v1 Events (`kubectl describe` shows them).
    pub recorder: Recorder,
    /// The controller manager's settings.
    pub config: Arc<Config>,
}

/// Completes when `stop` turns true (or its sender is gone); for
/// `Controller::graceful_shutdown_on`.
pub async fn stopped(mut stop: Stop) {
    while !*stop.borrow() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}
