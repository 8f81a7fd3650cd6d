//! Tracing subscriber set-up for the operator process.
//!
//! `RUST_LOG` sets the filter (default `info,kube=warn`); [`LogFormat`] picks text or JSON lines.
//! This module only installs the subscriber: it never logs configuration or secrets.

use crate::config::LogFormat;
use tracing_subscriber::EnvFilter;

/// Filter used when `RUST_LOG` is unset or empty.
pub const DEFAULT_FILTER: &str = "info,kube=warn,kube_runtime=warn";

/// Installs the global tracing subscriber. Returns an error if one is already installed.
pub fn init(format: LogFormat) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    }
}
