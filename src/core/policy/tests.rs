//! The policy table: one policy, every matching form, normalisation and evasion attempt, each row decided through
//! `decide` with the addresses a fake resolver gives (as the proxy does).

use super::*;
use std::net::IpAddr;

/// The table's policy: deny-all, then the rules below.
fn table_policy() -> Policy {
    let p = Policy::new(Preset::DenyAll);
    let g = Scope::Global;
    for r in [
        "example.com",
        "*.wild.test",
        "pinned.test:443",
        "*:8443",
        "93.184.216.0/24",
        "10.1.2.3:22",
        "2001:db8:1::/48",
        "[fd00:1::/32]:443",
        "bypass.test",
    ] {
        assert!(p.add(&g, Action::Allow, r).unwrap(), "{r}");
    }
    for r in ["evil.wild.test", "93.184.216.66", "blocked.test:8443"] {
        assert!(p.add(&g, Action::Deny, r).unwrap(), "{r}");
    }
    for r in ["pinned.test", "bypass.test"] {
        p.add(&g, Action::Bypass, r).unwrap();
    }
    let sb1 = Scope::Sandbox("sb1".into());
    p.add(&sb1, Action::Allow, "sb-only.test").unwrap();
    p.add(&sb1, Action::Deny, "deny-in-sb1.wild.test").unwrap();
    p.add(&Scope::Sandbox("sb2".into()), Action::Deny, "example.com")
        .unwrap();
    p
}

/// What the fake resolver answers for a name: the row's own addresses, else one public TEST-NET-3 address.
const PUBLIC: &str = "203.0.113.10";

