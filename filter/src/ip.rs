//! Who is asking: the client address (the downstream peer, or the entry
//! that trusted proxies wrote into `X-Forwarded-For`), and the allow and
//! deny lists of CIDRs that admit it.
//!
//! `X-Forwarded-For` is client-controlled except for the entries the
//! proxies in front of Envoy appended, so only the entry written by the
//! outermost trusted proxy is believed: with `trusted_hops = n`, the n-th
//! entry from the right. Anything further left could be forged.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::headers::Headers;

/// A source's address rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpRules {
    pub allow: Vec<IpNet>,
    pub deny: Vec<IpNet>,
    /// Proxies in front of Envoy that append to `X-Forwarded-For`; 0 means
    /// the downstream peer is the client.
    pub trusted_hops: u32,
}

impl IpRules {
    /// Whether any list is configured.
    pub fn restricts(&self) -> bool {
        !self.allow.is_empty() || !self.deny.is_empty()
    }

    /// Denied when in `deny`; otherwise admitted when `allow` is empty or
    /// holds the address. An address that could not be determined is
    /// admitted only when there are no lists at all (fail closed).
    pub fn admits(&self, client: Option<IpAddr>) -> bool {
        let Some(addr) = client else {
            return !self.restricts();
        };
        !self.deny.iter().any(|n| n.contains(&addr))
            && (self.allow.is_empty() || self.allow.iter().any(|n| n.contains(&addr)))
    }

    /// The client address for this request: the downstream peer, or with
    /// trusted hops the `X-Forwarded-For` entry the outermost trusted proxy
    /// wrote. `None` when that entry is missing or not an address (the
    /// request did not come through the proxies, or they are misconfigured).
    pub fn client(&self, downstream: Option<IpAddr>, headers: &Headers) -> Option<IpAddr> {
        if self.trusted_hops == 0 {
            return downstream;
        }
        forwarded_client(headers, self.trusted_hops)
    }
}

/// The `hops`-th entry from the right of all `X-Forwarded-For` values
/// (several header lines read as one comma-separated list).
fn forwarded_client(headers: &Headers, hops: u32) -> Option<IpAddr> {
    let values: Vec<&[u8]> = headers
        .iter()
        .filter(|(name, _)| *name == "x-forwarded-for")
        .map(|(_, v)| v)
        .collect();
    let skip = usize::try_from(hops.checked_sub(1)?).ok()?;
    let entry = values
        .iter()
        .rev()
        .flat_map(|v| v.rsplit(|b| *b == b','))
        .nth(skip)?;
    let text = std::str::from_utf8(entry).ok()?;
    parse_address(text.trim())
}

/// An address as Envoy reports the peer (`1.2.3.4:5678`, `[::1]:80`) or
/// as proxies write it (`1.2.3.4`, `2001:db8::1`, `[2001:db8::1]`).
/// IPv4-mapped IPv6 addresses read as IPv4, so one list covers both.
pub fn parse_address(text: &str) -> Option<IpAddr> {
    let addr = if let Some(rest) = text.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        if !(after.is_empty() || is_port(after.strip_prefix(':')?)) {
            return None;
        }
        inside.parse::<IpAddr>().ok()?
    } else if let Ok(addr) = text.parse::<IpAddr>() {
        addr
    } else {
        // `a.b.c.d:port`; a bare IPv6 address was handled above.
        let (host, port) = text.rsplit_once(':')?;
        if !is_port(port) {
            return None;
        }
        IpAddr::V4(host.parse().ok()?)
    };
    Some(addr.to_canonical())
}

fn is_port(text: &str) -> bool {
    !text.is_empty() && text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit())
}

/// A configured CIDR; a bare address is a single host. Host bits set under
/// the mask (`10.0.0.1/8`) are refused: they usually mean a typo.
pub fn parse_cidr(text: &str) -> Result<IpNet, &'static str> {
    let net = if text.contains('/') {
        text.parse::<IpNet>()
            .map_err(|_| "must be a CIDR such as 10.0.0.0/8 or 2001:db8::/32")?
    } else {
        IpNet::from(
            text.parse::<IpAddr>()
                .map_err(|_| "must be a CIDR such as 10.0.0.0/8 or 2001:db8::/32")?,
        )
    };
    if net.trunc() != net {
        return Err("has bits set beyond its prefix length (did you mean the network address?)");
    }
    Ok(match net {
        // An IPv4-mapped network matches the IPv4 addresses it maps.
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
                .map(IpNet::V4)
                .unwrap_or(net),
            None => net,
        },
        _ => net,
    })
}

