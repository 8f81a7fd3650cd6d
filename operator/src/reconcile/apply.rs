//! TODO(B2): reconcile::apply
