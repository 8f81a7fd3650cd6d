//! TODO(B1): credentials
