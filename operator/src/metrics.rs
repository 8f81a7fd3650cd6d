//! TODO(B2): metrics
