//! Destinations as the proxy will actually reach them: host names normalised (case, one trailing dot), every
//! IP literal form a resolver or `inet_aton` would accept turned into the address it means, IPv4-mapped IPv6 turned
//! into IPv4, brackets removed. Anything else that could be read two ways is refused.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Longest host name accepted (RFC 1035: 253 characters without the trailing dot).
pub const MAX_NAME_LEN: usize = 253;
/// Longest label of a host name.
const MAX_LABEL_LEN: usize = 63;

/// A normalised destination host.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A DNS name: lower case ASCII, no trailing dot, every label 1–63 of `[a-z0-9_-]`.
    Name(String),
    /// An address; IPv4-mapped IPv6 (`::ffff:a.b.c.d`) is always stored as IPv4.
    Ip(IpAddr),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::Ip(IpAddr::V4(a)) => write!(f, "{a}"),
            Host::Ip(IpAddr::V6(a)) => write!(f, "[{a}]"),
        }
    }
}

/// A normalised destination: host and TCP port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// The normalised host.
    pub host: Host,
    /// The TCP port.
    pub port: u16,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// Why a host, port or target was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetError {
    /// Nothing was given.
    Empty,
    /// Longer than [`MAX_NAME_LEN`] (or a label longer than 63).
    TooLong,
    /// The port is not a number in 1–65535.
    BadPort(String),
    /// A character no DNS name or IP literal has (`%`, `@`, `/`, whitespace, a wildcard, …).
    BadCharacter(char),
    /// Non-ASCII: international names must be given in their `xn--` form.
    NonAscii,
    /// An empty label (`a..b`, a leading dot, two trailing dots).
    EmptyLabel,
    /// The last label is numeric, so this is an IPv4 literal, but not one that parses (`1.2.3.999`, `1.2.3.4.5`).
    BadIpv4(String),
    /// An unparseable bracketed or bare IPv6 literal.
    BadIpv6(String),
    /// An IPv6 zone (`fe80::1%eth0`): link-scoped, never a proxy destination.
    ZoneId,
}

impl fmt::Display for TargetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetError::Empty => f.write_str("the host is empty"),
            TargetError::TooLong => f.write_str("the host name is too long"),
            TargetError::BadPort(p) => write!(f, "the port {p:?} is not a number in 1-65535"),
            TargetError::BadCharacter(c) => write!(f, "the host contains {c:?}"),
            TargetError::NonAscii => {
                f.write_str("the host is not ASCII (give international names in their xn-- form)")
            }
            TargetError::EmptyLabel => f.write_str("the host has an empty label"),
            TargetError::BadIpv4(h) => {
                write!(f, "{h:?} ends in a number but is not an IPv4 address")
            }
            TargetError::BadIpv6(h) => write!(f, "{h:?} is not an IPv6 address"),
            TargetError::ZoneId => f.write_str("IPv6 zone ids are not destinations"),
        }
    }
}

impl std::error::Error for TargetError {}

/// IPv4-mapped IPv6 as IPv4; every other address unchanged.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// Parses `host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 literal; `default_port` when none is given.
pub fn parse_target(input: &str, default_port: u16) -> Result<Target, TargetError> {
    if input.is_empty() {
        return Err(TargetError::Empty);
    }
    let (host, port) = split_host_port(input)?;
    let port = match port {
        Some(p) => parse_port(p)?,
        None => default_port,
    };
    Ok(Target {
        host: parse_host(host)?,
        port,
    })
}

/// Splits `host:port` / `[v6]:port` / bare IPv6; the port (if any) unparsed.
pub(crate) fn split_host_port(input: &str) -> Result<(&str, Option<&str>), TargetError> {
    if let Some(rest) = input.strip_prefix('[') {
        let end = rest
            .find(']')
            .ok_or_else(|| TargetError::BadIpv6(input.to_string()))?;
        let after = &rest[end + 1..];
        let host = &input[..end + 2];
        return match after {
            "" => Ok((host, None)),
            _ => match after.strip_prefix(':') {
                Some(p) => Ok((host, Some(p))),
                None => Err(TargetError::BadIpv6(input.to_string())),
            },
        };
    }
    match input.matches(':').count() {
        0 => Ok((input, None)),
        1 => {
            let (h, p) = input.split_once(':').unwrap_or((input, ""));
            Ok((h, Some(p)))
        }
        _ => Ok((input, None)), // a bare IPv6 literal; parse_host decides
    }
}

/// `1`–`65535`, digits only.
pub(crate) fn parse_port(p: &str) -> Result<u16, TargetError> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TargetError::BadPort(p.to_string()));
    }
    match p.parse::<u32>() {
        Ok(n) if (1..=65535).contains(&n) => Ok(n as u16),
        _ => Err(TargetError::BadPort(p.to_string())),
    }
}

