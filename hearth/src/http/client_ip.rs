//! Who the client is: the connection's peer, or the address a trusted proxy
//! put in `X-Forwarded-For`, and the key that per-address limits count under
//! (an IPv6 client is keyed by its /64, the block one subscriber gets).
//!
//! `X-Forwarded-For` is a list each proxy appends to, so everything left of
//! the entries our own proxies wrote is whatever the client chose to send.
//! Only the rightmost entries can be believed: with `trust_forwarded_for`
//! alone the last one (one proxy in front), with `trusted_proxies` the
//! rightmost that is not one of them. An entry that does not parse stops the
//! walk, and the address that handed it to us counts instead: skipping it
//! would let a client's own entry further left win.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};

use axum::http::HeaderMap;

/// An address block such as `10.0.0.0/8` or `2001:db8::/32`; a bare address
/// is a block of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Parses `addr` or `addr/prefix`.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a.parse::<IpAddr>().ok()?, Some(p.parse::<u8>().ok()?)),
            None => (s.parse::<IpAddr>().ok()?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(Self { addr, prefix })
    }

    /// Whether `ip` is in the block (an IPv4-mapped IPv6 address counts as
    /// its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                masked(u128::from(net.to_bits()), 32, self.prefix)
                    == masked(u128::from(ip.to_bits()), 32, self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                masked(net.to_bits(), 128, self.prefix) == masked(ip.to_bits(), 128, self.prefix)
            }
            _ => false,
        }
    }
}

/// The top `prefix` bits of a `width`-bit number.
fn masked(bits: u128, width: u8, prefix: u8) -> u128 {
    if prefix == 0 {
        return 0;
    }
    let drop = u32::from(width.saturating_sub(prefix));
    (bits >> drop) << drop
}

/// An IPv4-mapped IPv6 address (`::ffff:1.2.3.4`, what a dual-stack
/// listener reports) as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Which proxies' `X-Forwarded-For` entries are believed.
#[derive(Debug, Clone, Default)]
pub struct ProxyTrust {
    /// Believe the last entry whoever the peer is (`auth.trust_forwarded_for`).
    pub any: bool,
    /// Believe entries handed over by these (`auth.trusted_proxies`).
    pub proxies: Vec<IpNet>,
}

impl ProxyTrust {
    fn trusts(&self, ip: IpAddr) -> bool {
        self.proxies.iter().any(|n| n.contains(ip))
    }

    /// The client's address: see the module docs. `None` only when there
    /// is no peer (a request not from a socket) and nothing to believe.
    pub fn client(&self, headers: &HeaderMap, peer: Option<SocketAddr>) -> Option<IpAddr> {
        let peer = peer.map(|p| canonical(p.ip()));
        let from_proxy = self.any || peer.is_some_and(|p| self.trusts(p));
        if !from_proxy {
            return peer;
        }
        // Every header line in order, each a comma-separated list.
        let entries: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .flat_map(|v| v.to_str().unwrap_or("!").split(','))
            .map(str::trim)
            .collect();
        let mut handed_over_by = peer;
        for entry in entries.iter().rev() {
            let Ok(ip) = entry.parse::<IpAddr>() else {
                return handed_over_by;
            };
            let ip = canonical(ip);
            if self.proxies.is_empty() || !self.trusts(ip) {
                return Some(ip);
            }
            handed_over_by = Some(ip);
        }
        handed_over_by
    }
}

/// The key per-address limits count under: an IPv4 address as it is, an
/// IPv6 one by its /64 (a subscriber gets a whole /64 and can pick any
/// address in it).
pub fn limit_key(ip: IpAddr) -> String {
    match canonical(ip) {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let net = Ipv6Addr::from_bits(masked(v6.to_bits(), 128, 64));
            format!("{net}/64")
        }
    }
}

/// Places held per client (keyed by [`limit_key`]), for caps on what one
/// address may hold open at once: connections, streams.
#[derive(Debug, Default)]
pub struct PerClient {
    open: Mutex<HashMap<String, usize>>,
}

/// One place of a client in a [`PerClient`], given back when dropped.
#[derive(Debug)]
pub struct ClientPlace {
    of: Arc<PerClient>,
    key: String,
}

impl PerClient {
    /// Takes a place for `key`, unless it holds `max` already.
    pub fn enter(self: &Arc<Self>, key: &str, max: usize) -> Option<ClientPlace> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let n = open.entry(key.to_owned()).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(ClientPlace {
            of: self.clone(),
            key: key.to_owned(),
        })
    }
}

