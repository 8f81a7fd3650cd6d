//! TODO(B2): reconcile::observe
