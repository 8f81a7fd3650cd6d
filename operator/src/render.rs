//! TODO(B1): render
