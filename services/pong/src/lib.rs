//! The pong service.