/// Normalises one host: a bracketed or bare IPv6 literal, an IPv4 literal in any form `inet_aton` accepts
/// (`127.1`, `2130706433`, `0x7f.1`, `0177.0.0.1`), or a DNS name.
pub fn parse_host(raw: &str) -> Result<Host, TargetError> {
    if raw.is_empty() {
        return Err(TargetError::Empty);
    }
    if let Some(inner) = raw.strip_prefix('[') {
        let inner = inner
            .strip_suffix(']')
            .ok_or_else(|| TargetError::BadIpv6(raw.to_string()))?;
        return parse_v6(inner).map(Host::Ip);
    }
    if raw.contains(':') {
        return parse_v6(raw).map(Host::Ip);
    }
    if !raw.is_ascii() {
        return Err(TargetError::NonAscii);
    }
    if raw.len() > MAX_NAME_LEN + 1 {
        return Err(TargetError::TooLong);
    }
    let name = raw.strip_suffix('.').unwrap_or(raw).to_ascii_lowercase();
    if name.is_empty() {
        return Err(TargetError::EmptyLabel);
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(TargetError::BadCharacter(c));
    }
    let labels: Vec<&str> = name.split('.').collect();
    if labels.iter().any(|l| l.is_empty()) {
        return Err(TargetError::EmptyLabel);
    }
    if labels.iter().any(|l| l.len() > MAX_LABEL_LEN) || name.len() > MAX_NAME_LEN {
        return Err(TargetError::TooLong);
    }
    // As in the WHATWG URL host parser: a name whose last label is a number is an IPv4 literal, and one that is
    // not a valid literal is refused rather than handed to a resolver that may read it differently.
    let last = labels[labels.len() - 1];
    if looks_numeric(last) {
        return match inet_aton(&name) {
            Some(v4) => Ok(Host::Ip(IpAddr::V4(v4))),
            None => Err(TargetError::BadIpv4(raw.to_string())),
        };
    }
    Ok(Host::Name(name))
}

fn parse_v6(s: &str) -> Result<IpAddr, TargetError> {
    if s.contains('%') {
        return Err(TargetError::ZoneId);
    }
    s.parse::<Ipv6Addr>()
        .map(|a| canonical_ip(IpAddr::V6(a)))
        .map_err(|_| TargetError::BadIpv6(s.to_string()))
}

/// Decimal digits, or `0x`/`0X` followed by hex digits (possibly none).
fn looks_numeric(label: &str) -> bool {
    if let Some(hex) = label
        .strip_prefix("0x")
        .or_else(|| label.strip_prefix("0X"))
    {
        return hex.bytes().all(|b| b.is_ascii_hexdigit());
    }
    !label.is_empty() && label.bytes().all(|b| b.is_ascii_digit())
}

/// One part of an `inet_aton` literal: `0x…` hex, `0…` octal, else decimal.
fn aton_part(p: &str) -> Option<u64> {
    if p.is_empty() {
        return None;
    }
    let (digits, radix) = if let Some(h) = p.strip_prefix("0x").or_else(|| p.strip_prefix("0X")) {
        (h, 16)
    } else if p.len() > 1 && p.starts_with('0') {
        (&p[1..], 8)
    } else {
        (p, 10)
    };
    if digits.is_empty() {
        return if radix == 16 { Some(0) } else { None };
    }
    if digits.len() > 12 {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

/// The address `inet_aton(3)` makes of `s`: 1–4 parts, the last filling the remaining bytes.
pub(crate) fn inet_aton(s: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let nums: Vec<u64> = parts.iter().map(|p| aton_part(p)).collect::<Option<_>>()?;
    let (head, last) = nums.split_at(nums.len() - 1);
    if head.iter().any(|&n| n > 0xff) {
        return None;
    }
    let last_bits = 8 * (4 - head.len() as u32);
    if last[0] >= (1u64 << last_bits) {
        return None;
    }
    let mut v: u64 = 0;
    for (i, &n) in head.iter().enumerate() {
        v |= n << (24 - 8 * i as u32);
    }
    v |= last[0];
    Some(Ipv4Addr::from(v as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inet_aton_forms() {
        let lo = Some(Ipv4Addr::new(127, 0, 0, 1));
        for s in [
            "127.0.0.1",
            "127.1",
            "127.0.1",
            "2130706433",
            "0x7f000001",
            "0x7f.1",
            "0177.0.0.1",
            "017700000001",
            "0x7F.0.0.0x1",
        ] {
            assert_eq!(inet_aton(s), lo, "{s}");
        }
        for s in [
            "256.0.0.1",
            "1.2.3.4.5",
            "1..2",
            "4294967296",
            "08.0.0.1",
            "1.2.3.256",
        ] {
            assert_eq!(inet_aton(s), None, "{s}");
        }
    }

    #[test]
    fn split_forms() {
        assert_eq!(split_host_port("a:1").unwrap(), ("a", Some("1")));
        assert_eq!(split_host_port("[::1]:2").unwrap(), ("[::1]", Some("2")));
        assert_eq!(split_host_port("[::1]").unwrap(), ("[::1]", None));
        assert_eq!(split_host_port("::1").unwrap(), ("::1", None));
        assert!(split_host_port("[::1]x").is_err());
    }
}
