//! TODO(B2): config
