//! TODO(B2): controller
