//! TODO(B2): leader
