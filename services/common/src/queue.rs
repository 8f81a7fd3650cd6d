//! The validated name of the work queue. Its own module so that parsing
//! (`config`) and declaring (`topology`) both depend on
//! it, and not on each other.

use std::fmt;

/// A validated AMQP queue name; `<name>.dead` is its dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueName(String);

impl QueueName {
    /// Longest accepted name, so that `<name>.dead` fits AMQP's 255 bytes.
    pub const MAX_LEN: usize = 250;

    /// Validates a queue name: 1..=250 bytes, printable, not `amq.`-reserved.
    pub fn new(name: &str) -> Result<Self, &'static str> {
        if name.is_empty() || name.len() > Self::MAX_LEN {
            return Err("a queue name of 1 to 250 bytes");
        }
        if name.starts_with("amq.") {
            return Err("a queue name not starting with the reserved prefix amq.");
        }
        if name.chars().any(char::is_control) {
            return Err("a queue name without control characters");
        }
        Ok(Self(name.to_owned()))
    }

    /// A name known to be valid (a constant of ours), for a fallback that
    /// must not fail.
    pub(crate) fn unchecked(name: &str) -> Self {
        Self(name.to_owned())
    }

    /// The queue name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name of the dead-letter queue: `<name>.dead`.
    pub fn dead_letter(&self) -> String {
        format!("{}.dead", self.0)
    }
}

impl fmt::Display for QueueName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
