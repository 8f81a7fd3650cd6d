//! Shared building blocks of the ping and pong services.
