//! The ping service.
