//! TODO(B2): server
