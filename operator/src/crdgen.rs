//! TODO(B1): crdgen
