//! pingpong-operator library.
