//! The nodeipam controller: not built yet (a helper is building it).

use std::sync::Arc;

use crate::context::{Context, Stop, stopped};

/// Runs the controller until `stop` turns true.
pub async fn run(_ctx: Arc<Context>, stop: Stop) {
    stopped(stop).await
}
