//! One network rule's destination: parsing, the canonical text, and matching.
//!
//! Forms (seed 003 and `sandboxd-api.md` "Network policy"):
//! - `example.com` — that host only, never its subdomains; `example.com:443` — and only that port;
//! - `*.example.com` (also written `**.example.com`) — every subdomain, at any depth, never `example.com` itself;
//! - `*` / `**` — every destination; `*:443` — every destination on port 443;
//! - `10.0.0.0/8`, `fc00::/7` — the addresses the proxy connects to; `1.2.3.4`, `1.2.3.4:22`, `[::1]:443` —
//!   one address (a /32 or /128), optionally one port. A port on a CIDR: `10.0.0.0/8:22`, `[fc00::/7]:443`.
//!
//! IPv4 in rules must be canonical dotted quads: `127.1`, `2130706433` or `0x7f.1` in a *rule* is refused
//! ([`RuleError::NonCanonicalIp`], with the address it would mean), while in a *target* it is read as that address.

use super::target::{self, inet_aton, Host, TargetError};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Longest rule text accepted.
pub const MAX_RULE_LEN: usize = 300;

/// What a rule's destination matches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Pattern {
    /// `*` / `**`: every host name and every address.
    Any,
    /// One host name, exactly.
    Exact(String),
    /// `*.domain`: names strictly below `domain` (stored without the `*.`).
    Subdomains(String),
    /// An address range (a single address is a /32 or /128), matched against the address connected to.
    Net(IpNet),
}

/// A parsed destination: pattern plus optional port. `Display` gives the canonical text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Destination {
    /// What it matches.
    pub pattern: Pattern,
    /// The one port it matches; `None`: every port.
    pub port: Option<u16>,
}

/// Why a rule's text was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleError {
    /// Empty (or only whitespace).
    Empty,
    /// Longer than [`MAX_RULE_LEN`].
    TooLong,
    /// A `*` anywhere but as the whole first label (`foo.*.com`, `*foo.com`, `*.`, `*.*.com`).
    BadWildcard(String),
    /// A CIDR that does not parse (`10/8`, `1.2.3.0/33`).
    BadCidr(String),
    /// A non-canonical IPv4 literal (`127.1`, `2130706433`, `0x7f.1`, `010.0.0.1`): write the address it means.
    NonCanonicalIp {
        input: String,
        means: Option<Ipv4Addr>,
    },
    /// The host or port part is not valid.
    BadHost(TargetError),
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuleError::Empty => f.write_str("the rule is empty"),
            RuleError::TooLong => write!(f, "the rule is longer than {MAX_RULE_LEN} characters"),
            RuleError::BadWildcard(s) => write!(
                f,
                "{s:?}: a wildcard must be the whole rule (*, *:PORT) or its first label (*.example.com)"
            ),
            RuleError::BadCidr(s) => write!(f, "{s:?} is not a CIDR range"),
            RuleError::NonCanonicalIp { input, means } => match means {
                Some(a) => write!(f, "{input:?} is a non-canonical IPv4 literal; write {a}"),
                None => write!(f, "{input:?} ends in a number but is not an IPv4 address"),
            },
            RuleError::BadHost(e) => write!(f, "bad destination: {e}"),
        }
    }
}

impl std::error::Error for RuleError {}

impl From<TargetError> for RuleError {
    fn from(e: TargetError) -> Self {
        RuleError::BadHost(e)
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bracket = matches!(self.pattern, Pattern::Net(IpNet::V6(_))) && self.port.is_some();
        let core = match &self.pattern {
            Pattern::Any => "*".to_string(),
            Pattern::Exact(h) => h.clone(),
            Pattern::Subdomains(d) => format!("*.{d}"),
            Pattern::Net(n) if n.prefix_len() == n.max_prefix_len() => n.addr().to_string(),
            Pattern::Net(n) => n.to_string(),
        };
        match (self.port, bracket) {
            (None, _) => f.write_str(&core),
            (Some(p), true) => write!(f, "[{core}]:{p}"),
            (Some(p), false) => write!(f, "{core}:{p}"),
        }
    }
}