/// Expected outcome: allowed (with bypass?) or blocked with a reason; or the target is refused as input.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Want {
    Allow(&'static str),
    Bypass(&'static str),
    Block(Reason, Option<&'static str>),
    Invalid,
}
use Reason::*;
use Want::*;

/// (target, sandbox, resolved addresses ("" = default public address), expected)
const TABLE: &[(&str, Option<&str>, &str, Want)] = &[
    // exact hosts
    ("example.com:443", None, "", Allow("example.com")),
    ("example.com:80", None, "", Allow("example.com")),
    ("EXAMPLE.com:443", None, "", Allow("example.com")),
    ("example.com.:443", None, "", Allow("example.com")),
    ("www.example.com:443", None, "", Block(NoMatchingRule, None)),
    ("notexample.com:443", None, "", Block(NoMatchingRule, None)),
    (
        "example.com.evil.test:443",
        None,
        "",
        Block(NoMatchingRule, None),
    ),
    // *.domain: subdomains only, any depth
    ("a.wild.test:443", None, "", Allow("*.wild.test")),
    ("a.b.wild.test:80", None, "", Allow("*.wild.test")),
    ("wild.test:443", None, "", Block(NoMatchingRule, None)),
    ("xwild.test:443", None, "", Block(NoMatchingRule, None)),
    // deny wins
    (
        "evil.wild.test:443",
        None,
        "",
        Block(DeniedByRule, Some("evil.wild.test")),
    ),
    (
        "EVIL.Wild.Test.:443",
        None,
        "",
        Block(DeniedByRule, Some("evil.wild.test")),
    ),
    ("sub.evil.wild.test:443", None, "", Allow("*.wild.test")),
    (
        "93.184.216.66:443",
        None,
        "",
        Block(DeniedByRule, Some("93.184.216.66")),
    ),
    (
        "blocked.test:8443",
        None,
        "",
        Block(DeniedByRule, Some("blocked.test:8443")),
    ),
    ("blocked.test:443", None, "", Block(NoMatchingRule, None)),
    // host:port and *:port
    ("pinned.test:443", None, "", Bypass("pinned.test:443")),
    ("pinned.test:80", None, "", Block(NoMatchingRule, None)),
    ("anything.test:8443", None, "", Allow("*:8443")),
    ("172.32.0.1:8443", None, "", Allow("*:8443")),
    ("bypass.test:80", None, "", Bypass("bypass.test")),
    // CIDR rules decide on resolved addresses
    ("93.184.216.34:443", None, "", Allow("93.184.216.0/24")),
    (
        "cdn.test:443",
        None,
        "93.184.216.34",
        Allow("93.184.216.0/24"),
    ),
    (
        "cdn.test:443",
        None,
        "93.184.216.34,203.0.113.9",
        Block(NoMatchingRule, None),
    ),
    (
        "example.com:443",
        None,
        "93.184.216.66",
        Block(DeniedByRule, Some("93.184.216.66")),
    ),
    ("[2001:db8:1::5]:443", None, "", Allow("2001:db8:1::/48")),
    ("[2001:db8:2::5]:443", None, "", Block(NoMatchingRule, None)),
    (
        "[::ffff:93.184.216.34]:443",
        None,
        "",
        Allow("93.184.216.0/24"),
    ),
    (
        "cdn.test:443",
        None,
        "::ffff:93.184.216.34",
        Allow("93.184.216.0/24"),
    ),
    // default-blocked ranges, and allowed names resolving into them (DNS rebinding)
    (
        "127.0.0.1:8443",
        None,
        "",
        Block(DefaultBlockedRange, Some("127.0.0.0/8")),
    ),
    (
        "example.com:443",
        None,
        "127.0.0.1",
        Block(DefaultBlockedRange, Some("127.0.0.0/8")),
    ),
    (
        "example.com:443",
        None,
        "93.184.216.34,10.0.0.5",
        Block(DefaultBlockedRange, Some("10.0.0.0/8")),
    ),
    (
        "a.wild.test:443",
        None,
        "169.254.169.254",
        Block(DefaultBlockedRange, Some("169.254.0.0/16")),
    ),
    (
        "a.wild.test:443",
        None,
        "::1",
        Block(DefaultBlockedRange, Some("::1/128")),
    ),
    (
        "a.wild.test:443",
        None,
        "::ffff:192.168.1.1",
        Block(DefaultBlockedRange, Some("192.168.0.0/16")),
    ),
    (
        "169.254.169.254:8443",
        None,
        "",
        Block(DefaultBlockedRange, Some("169.254.0.0/16")),
    ),
    (
        "192.168.1.1:8443",
        None,
        "",
        Block(DefaultBlockedRange, Some("192.168.0.0/16")),
    ),
    (
        "172.16.0.1:8443",
        None,
        "",
        Block(DefaultBlockedRange, Some("172.16.0.0/12")),
    ),
    (
        "172.31.255.255:8443",
        None,
        "",
        Block(DefaultBlockedRange, Some("172.16.0.0/12")),
    ),
    (
        "0.0.0.0:8443",
        None,
        "",
        Block(DefaultBlockedRange, Some("0.0.0.0/8")),
    ),
    (
        "[::]:8443",
        None,
        "",
        Block(DefaultBlockedRange, Some("::/128")),
    ),
    (
        "[::1]:8443",
        None,
        "",
        Block(DefaultBlockedRange, Some("::1/128")),
    ),
    (
        "[fe80::1]:8443",
        None,
        "",
        Block(DefaultBlockedRange, Some("fe80::/10")),
    ),
    (
        "[fd00::1]:8443",
        None,
        "",
        Block(DefaultBlockedRange, Some("fc00::/7")),
    ),
    // an allow range inside a default range lifts it, for its port only
    ("10.1.2.3:22", None, "", Allow("10.1.2.3:22")),
    (
        "10.1.2.3:23",
        None,
        "",
        Block(DefaultBlockedRange, Some("10.0.0.0/8")),
    ),
    (
        "10.1.2.4:22",
        None,
        "",
        Block(DefaultBlockedRange, Some("10.0.0.0/8")),
    ),
    ("[fd00:1::9]:443", None, "", Allow("[fd00:1::/32]:443")),
    (
        "[fd00:1::9]:80",
        None,
        "",
        Block(DefaultBlockedRange, Some("fc00::/7")),
    ),
    // IPv4 literal forms are the addresses they mean
    (
        "2130706433:8443",
        None,
        "",
        Block(DefaultBlockedRange, Some("127.0.0.0/8")),
    ),
    (
        "0x7f000001:8443",
        None,
        "",
        Block(DefaultBlockedRange, Some("127.0.0.0/8")),
    ),
    (
        "0x7f.1:8443",
        None,
        "",
        Block(DefaultBlockedRange, Some("127.0.0.0/8")),
    ),
    (
        "127.1:8443",
        None,
        "",
        Block(DefaultBlockedRange, Some("127.0.0.0/8")),
    ),
    (
        "0177.0.0.1:8443",
        None,
        "",
        Block(DefaultBlockedRange, Some("127.0.0.0/8")),
    ),
    (
        "017700000001:8443",
        None,
        "",
        Block(DefaultBlockedRange, Some("127.0.0.0/8")),
    ),
    (
        "0xa9.0xfe.0xa9.0xfe:8443",
        None,
        "",
        Block(DefaultBlockedRange, Some("169.254.0.0/16")),
    ),
    ("1572395042:443", None, "", Allow("93.184.216.0/24")),
    (
        "[::ffff:127.0.0.1]:8443",
        None,
        "",
        Block(DefaultBlockedRange, Some("127.0.0.0/8")),
    ),
    (
        "[::ffff:7f00:1]:8443",
        None,
        "",
        Block(DefaultBlockedRange, Some("127.0.0.0/8")),
    ),
    (
        "[0:0:0:0:0:ffff:a9fe:a9fe]:8443",
        None,
        "",
        Block(DefaultBlockedRange, Some("169.254.0.0/16")),
    ),
    // per-sandbox rules
    ("sb-only.test:443", Some("sb1"), "", Allow("sb-only.test")),
    ("sb-only.test:443", None, "", Block(NoMatchingRule, None)),
    (
        "sb-only.test:443",
        Some("sb2"),
        "",
        Block(NoMatchingRule, None),
    ),
    (
        "example.com:443",
        Some("sb2"),
        "",
        Block(DeniedByRule, Some("example.com")),
    ),
    ("example.com:443", Some("sb1"), "", Allow("example.com")),
    (
        "deny-in-sb1.wild.test:443",
        Some("sb1"),
        "",
        Block(DeniedByRule, Some("deny-in-sb1.wild.test")),
    ),
    (
        "deny-in-sb1.wild.test:443",
        Some("sb2"),
        "",
        Allow("*.wild.test"),
    ),
    // refused as input: nothing a resolver could read another way
    ("1.2.3.999:443", None, "", Invalid),
    ("1.2.3.4.5:443", None, "", Invalid),
    ("exa%6dple.com:443", None, "", Invalid),
    ("example.com@evil.test:443", None, "", Invalid),
    ("ex ample.com:443", None, "", Invalid),
    ("example.com\0.evil.test:443", None, "", Invalid),
    ("exämple.com:443", None, "", Invalid),
    ("a..example.com:443", None, "", Invalid),
    ("example.com..:443", None, "", Invalid),
    ("*.wild.test:443", None, "", Invalid),
    ("example.com:0", None, "", Invalid),
    ("example.com:65536", None, "", Invalid),
    ("example.com:+443", None, "", Invalid),
    ("[fe80::1%eth0]:443", None, "", Invalid),
    ("[::1:443", None, "", Invalid),
    ("", None, "", Invalid),
];

fn addrs_of(row: &str) -> Vec<IpAddr> {
    let s = if row.is_empty() { PUBLIC } else { row };
    s.split(',').map(|a| a.parse().unwrap()).collect()
}

#[test]
fn policy_table() {
    assert!(TABLE.len() >= 40, "{} rows", TABLE.len());
    let p = table_policy();
    let mut failures = Vec::new();
    for &(target, sandbox, resolved, want) in TABLE {
        let t = match parse_target(target, 443) {
            Ok(t) => t,
            Err(e) => {
                if want != Invalid {
                    failures.push(format!("{target:?}: refused ({e}), wanted {want:?}"));
                }
                continue;
            }
        };
        let d = p.decide(sandbox, &t, Some(&addrs_of(resolved)));
        let ok = match want {
            Allow(rule) => d.allowed && !d.bypass && d.rule.as_deref() == Some(rule),
            Bypass(rule) => d.allowed && d.bypass && d.rule.as_deref() == Some(rule),
            Block(reason, rule) => !d.allowed && d.reason == reason && d.rule.as_deref() == rule,
            Invalid => false,
        };
        if !ok {
            failures.push(format!(
                "{target:?} ({sandbox:?}, {resolved:?}): got {d:?}, wanted {want:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} rows failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// `check` (no DNS) agrees with `decide` wherever the addresses cannot change the answer.
#[test]
fn check_without_dns() {
    let p = table_policy();
    let d = p.check(None, "example.com").unwrap();
    assert!(d.allowed && !d.addresses_checked && d.rule.as_deref() == Some("example.com"));
    let d = p.check(Some("sb2"), "example.com:443").unwrap();
    assert!(!d.allowed && d.reason == Reason::DeniedByRule && d.scope == "sandbox:sb2");
    let d = p.check(None, "127.1:8443").unwrap();
    assert!(!d.allowed && d.addresses_checked && d.reason == Reason::DefaultBlockedRange);
    assert_eq!(d.address, Some("127.0.0.1".parse().unwrap()));
    assert!(p.check(None, "bad host").is_err());
}

#[test]
fn rule_forms_and_errors() {
    let canon = |s: &str| Destination::parse(s).map(|d| d.to_string());
    for (input, want) in [
        ("Example.COM.", "example.com"),
        ("example.com:443", "example.com:443"),
        ("*.Example.com", "*.example.com"),
        ("**.example.com", "*.example.com"),
        ("*", "*"),
        ("**", "*"),
        ("*:443", "*:443"),
        ("10.0.0.0/8", "10.0.0.0/8"),
        ("10.1.2.3/8", "10.0.0.0/8"),
        ("10.0.0.0/8:22", "10.0.0.0/8:22"),
        ("fc00::/7", "fc00::/7"),
        ("[fc00::/7]:443", "[fc00::/7]:443"),
        ("::ffff:10.0.0.0/104", "10.0.0.0/8"),
        ("1.2.3.4", "1.2.3.4"),
        ("1.2.3.4:22", "1.2.3.4:22"),
        ("[::1]:443", "[::1]:443"),
        ("::1", "::1"),
        ("[::ffff:1.2.3.4]", "1.2.3.4"),
        (" example.com ", "example.com"),
    ] {
        assert_eq!(canon(input).as_deref(), Ok(want), "{input:?}");
    }
    let err = |s: &str| Destination::parse(s).unwrap_err();
    assert_eq!(err(""), RuleError::Empty);
    assert_eq!(err("   "), RuleError::Empty);
    assert_eq!(err(&"a".repeat(400)), RuleError::TooLong);
    for w in [
        "foo.*.com",
        "*foo.com",
        "*.",
        "*.*.com",
        "f*",
        "*.1.2.3.4",
        "*.127.1",
    ] {
        assert!(
            matches!(err(w), RuleError::BadWildcard(_) | RuleError::BadHost(_)),
            "{w}: {:?}",
            err(w)
        );
    }
    assert!(matches!(
        err("*."),
        RuleError::BadHost(_) | RuleError::BadWildcard(_)
    ));
    for c in [
        "10/8",
        "1.2.3.0/33",
        "fc00::/129",
        "10.0.0.0/",
        "10.0.0.0/8:x",
        "1.2.3.0/-1",
    ] {
        assert!(
            matches!(
                err(c),
                RuleError::BadCidr(_) | RuleError::BadHost(_) | RuleError::NonCanonicalIp { .. }
            ),
            "{c}: {:?}",
            err(c)
        );
    }
    let lo = Some("127.0.0.1".parse().unwrap());
    for n in ["127.1", "2130706433", "0x7f.1", "0177.0.0.1", "0x7f000001"] {
        assert_eq!(
            err(n),
            RuleError::NonCanonicalIp {
                input: n.into(),
                means: lo
            },
            "{n}"
        );
    }
    assert!(matches!(
        err("1.2.3.999"),
        RuleError::NonCanonicalIp { means: None, .. }
    ));
    assert!(matches!(
        err("example.com:0"),
        RuleError::BadHost(TargetError::BadPort(_))
    ));
    assert!(matches!(
        err("exämple.com"),
        RuleError::BadHost(TargetError::NonAscii)
    ));
    assert!(matches!(
        err("a b"),
        RuleError::BadHost(TargetError::BadCharacter(' '))
    ));
    assert!(matches!(
        err("[fe80::1%eth0]"),
        RuleError::BadHost(TargetError::ZoneId)
    ));
    // every error has a message
    assert!(err("foo.*.com").to_string().contains("wildcard"));
}

#[test]
fn presets() {
    let open = Policy::new(Preset::AllowAll);
    assert!(open.check(None, "anything.example:443").unwrap().allowed);
    assert!(!open.check(None, "10.0.0.1:443").unwrap().allowed);
    let closed = Policy::new(Preset::DenyAll);
    assert!(closed.rules().is_empty());
    assert!(!closed.check(None, "api.anthropic.com").unwrap().allowed);
    let balanced = Policy::new(Preset::Balanced);
    for ok in [
        "api.anthropic.com",
        "registry.npmjs.org",
        "github.com",
        "raw.githubusercontent.com",
        "pypi.org",
    ] {
        assert!(balanced.check(None, ok).unwrap().allowed, "{ok}");
    }
    for no in [
        "example.com",
        "evil.test",
        "s3.amazonaws.com",
        "anthropic.com",
    ] {
        assert!(!balanced.check(None, no).unwrap().allowed, "{no}");
    }
    assert_eq!(Preset::parse("balanced"), Some(Preset::Balanced));
    assert_eq!(Preset::parse("open"), None);
}

#[test]
fn runtime_changes_and_scopes() {
    let p = Policy::new(Preset::DenyAll);
    let g = Scope::Global;
    let sb = Scope::Sandbox("s".into());
    assert!(!p.check(Some("s"), "a.test").unwrap().allowed);
    assert!(p.add(&sb, Action::Allow, "a.test").unwrap());
    assert!(
        !p.add(&sb, Action::Allow, "A.TEST.").unwrap(),
        "same rule after normalisation"
    );
    let d = p.check(Some("s"), "a.test").unwrap();
    assert!(d.allowed && d.scope == "sandbox:s");
    assert!(p.add(&g, Action::Deny, "*").unwrap());
    let d = p.check(Some("s"), "a.test").unwrap();
    assert!(
        !d.allowed && d.scope == "global" && d.rule.as_deref() == Some("*"),
        "global deny beats sandbox allow"
    );
    assert!(p.remove(&g, Action::Deny, "*").unwrap());
    assert!(!p.remove(&g, Action::Deny, "*").unwrap());
    assert!(p.check(Some("s"), "a.test").unwrap().allowed);
    assert_eq!(p.rules().len(), 1);
    assert_eq!(p.rules()[0].scope, sb);
    assert_eq!(p.drop_sandbox("s"), 1);
    assert!(!p.check(Some("s"), "a.test").unwrap().allowed);
    assert!(p.rules().is_empty());
    assert!(p.add(&g, Action::Allow, "nope.*").is_err());
    p.add(&g, Action::Allow, "x.test").unwrap();
    p.reset(Preset::DenyAll);
    assert!(p.rules().is_empty());
}

/// 1,000 rules of mixed forms still decide correctly (the speed is measured by `bench/floor/policy_floor.rs`).
#[test]
fn thousand_rules() {
    let p = Policy::new(Preset::DenyAll);
    for r in thousand_rules_text() {
        p.add(
            &Scope::Global,
            if r.starts_with('!') {
                Action::Deny
            } else {
                Action::Allow
            },
            r.trim_start_matches('!'),
        )
        .unwrap();
    }
    assert_eq!(p.rules().len(), 1000);
    assert!(p.check(None, "host990.example:443").unwrap().allowed);
    assert!(p.check(None, "a.b.zone45.example:443").unwrap().allowed);
    assert!(
        !p.check(None, "host42.example:443").unwrap().allowed,
        "denied"
    );
    assert!(!p.check(None, "nothing.example:443").unwrap().allowed);
}

/// The rule mix used by the test above and by the benchmark: exact names, suffixes, ranges, a few denies.
pub fn thousand_rules_text() -> Vec<String> {
    (0..1000)
        .map(|i| match i % 10 {
            0..=4 => format!("host{i}.example"),
            5 | 6 => format!("*.zone{i}.example"),
            7 => format!("198.51.{}.0/24", i % 256),
            8 => format!("host{i}.example:443"),
            _ => format!("!host{}.example", i - 7),
        })
        .collect()
}
