//! Egress: where a task's request may go. Deny by default: only the destinations the topic's
//! `allow` lists, and never an internal address (private, loopback, link-local, unspecified,
//! multicast, …) unless an entry names that host or address itself.
//!
//! The check is made on the address the request will actually connect to: the adapter
//! resolves the name itself, checks every address, and pins the connection to them (the caller
//! hands them to reqwest's `resolve_to_addrs`), so a name that resolves to an internal address
//! is refused, and a second resolution (DNS rebinding) cannot swap in another address between
//! the check and the connection.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use url::{Host, Url};

use crate::{Failure, Retry};

/// The host part of an allow entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    /// `*`: any host (internal addresses still refused).
    Any,
    /// `*.example.org`: any name below `example.org`, not `example.org` itself.
    Below(String),
    /// `api.example.com`: that name.
    Name(String),
    /// `127.0.0.1`, `[::1]`: that address, given in the URL or resolved from a name.
    Address(IpAddr),
}

/// One destination pattern: a host pattern and a port; without a port, 80 and 443.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Pattern {
    text: String,
    host: HostPattern,
    port: Option<u16>,
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Pattern {
    /// Reads `host`, `*.domain`, `*`, an address, each with an optional `:port` (`[v6]:port`).
    pub(super) fn parse(text: &str) -> Result<Self, String> {
        let trimmed = text.trim().to_ascii_lowercase();
        let bad = |why: &str| format!("`{text}` is not a destination pattern: {why}");
        if trimmed.is_empty() {
            return Err(bad("it is empty"));
        }
        let (host, port) = if let Some(rest) = trimmed.strip_prefix('[') {
            let (address, after) = rest.split_once(']').ok_or_else(|| bad("`[` without `]`"))?;
            let port = match after {
                "" => None,
                _ => Some(
                    after
                        .strip_prefix(':')
                        .ok_or_else(|| bad("text after `]` that is not `:port`"))?,
                ),
            };
            (address.to_owned(), port)
        } else if trimmed.parse::<Ipv6Addr>().is_ok() {
            (trimmed.clone(), None)
        } else {
            match trimmed.rsplit_once(':') {
                Some((host, port)) => (host.to_owned(), Some(port)),
                None => (trimmed.clone(), None),
            }
        };
        let port = match port {
            None => None,
            Some(p) => match p.parse::<u16>() {
                Ok(0) | Err(_) => return Err(bad(&format!("`{p}` is not a port (1 to 65535)"))),
                Ok(p) => Some(p),
            },
        };
        let host = host.trim_end_matches('.');
        let valid_name = |name: &str| {
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        };
        let host = if host == "*" {
            HostPattern::Any
        } else if let Some(domain) = host.strip_prefix("*.") {
            if !valid_name(domain) {
                return Err(bad(
                    "a wildcard is `*` or `*.domain`, with one `*` in front",
                ));
            }
            HostPattern::Below(domain.to_owned())
        } else if let Ok(address) = host.parse::<IpAddr>() {
            HostPattern::Address(address)
        } else if valid_name(host) {
            HostPattern::Name(host.to_owned())
        } else {
            return Err(bad(
                "a host is a name (letters, digits, `-`, `.`), `*.domain`, `*` or an address",
            ));
        };
        Ok(Self {
            text: text.trim().to_owned(),
            host,
            port,
        })
    }

    fn port_matches(&self, port: u16) -> bool {
        match self.port {
            Some(p) => p == port,
            None => port == 80 || port == 443,
        }
    }

    /// Whether a request to `host:port` matches this entry.
    pub(super) fn matches(&self, host: &Host<&str>, port: u16) -> bool {
        if !self.port_matches(port) {
            return false;
        }
        match (&self.host, host) {
            (HostPattern::Any, _) => true,
            (HostPattern::Below(domain), Host::Domain(name)) => {
                let name = name.trim_end_matches('.');
                name.len() > domain.len()
                    && name.ends_with(domain.as_str())
                    && name[..name.len() - domain.len()].ends_with('.')
            }
            (HostPattern::Name(expected), Host::Domain(name)) => {
                expected == name.trim_end_matches('.')
            }
            (HostPattern::Address(expected), Host::Ipv4(ip)) => {
                same_address(*expected, (*ip).into())
            }
            (HostPattern::Address(expected), Host::Ipv6(ip)) => {
                same_address(*expected, (*ip).into())
            }
            _ => false,
        }
    }

    /// Whether this entry names the host (or the address) itself rather than through a
    /// wildcard: only such an entry admits an internal address.
    fn names(&self, host: &Host<&str>, address: IpAddr, port: u16) -> bool {
        if !self.port_matches(port) {
            return false;
        }
        match &self.host {
            HostPattern::Any | HostPattern::Below(_) => false,
            HostPattern::Name(_) => self.matches(host, port),
            HostPattern::Address(expected) => same_address(*expected, address),
        }
    }
}

