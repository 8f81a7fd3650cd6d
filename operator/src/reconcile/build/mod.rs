//! TODO(B1): desired-state builders, one file per owned resource