impl Destination {
    /// Parses one rule destination (see the module docs for the forms).
    pub fn parse(input: &str) -> Result<Destination, RuleError> {
        let s = input.trim();
        if s.is_empty() {
            return Err(RuleError::Empty);
        }
        if s.len() > MAX_RULE_LEN {
            return Err(RuleError::TooLong);
        }
        if s.contains('/') {
            return parse_cidr(s);
        }
        let (host, port) = target::split_host_port(s)?;
        let port = port.map(target::parse_port).transpose()?;
        let pattern = if host == "*" || host == "**" {
            Pattern::Any
        } else if let Some(domain) = host.strip_prefix("**.").or_else(|| host.strip_prefix("*.")) {
            if domain.contains('*') {
                return Err(RuleError::BadWildcard(s.to_string()));
            }
            match target::parse_host(domain) {
                Ok(Host::Name(d)) => Pattern::Subdomains(d),
                Ok(Host::Ip(_)) | Err(TargetError::BadIpv4(_)) => {
                    return Err(RuleError::BadWildcard(s.to_string()))
                }
                Err(e) => return Err(e.into()),
            }
        } else if host.contains('*') {
            return Err(RuleError::BadWildcard(s.to_string()));
        } else {
            match target::parse_host(host) {
                Ok(Host::Name(n)) => Pattern::Exact(n),
                Ok(Host::Ip(ip)) => {
                    check_canonical_v4(host, ip)?;
                    Pattern::Net(IpNet::from(ip))
                }
                Err(TargetError::BadIpv4(_)) => {
                    return Err(RuleError::NonCanonicalIp {
                        input: host.to_string(),
                        means: None,
                    })
                }
                Err(e) => return Err(e.into()),
            }
        };
        Ok(Destination { pattern, port })
    }

    /// Whether this destination matches a host name on `port` (names only: `Any`, `Exact`, `Subdomains`).
    pub fn matches_name(&self, name: &str, port: u16) -> bool {
        self.port.is_none_or(|p| p == port)
            && match &self.pattern {
                Pattern::Any => true,
                Pattern::Exact(h) => h == name,
                Pattern::Subdomains(d) => is_strict_subdomain(name, d),
                Pattern::Net(_) => false,
            }
    }

    /// Whether this destination matches an address (canonical, see [`target::canonical_ip`]) on `port`.
    pub fn matches_addr(&self, ip: IpAddr, port: u16) -> bool {
        self.port.is_none_or(|p| p == port)
            && match &self.pattern {
                Pattern::Any => true,
                Pattern::Net(n) => n.contains(&ip),
                _ => false,
            }
    }
}

/// `a.b.example.com` and `b.example.com` are below `example.com`; `example.com` and `xexample.com` are not.
pub fn is_strict_subdomain(name: &str, domain: &str) -> bool {
    name.len() > domain.len() + 1
        && name.ends_with(domain)
        && name.as_bytes()[name.len() - domain.len() - 1] == b'.'
}

/// A host that parsed as an IPv4 address must have been written as a canonical dotted quad.
fn check_canonical_v4(host: &str, ip: IpAddr) -> Result<(), RuleError> {
    if let (IpAddr::V4(v4), false) = (ip, host.contains(':')) {
        let written = host.strip_suffix('.').unwrap_or(host);
        if written != v4.to_string() {
            return Err(RuleError::NonCanonicalIp {
                input: host.to_string(),
                means: Some(v4),
            });
        }
    }
    Ok(())
}

/// `10.0.0.0/8`, `10.0.0.0/8:22`, `fc00::/7`, `[fc00::/7]:443`, `::ffff:10.0.0.0/104` (→ `10.0.0.0/8`).
fn parse_cidr(s: &str) -> Result<Destination, RuleError> {
    let bad = || RuleError::BadCidr(s.to_string());
    let (net, port) = if let Some(rest) = s.strip_prefix('[') {
        let (inner, after) = rest.split_once(']').ok_or_else(bad)?;
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or_else(bad)?),
        };
        (inner, port)
    } else if s.matches(':').count() == 1 {
        let (n, p) = s.split_once(':').ok_or_else(bad)?;
        (n, Some(p))
    } else {
        (s, None)
    };
    let port = port.map(target::parse_port).transpose()?;
    let (addr, len) = net.split_once('/').ok_or_else(bad)?;
    if len.is_empty() || len.len() > 3 || !len.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let len: u8 = len.parse().map_err(|_| bad())?;
    let net = if addr.contains(':') {
        let a: Ipv6Addr = addr.parse().map_err(|_| bad())?;
        let n = Ipv6Net::new(a, len).map_err(|_| bad())?.trunc();
        // An IPv4-mapped range is the IPv4 range it maps.
        match (n.network().to_ipv4_mapped(), len >= 96) {
            (Some(v4), true) => IpNet::V4(Ipv4Net::new(v4, len - 96).map_err(|_| bad())?.trunc()),
            _ => IpNet::V6(n),
        }
    } else {
        let a: Ipv4Addr = match addr.parse() {
            Ok(a) => a,
            Err(_) => {
                return Err(match inet_aton(addr) {
                    Some(means) => RuleError::NonCanonicalIp {
                        input: addr.to_string(),
                        means: Some(means),
                    },
                    None => bad(),
                })
            }
        };
        IpNet::V4(Ipv4Net::new(a, len).map_err(|_| bad())?.trunc())
    };
    Ok(Destination {
        pattern: Pattern::Net(net),
        port,
    })
}