/// Equal addresses, an IPv4 address and its IPv4-mapped IPv6 form included.
fn same_address(a: IpAddr, b: IpAddr) -> bool {
    a.to_canonical() == b.to_canonical()
}

/// A list of destination patterns: the topic's `allow`, or a secret's `destinations`.
#[derive(Debug, Clone, Default)]
pub(super) struct Allowlist {
    entries: Vec<Pattern>,
}

impl fmt::Display for Allowlist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.entries.is_empty() {
            return f.write_str("[] (nothing)");
        }
        let shown: Vec<String> = self.entries.iter().map(|e| format!("\"{e}\"")).collect();
        write!(f, "[{}]", shown.join(", "))
    }
}

impl Allowlist {
    /// Reads the patterns of the setting `key`.
    pub(super) fn parse(entries: &[String], key: &str) -> Result<Self, String> {
        let entries = entries
            .iter()
            .map(|e| Pattern::parse(e).map_err(|why| format!("{key}: {why}")))
            .collect::<Result<_, _>>()?;
        Ok(Self { entries })
    }

    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether some entry matches `host:port`.
    pub(super) fn permits(&self, host: &Host<&str>, port: u16) -> bool {
        self.entries.iter().any(|e| e.matches(host, port))
    }

    /// Whether the URL's destination matches some entry.
    pub(super) fn permits_url(&self, url: &Url) -> bool {
        match (url.host(), url.port_or_known_default()) {
            (Some(host), Some(port)) => self.permits(&host, port),
            _ => false,
        }
    }

    fn names(&self, host: &Host<&str>, address: IpAddr, port: u16) -> bool {
        self.entries.iter().any(|e| e.names(host, address, port))
    }
}

/// Why an address is internal, or `None` for an ordinary (public) address.
pub(super) fn internal(address: IpAddr) -> Option<&'static str> {
    match address {
        IpAddr::V4(v4) => internal_v4(v4),
        IpAddr::V6(v6) => internal_v6(v6),
    }
}

fn internal_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    Some(match (a, b) {
        (0, _) => "unspecified (0.0.0.0/8)",
        (127, _) => "loopback",
        (10, _) | (192, 168) => "private (RFC 1918)",
        (172, b) if (16..32).contains(&b) => "private (RFC 1918)",
        (169, 254) => "link-local (169.254.0.0/16, cloud metadata services)",
        (100, b) if (64..128).contains(&b) => "shared (carrier-grade NAT, 100.64.0.0/10)",
        (224..=239, _) => "multicast",
        (240..=255, _) => "reserved or broadcast (240.0.0.0/4)",
        _ => return None,
    })
}

fn internal_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return internal_v4(v4);
    }
    let s = ip.segments();
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    if ip.is_unspecified() {
        Some("unspecified")
    } else if ip.is_loopback() {
        Some("loopback")
    } else if s[0] & 0xfe00 == 0xfc00 {
        Some("private (unique local, fc00::/7)")
    } else if s[0] & 0xffc0 == 0xfe80 {
        Some("link-local (fe80::/10)")
    } else if s[0] & 0xffc0 == 0xfec0 {
        Some("site-local (fec0::/10)")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if s[..6] == [0; 6] {
        // IPv4-compatible (::a.b.c.d, deprecated): judged by the IPv4 address inside.
        internal_v4(embedded(s[6], s[7])).or(Some("IPv4-compatible (::/96)"))
    } else if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        // NAT64: the gateway connects to the IPv4 address inside.
        internal_v4(embedded(s[6], s[7]))
    } else if s[0] == 0x2002 {
        // 6to4: the IPv4 address of the relay is inside.
        internal_v4(embedded(s[1], s[2]))
    } else {
        None
    }
}

/// Where a checked request may connect: the name to pin (none for an address in the URL) and
/// the checked addresses.
#[derive(Debug, Clone)]
pub(super) struct Destination {
    pub(super) domain: Option<String>,
    pub(super) addresses: Vec<SocketAddr>,
}

