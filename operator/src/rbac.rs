//! TODO(B2): rbac
