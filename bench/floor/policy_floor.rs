//! Policy decisions per second with 1,000 rules (issue #19's "policy decisions per second with 1,000 rules").
//!
//! `cargo run --profile bench-helper --no-default-features --example policy-floor [SECS]` builds a store with
//! 1,000 global rules (exact names, `host:port`, `*.domain`, CIDRs, denies), then decides a rotating mix of 64
//! targets (allowed by name, by suffix, by CIDR, denied, default-blocked, unmatched; each name with one resolved
//! address, as the proxy decides) on one thread for SECS seconds (default 3), and prints one JSON line:
//! `{ "rules", "decisions", "secs", "perSec", "nsPerDecision", "allowed" }`.

use sandboxd::core::policy::{parse_target, Action, Policy, Preset, Scope, Target};
use std::hint::black_box;
use std::net::IpAddr;
use std::time::{Duration, Instant};

fn main() {
    let secs: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let policy = Policy::new(Preset::DenyAll);
    for i in 0..1000 {
        let (action, rule) = match i % 10 {
            0..=4 => (Action::Allow, format!("host{i}.example")),
            5 | 6 => (Action::Allow, format!("*.zone{i}.example")),
            7 => (Action::Allow, format!("198.51.{}.0/24", i % 256)),
            8 => (Action::Allow, format!("host{i}.example:443")),
            _ => (Action::Deny, format!("host{}.example", i - 7)),
        };
        policy.add(&Scope::Global, action, &rule).expect("rule");
    }
    assert_eq!(policy.rules().len(), 1000);
    let public: IpAddr = "203.0.113.10".parse().unwrap();
    let cases: Vec<(Target, Vec<IpAddr>)> = (0..64)
        .map(|k| {
            let i = k * 15 + 3;
            let (t, a): (String, IpAddr) = match k % 8 {
                0 => (format!("host{}.example:443", i - i % 10), public),
                1 => (format!("a.b.zone{}.example:443", i - i % 10 + 5), public),
                2 => (
                    format!("cdn{k}.test:443"),
                    format!("198.51.{}.7", (i - i % 10 + 7) % 256)
                        .parse()
                        .unwrap(),
                ),
                3 => (format!("host{}.example:443", i - i % 10 + 2), public),
                4 => (
                    format!("host{}.example:443", i - i % 10),
                    "10.0.0.1".parse().unwrap(),
                ),
                5 => (format!("nothing{k}.example:443"), public),
                6 => (format!("host{}.example:443", i - i % 10 + 8), public),
                _ => (format!("Host{}.Example.:80", i - i % 10 + 8), public),
            };
            (parse_target(&t, 443).expect("target"), vec![a])
        })
        .collect();
    let until = Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut n: u64 = 0;
    let mut allowed: u64 = 0;
    while start.elapsed() < until {
        for (t, a) in &cases {
            let d = policy.decide(black_box(Some("sb")), black_box(t), Some(a));
            allowed += d.allowed as u64;
        }
        n += cases.len() as u64;
    }
    let el = start.elapsed().as_secs_f64();
    println!(
        "{{\"rules\":1000,\"decisions\":{n},\"secs\":{el:.3},\"perSec\":{:.0},\"nsPerDecision\":{:.0},\"allowed\":{allowed}}}",
        n as f64 / el,
        el * 1e9 / n as f64
    );
}
