//! TODO(B1): reconcile::validate