impl Drop for ClientPlace {
    fn drop(&mut self) {
        let mut open = self.of.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(lines: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append("x-forwarded-for", l.parse().unwrap());
        }
        h
    }

    fn peer(s: &str) -> Option<SocketAddr> {
        Some(SocketAddr::new(s.parse().unwrap(), 4000))
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn blocks_parse_and_contain() {
        let n = IpNet::parse("10.1.0.0/16").unwrap();
        assert!(n.contains("10.1.200.3".parse().unwrap()));
        assert!(!n.contains("10.2.0.1".parse().unwrap()));
        assert!(n.contains("::ffff:10.1.0.9".parse().unwrap()));
        let one = IpNet::parse("192.0.2.7").unwrap();
        assert!(one.contains("192.0.2.7".parse().unwrap()));
        assert!(!one.contains("192.0.2.8".parse().unwrap()));
        let v6 = IpNet::parse("2001:db8::/32").unwrap();
        assert!(v6.contains("2001:db8:ffff::1".parse().unwrap()));
        assert!(!v6.contains("2001:db9::1".parse().unwrap()));
        assert!(
            IpNet::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        for bad in ["10.0.0.0/33", "::/129", "nonsense", "10.0.0.0/x", ""] {
            assert!(IpNet::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn without_trust_the_peer_is_the_client() {
        let t = ProxyTrust::default();
        let h = headers(&["203.0.113.9"]);
        assert_eq!(t.client(&h, peer("192.0.2.1")), ip("192.0.2.1"));
    }

    #[test]
    fn trusting_any_proxy_takes_the_literal_last_entry() {
        let t = ProxyTrust {
            any: true,
            proxies: vec![],
        };
        assert_eq!(
            t.client(&headers(&["1.1.1.1, 203.0.113.9"]), peer("10.0.0.1")),
            ip("203.0.113.9")
        );
        // Across several header lines, the last line's last entry.
        assert_eq!(
            t.client(&headers(&["1.1.1.1", "198.51.100.4"]), peer("10.0.0.1")),
            ip("198.51.100.4")
        );
        // An unparseable last entry does not let the client's own entry
        // (further left) win: the peer counts.
        assert_eq!(
            t.client(&headers(&["1.1.1.1, unknown"]), peer("10.0.0.1")),
            ip("10.0.0.1")
        );
        assert_eq!(
            t.client(&headers(&["1.1.1.1,"]), peer("10.0.0.1")),
            ip("10.0.0.1")
        );
        assert_eq!(t.client(&headers(&[]), peer("10.0.0.1")), ip("10.0.0.1"));
    }

    #[test]
    fn listed_proxies_are_walked_past_and_others_are_not_believed() {
        let t = ProxyTrust {
            any: false,
            proxies: vec![IpNet::parse("10.0.0.0/8").unwrap()],
        };
        // The client forged an entry; two of our proxies appended theirs.
        let h = headers(&["6.6.6.6, 203.0.113.9, 10.0.0.2"]);
        assert_eq!(t.client(&h, peer("10.0.0.1")), ip("203.0.113.9"));
        // A peer that is not one of our proxies: its header means nothing.
        assert_eq!(t.client(&h, peer("198.51.100.1")), ip("198.51.100.1"));
        // Garbage right of the client: the last proxy that handed it over.
        let h = headers(&["6.6.6.6, junk, 10.0.0.2"]);
        assert_eq!(t.client(&h, peer("10.0.0.1")), ip("10.0.0.2"));
        // Only proxies in the header: the leftmost of them.
        let h = headers(&["10.0.0.3, 10.0.0.2"]);
        assert_eq!(t.client(&h, peer("10.0.0.1")), ip("10.0.0.3"));
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64() {
        assert_eq!(limit_key("203.0.113.9".parse().unwrap()), "203.0.113.9");
        assert_eq!(
            limit_key("2001:db8:1:2:aaaa:bbbb:cccc:dddd".parse().unwrap()),
            "2001:db8:1:2::/64"
        );
        assert_eq!(
            limit_key("2001:db8:1:2::1".parse().unwrap()),
            limit_key("2001:db8:1:2:ffff::9".parse().unwrap())
        );
        assert_eq!(limit_key("::ffff:192.0.2.1".parse().unwrap()), "192.0.2.1");
    }
}
