//! TODO(B2): telemetry
