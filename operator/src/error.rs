//! TODO(B2): error