/// Checks `url` against `allow` and the address rules, resolving its name here; the
/// addresses returned are the only ones the request may connect to.
pub(super) async fn check(
    allow: &Allowlist,
    url: &Url,
    topic: &str,
) -> Result<Destination, Failure> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Failure::new(
            format!("the URL {url} is not http or https"),
            "The http adapter sends HTTP requests only: give an http:// or https:// URL.",
            Retry::Never,
        ));
    }
    let (Some(host), Some(port)) = (url.host(), url.port_or_known_default()) else {
        return Err(Failure::new(
            format!("the URL {url} has no host"),
            "Give an absolute URL such as https://api.example.com/orders.",
            Retry::Never,
        ));
    };
    if !allow.permits(&host, port) {
        let suggestion = match (&host, port) {
            (Host::Ipv6(ip), p) => format!("[{ip}]:{p}"),
            (h, 80 | 443) => h.to_string(),
            (h, p) => format!("{h}:{p}"),
        };
        return Err(Failure::new(
            format!(
                "the destination {host}:{port} is not allowed: topic `{topic}` allows {allow}; to reach it, add \"{suggestion}\" to [topics.{topic}.settings] allow"
            ),
            format!(
                "Egress is deny-by-default: a task reaches only the destinations its topic lists in `allow` (host patterns such as \"api.example.com\", \"*.example.org\" or \"*\", with \":port\" unless the port is 80 or 443).\nURL: {url}\nThe fix: add \"{suggestion}\" to `allow` in [topics.{topic}.settings] of the worker's procos.toml, or correct the URL in the model."
            ),
            Retry::Never,
        ));
    }
    let addresses: Vec<SocketAddr> = match &host {
        Host::Ipv4(ip) => vec![SocketAddr::new((*ip).into(), port)],
        Host::Ipv6(ip) => vec![SocketAddr::new((*ip).into(), port)],
        Host::Domain(name) => match tokio::net::lookup_host((*name, port)).await {
            Ok(found) => found.collect(),
            Err(e) => {
                return Err(Failure::new(
                    format!("could not resolve {name}: {e}"),
                    format!(
                        "The name of {url} did not resolve: {e}. A passing DNS fault is retried; a wrong name is fixed in the model."
                    ),
                    Retry::Later,
                ));
            }
        },
    };
    if addresses.is_empty() {
        return Err(Failure::new(
            format!("{host} resolved to no address"),
            format!("The name of {url} resolved to no address."),
            Retry::Later,
        ));
    }
    for address in &addresses {
        if let Some(kind) = internal(address.ip())
            && !allow.names(&host, address.ip(), port)
        {
            let ip = address.ip().to_canonical();
            return Err(Failure::new(
                format!(
                    "the destination {host}:{port} is refused: its address {ip} is {kind}, which topic `{topic}` allows only through an entry naming that host or address (allow: {allow}); to reach it, add \"{host}:{port}\" to [topics.{topic}.settings] allow"
                ),
                format!(
                    "Internal addresses (private, loopback, link-local, unspecified, multicast, …) are refused unless an entry of `allow` names the host or the address itself: a wildcard (\"*\", \"*.example.org\") never admits them, so that a name that resolves to an internal address cannot reach inside the network. The address is checked after the adapter resolved the name, and the connection goes to that address only.\nURL: {url}, address: {address}\nThe fix, if {host} is meant to be reached: add \"{host}:{port}\" to `allow` in [topics.{topic}.settings] of the worker's procos.toml."
                ),
                Retry::Never,
            ));
        }
    }
    Ok(Destination {
        domain: match host {
            Host::Domain(name) => Some(name.to_owned()),
            _ => None,
        },
        addresses,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> Allowlist {
        Allowlist::parse(
            &entries.iter().map(|e| (*e).to_owned()).collect::<Vec<_>>(),
            "allow",
        )
        .unwrap()
    }

    fn permits(allow: &Allowlist, url: &str) -> bool {
        allow.permits_url(&Url::parse(url).unwrap())
    }

    #[test]
    fn patterns_match_hosts_and_ports() {
        let allow = list(&[
            "api.example.com",
            "*.example.org:8443",
            "127.0.0.1:18080",
            "[::1]:9000",
        ]);
        assert!(permits(&allow, "https://api.example.com/x"));
        assert!(permits(&allow, "http://API.example.com./x"));
        assert!(!permits(&allow, "https://api.example.com:8443/x"));
        assert!(!permits(&allow, "https://evil-api.example.com/"));
        assert!(permits(&allow, "https://a.example.org:8443/"));
        assert!(permits(&allow, "https://a.b.example.org:8443/"));
        assert!(!permits(&allow, "https://example.org:8443/"));
        assert!(!permits(&allow, "https://badexample.org:8443/"));
        assert!(!permits(&allow, "https://a.example.org/"));
        assert!(permits(&allow, "http://127.0.0.1:18080/"));
        assert!(!permits(&allow, "http://127.0.0.1:18081/"));
        assert!(!permits(&allow, "http://localhost:18080/"));
        assert!(permits(&allow, "http://[::1]:9000/"));
        let any = list(&["*"]);
        assert!(permits(&any, "https://anything.example/"));
        assert!(!permits(&any, "https://anything.example:8080/"));
        assert!(!permits(&Allowlist::default(), "https://api.example.com/"));
    }

    #[test]
    fn bad_patterns_are_refused_with_the_reason() {
        for bad in ["", "a:b", "a:0", "a:70000", "**.x", "a.*.x", "[::1", "x/y"] {
            let err = Pattern::parse(bad).unwrap_err();
            assert!(err.contains('`'), "{bad}: {err}");
        }
        assert_eq!(
            Pattern::parse("::1").unwrap().host,
            HostPattern::Address("::1".parse().unwrap())
        );
    }

    #[test]
    fn internal_addresses_are_classified() {
        let kind = |a: &str| internal(a.parse().unwrap());
        for address in [
            "0.0.0.0",
            "127.0.0.1",
            "127.9.9.9",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "2002:c0a8:101::1",
            "::127.0.0.1",
        ] {
            assert!(kind(address).is_some(), "{address} is internal");
        }
        for address in [
            "8.8.8.8",
            "172.15.0.1",
            "172.32.0.1",
            "100.128.0.1",
            "93.184.216.34",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            assert_eq!(kind(address), None, "{address} is public");
        }
        assert_eq!(kind("127.0.0.1"), Some("loopback"));
        assert_eq!(kind("10.0.0.1"), Some("private (RFC 1918)"));
    }

    #[tokio::test]
    async fn internal_addresses_need_an_entry_that_names_them() {
        let url = |u: &str| Url::parse(u).unwrap();
        // A wildcard lets `localhost` through by name, but not to its loopback address.
        let wildcard = list(&["*:18080"]);
        let failure = check(&wildcard, &url("http://localhost:18080/"), "t")
            .await
            .unwrap_err();
        assert!(
            failure.message.contains("localhost:18080"),
            "{}",
            failure.message
        );
        assert!(
            failure.message.contains("127.0.0.1") || failure.message.contains("::1"),
            "{}",
            failure.message
        );
        assert!(failure.message.contains("loopback"), "{}", failure.message);
        assert!(
            failure.message.contains("[topics.t.settings] allow"),
            "{}",
            failure.message
        );
        assert!(
            failure.message.contains("\"*:18080\""),
            "{}",
            failure.message
        );
        assert_eq!(failure.retry, Retry::Never);
        let failure = check(&wildcard, &url("http://127.0.0.1:18080/"), "t")
            .await
            .unwrap_err();
        assert!(failure.message.contains("loopback"), "{}", failure.message);

        // Named explicitly, by address or by name, it is reached.
        let named = list(&["127.0.0.1:18080"]);
        let to = check(&named, &url("http://127.0.0.1:18080/"), "t")
            .await
            .unwrap();
        assert_eq!(to.domain, None);
        assert_eq!(to.addresses, ["127.0.0.1:18080".parse().unwrap()]);
        let by_name = list(&["localhost:18080"]);
        let to = check(&by_name, &url("http://localhost:18080/"), "t")
            .await
            .unwrap();
        assert_eq!(to.domain.as_deref(), Some("localhost"));
        assert!(
            to.addresses
                .iter()
                .all(|a| a.ip().is_loopback() && a.port() == 18080)
        );

        // Off the list: refused before any name is resolved.
        let failure = check(&named, &url("http://example.com/"), "t")
            .await
            .unwrap_err();
        assert!(
            failure.message.contains("example.com:80"),
            "{}",
            failure.message
        );
        assert!(
            failure.message.contains("\"example.com\""),
            "{}",
            failure.message
        );
        let failure = check(&named, &url("file:///etc/passwd"), "t")
            .await
            .unwrap_err();
        assert_eq!(failure.retry, Retry::Never);
    }
}
