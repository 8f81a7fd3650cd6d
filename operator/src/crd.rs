//! TODO(B1): crd
