//! Broker node addresses: `RABBITMQ_ADDRESSES=host:port,host:port`.
//!
//! A [`BrokerAddresses`] list is never empty and holds at most
//! [`BrokerAddresses::MAX`] entries, so the position of the node in use is a
//! bounded value for metrics. Parsing only; connecting lives in [`crate::amqp`].

use std::fmt;
use std::num::NonZeroU16;
use std::str::FromStr;

/// Default AMQP port, used when an address names no port.
pub const DEFAULT_AMQP_PORT: NonZeroU16 = match NonZeroU16::new(5672) {
    Some(port) => port,
    None => NonZeroU16::MIN,
};

/// One broker node: a host name or IP address and an AMQP port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddress {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// AMQP port.
    pub port: NonZeroU16,
}

impl BrokerAddress {
    /// An address from parts; the host is checked like [`FromStr`] does.
    pub fn new(host: &str, port: NonZeroU16) -> Result<Self, &'static str> {
        if !valid_host(host) {
            return Err("a host name or IP address");
        }
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }
}

fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && !host
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '/' | ',' | '@'))
}

impl FromStr for BrokerAddress {
    type Err = &'static str;

    /// `host`, `host:port`, `[v6]` or `[v6]:port`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        const EXPECTED: &str = "host:port, e.g. rabbitmq-0.rabbitmq:5672";
        let text = text.trim();
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or(EXPECTED)?;
            match after {
                "" => (host, None),
                _ => (host, Some(after.strip_prefix(':').ok_or(EXPECTED)?)),
            }
        } else {
            match text.split_once(':') {
                Some((host, port)) if !port.contains(':') => (host, Some(port)),
                Some(_) => return Err("IPv6 addresses in brackets: [::1]:5672"),
                None => (text, None),
            }
        };
        let port = match port {
            None => DEFAULT_AMQP_PORT,
            Some(port) => port.parse().map_err(|_| "a TCP port number 1-65535")?,
        };
        Self::new(host, port).map_err(|_| EXPECTED)
    }
}

impl fmt::Display for BrokerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// The broker nodes to try, in order: never empty, at most [`Self::MAX`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddresses(Vec<BrokerAddress>);

impl BrokerAddresses {
    /// Most addresses accepted (keeps the address position a small number).
    pub const MAX: usize = 16;

    /// A list of one address.
    pub fn single(address: BrokerAddress) -> Self {
        Self(vec![address])
    }

    /// The addresses in the configured order.
    pub fn as_slice(&self) -> &[BrokerAddress] {
        &self.0
    }

    /// The address at `position` modulo the list length (never panics).
    pub fn get(&self, position: usize) -> &BrokerAddress {
        &self.0[position % self.0.len()]
    }

    /// Number of addresses (at least 1).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: the list is never empty. (For clippy's `len_without_is_empty`.)
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromStr for BrokerAddresses {
    type Err = String;

    /// A comma-separated list; blanks around entries are ignored.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut addresses = Vec::new();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let address = entry
                .parse()
                .map_err(|expected| format!("{expected} (in entry {entry:?})"))?;
            addresses.push(address);
        }
        if addresses.is_empty() {
            return Err("a comma-separated list of host:port".to_owned());
        }
        if addresses.len() > Self::MAX {
            return Err(format!("at most {} addresses", Self::MAX));
        }
        Ok(Self(addresses))
    }
}

impl fmt::Display for BrokerAddresses {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, address) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{address}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hosts_ports_and_ipv6() {
        let list: BrokerAddresses = " a:5673, b ,[::1]:5674,[fe80::1]".parse().unwrap();
        let shown: Vec<String> = list.as_slice().iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["a:5673", "b:5672", "[::1]:5674", "[fe80::1]:5672"]);
        assert_eq!(list.to_string(), "a:5673,b:5672,[::1]:5674,[fe80::1]:5672");
        assert_eq!(list.get(5).host, "b");
    }

    #[test]
    fn rejects_bad_entries() {
        for bad in [
            "", " , ", "a:0", "a:70000", "a b:1", "::1:5672", "[::1", "a/b:1", "u@h:1",
        ] {
            assert!(bad.parse::<BrokerAddresses>().is_err(), "{bad:?} accepted");
        }
        let many = vec!["h:1"; BrokerAddresses::MAX + 1].join(",");
        assert!(many.parse::<BrokerAddresses>().is_err());
    }
}