/// The part of an address a per-client limit counts: the whole IPv4
/// address, or the /64 of an IPv6 one (one subscriber's usual allocation,
/// so rotating addresses inside it does not escape the limit).
pub fn limit_identity(addr: IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(v4) => [&[4u8][..], &v4.octets()].concat(),
        IpAddr::V6(v6) => std::iter::once(6u8)
            .chain(v6.octets().into_iter().take(8))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn xff(values: &[&str]) -> Headers {
        Headers::new(
            values
                .iter()
                .map(|v| ("X-Forwarded-For".to_string(), v.as_bytes().to_vec())),
        )
    }

    #[test]
    fn addresses_in_every_form_envoy_and_proxies_write() {
        let cases = [
            ("1.2.3.4", Some("1.2.3.4")),
            ("1.2.3.4:5678", Some("1.2.3.4")),
            ("::1", Some("::1")),
            ("[::1]", Some("::1")),
            ("[::1]:80", Some("::1")),
            ("2001:db8::1", Some("2001:db8::1")),
            ("[2001:db8::1]:65535", Some("2001:db8::1")),
            ("::ffff:10.1.2.3", Some("10.1.2.3")),
            ("[::ffff:10.1.2.3]:9", Some("10.1.2.3")),
            ("", None),
            ("unknown", None),
            ("1.2.3.4:", None),
            ("1.2.3.4:port", None),
            ("1.2.3.4:123456", None),
            ("[::1", None),
            ("[::1]x", None),
            ("[::1]:", None),
            ("1.2.3", None),
            ("1.2.3.4.5", None),
            (" 1.2.3.4", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_address(text), want.map(ip), "{text:?}");
        }
    }

    #[test]
    fn cidrs_are_strict() {
        assert_eq!(parse_cidr("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(parse_cidr("192.0.2.7").unwrap().to_string(), "192.0.2.7/32");
        assert_eq!(
            parse_cidr("2001:db8::/32").unwrap().to_string(),
            "2001:db8::/32"
        );
        assert_eq!(parse_cidr("::1").unwrap().to_string(), "::1/128");
        assert_eq!(
            parse_cidr("::ffff:10.0.0.0/104").unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert!(parse_cidr("10.0.0.1/8").unwrap_err().contains("bits set"));
        for bad in [
            "",
            "10.0.0.0/33",
            "10/8",
            "x",
            "10.0.0.0/",
            "/8",
            "2001:db8::/129",
        ] {
            assert!(parse_cidr(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn allow_and_deny_lists() {
        let rules = IpRules {
            allow: vec![
                parse_cidr("10.0.0.0/8").unwrap(),
                parse_cidr("2001:db8::/32").unwrap(),
            ],
            deny: vec![parse_cidr("10.6.6.0/24").unwrap()],
            trusted_hops: 0,
        };
        assert!(rules.admits(Some(ip("10.1.2.3"))));
        assert!(rules.admits(Some(ip("2001:db8::5"))));
        assert!(!rules.admits(Some(ip("10.6.6.6"))), "deny wins over allow");
        assert!(
            !rules.admits(Some(ip("192.0.2.1"))),
            "not on the allow list"
        );
        assert!(
            !rules.admits(None),
            "an unknown client is refused when lists exist"
        );
        let mapped = parse_address("::ffff:10.1.2.3").unwrap();
        assert!(rules.admits(Some(mapped)), "IPv4-mapped reads as IPv4");

        let deny_only = IpRules {
            deny: vec![parse_cidr("192.0.2.0/24").unwrap()],
            ..IpRules::default()
        };
        assert!(deny_only.admits(Some(ip("198.51.100.1"))));
        assert!(!deny_only.admits(Some(ip("192.0.2.200"))));
        assert!(IpRules::default().admits(None));
    }

    #[test]
    fn x_forwarded_for_believes_only_the_trusted_hops() {
        let down = Some(ip("10.0.0.9"));
        let hops = |n| IpRules {
            trusted_hops: n,
            ..IpRules::default()
        };
        // The client claims 6.6.6.6; the one trusted proxy appended 1.1.1.1.
        let h = xff(&["6.6.6.6, 1.1.1.1"]);
        assert_eq!(hops(0).client(down, &h), down, "no hops: the peer");
        assert_eq!(hops(1).client(down, &h), Some(ip("1.1.1.1")));
        assert_eq!(hops(2).client(down, &h), Some(ip("6.6.6.6")));
        assert_eq!(hops(3).client(down, &h), None, "fewer entries than hops");
        // Several header lines are one list, in order.
        let h = xff(&["6.6.6.6", "2.2.2.2 , 1.1.1.1"]);
        assert_eq!(hops(2).client(down, &h), Some(ip("2.2.2.2")));
        assert_eq!(hops(3).client(down, &h), Some(ip("6.6.6.6")));
        // Ports and brackets as some proxies write them.
        let h = xff(&["[2001:db8::1]:443,1.1.1.1:80"]);
        assert_eq!(hops(1).client(down, &h), Some(ip("1.1.1.1")));
        assert_eq!(hops(2).client(down, &h), Some(ip("2001:db8::1")));
        // Garbage where the trusted entry should be is unknown, not the peer.
        let h = xff(&["1.1.1.1, garbage"]);
        assert_eq!(hops(1).client(down, &h), None);
        assert_eq!(hops(1).client(down, &xff(&[])), None);
        let bytes = Headers::new([("x-forwarded-for".to_string(), vec![0xff, b',', b'1'])]);
        assert_eq!(hops(1).client(down, &bytes), None);
        assert_eq!(hops(2).client(down, &bytes), None);
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        assert_eq!(
            limit_identity(ip("2001:db8:1:2::1")),
            limit_identity(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            limit_identity(ip("2001:db8:1:2::1")),
            limit_identity(ip("2001:db8:1:3::1"))
        );
        assert_ne!(limit_identity(ip("1.2.3.4")), limit_identity(ip("1.2.3.5")));
        assert_ne!(
            limit_identity(ip("0.0.0.0")),
            limit_identity(ip("::")),
            "families never collide"
        );
    }
}
