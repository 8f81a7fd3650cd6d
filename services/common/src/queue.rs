//! The validated name of the work queue and its partitions. Its own module
//! so that parsing (`config`) and declaring (`topology`) both depend on
//! it, and not on each other.
//!
//! **Partitions.** One queue is one Erlang process on one core of one broker
//! node, whatever the cluster's size. `RABBITMQ_PARTITIONS=N` spreads the work
//! over N queues: partition 0 is the queue itself and partition `i > 0` is
//! `<queue>.<i>`, each with its own dead-letter queue. Partition 0 keeps the
//! queue's name, so a stack that goes from one partition to several keeps its
//! backlog where pong already consumes it. ping sends each message to the
//! partition its id selects ([`Partitions::of`]); pong consumes them all.

use std::fmt;
use std::num::NonZeroU8;
use std::str::FromStr;

use uuid::Uuid;

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

    /// The queue of partition `index`: this queue for 0, `<name>.<index>`
    /// otherwise. Its length is checked by [`Partitions::max_queue_len`].
    pub fn partition(&self, index: u8) -> Self {
        match index {
            0 => self.clone(),
            index => Self(format!("{}.{index}", self.0)),
        }
    }

    /// The name of the dead-letter queue: `<name>.dead`.
    pub fn dead_letter(&self) -> String {
        format!("{}.dead", self.0)
    }
}

/// How many queues the work is spread over (`RABBITMQ_PARTITIONS`): 1 to
/// [`Partitions::MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partitions(NonZeroU8);

impl Partitions {
    /// One queue: the default, and what every stack had before partitions.
    pub const ONE: Self = Self(NonZeroU8::MIN);
    /// Most partitions: past the cores of any broker cluster we expect, and
    /// short enough names (`<queue>.31.dead`).
    pub const MAX: u8 = 32;

    /// `count` partitions, if 1 to [`Self::MAX`].
    pub fn new(count: u8) -> Option<Self> {
        NonZeroU8::new(count)
            .filter(|count| count.get() <= Self::MAX)
            .map(Self)
    }

    /// The number of partitions.
    pub fn get(self) -> u8 {
        self.0.get()
    }

    /// The partition of the message `id`: its last 64 bits modulo the count.
    /// Random (v4) and name-based (v5, from an `Idempotency-Key`) ids are
    /// uniform there, so partitions fill evenly, and a retried id always
    /// lands in the same partition.
    pub fn of(self, id: &Uuid) -> u8 {
        let (_, low) = id.as_u64_pair();
        // The remainder is below `self.get()`, which is a u8.
        (low % u64::from(self.get())) as u8
    }

    /// The queues of `queue`'s partitions, partition 0 first.
    pub fn queues(self, queue: &QueueName) -> Vec<QueueName> {
        (0..self.get())
            .map(|index| queue.partition(index))
            .collect()
    }

    /// Longest queue name that leaves room for the partitions' names and
    /// their dead-letter queues in AMQP's 255 bytes.
    pub fn max_queue_len(self) -> usize {
        match self.get() {
            1 => QueueName::MAX_LEN,
            count => QueueName::MAX_LEN - 1 - (count - 1).to_string().len(),
        }
    }
}

impl Default for Partitions {
    fn default() -> Self {
        Self::ONE
    }
}

impl FromStr for Partitions {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse::<u8>().ok().and_then(Self::new).ok_or(())
    }
}

impl fmt::Display for Partitions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.get())
    }
}

impl fmt::Display for QueueName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_zero_is_the_queue_itself() {
        let queue = QueueName::new("work").unwrap();
        let names: Vec<String> = Partitions::new(3)
            .unwrap()
            .queues(&queue)
            .iter()
            .map(|q| q.to_string())
            .collect();
        assert_eq!(names, ["work", "work.1", "work.2"]);
        assert_eq!(queue.partition(2).dead_letter(), "work.2.dead");
        assert_eq!(Partitions::ONE.queues(&queue), [queue]);
    }

    #[test]
    fn counts_are_bounded() {
        assert_eq!("1".parse(), Ok(Partitions::ONE));
        assert_eq!("32".parse::<Partitions>().map(Partitions::get), Ok(32));
        for bad in ["0", "33", "-1", "", " 2", "two"] {
            assert_eq!(bad.parse::<Partitions>(), Err(()), "{bad:?}");
        }
    }

    #[test]
    fn the_longest_names_fit_amqp() {
        for count in 1..=Partitions::MAX {
            let partitions = Partitions::new(count).unwrap();
            let queue = QueueName::new(&"q".repeat(partitions.max_queue_len())).unwrap();
            for name in partitions.queues(&queue) {
                assert!(
                    name.dead_letter().len() <= 255,
                    "{count}: {}",
                    name.dead_letter().len()
                );
            }
        }
    }

    #[test]
    fn ids_spread_evenly_and_stay_put() {
        let partitions = Partitions::new(4).unwrap();
        let mut counts = [0u32; 4];
        for _ in 0..4000 {
            let id = Uuid::new_v4();
            let partition = partitions.of(&id);
            assert_eq!(partitions.of(&id), partition);
            counts[usize::from(partition)] += 1;
        }
        // 1000 expected each; 4 standard deviations is about 110.
        assert!(
            counts.iter().all(|&n| (850..=1150).contains(&n)),
            "{counts:?}"
        );
        assert_eq!(Partitions::ONE.of(&Uuid::new_v4()), 0);
    }
}
