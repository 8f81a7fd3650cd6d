//! TODO(B2): reconcile::status
