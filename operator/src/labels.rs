//! TODO(B1): labels
