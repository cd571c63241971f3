//! Where webhooks may send: the SSRF guard and the loop guard.
//!
//! **SSRF guard.** A service URI is chosen by whoever may manage webhooks, and the server
//! then POSTs to it from inside the operator's network: without a guard, a webhook (or a
//! ping, Harbor's CVE-2020-13788) reaches cloud metadata endpoints, admin consoles on
//! loopback and private services. So every address a delivery would connect to is checked
//! against the blocked ranges of [`classify`] (loopback, RFC 1918, unique local, link-local,
//! CGNAT, multicast, broadcast, unspecified, documentation, benchmarking and reserved ranges,
//! cloud metadata endpoints, and IPv6 forms that carry such an IPv4 address).
//!
//! The check happens **after resolution, on the address that is then connected to**: the
//! HTTP client resolves names only through [`GuardedResolver`], which drops blocked
//! addresses (and fails the lookup, with the reason, when none is left), so a name that
//! resolves to a public address for a check and to a private one for the connection (DNS
//! rebinding) cannot slip through. IP literals never reach a resolver; the sender checks them
//! before sending ([`TargetGuard::check_literal`]). At create and update only literals can be
//! refused: what a name resolves to is decided at every send.
//!
//! Operators open what they need with an allow-list of networks. Loopback is open in Wharf's
//! development mode (see `HooksConfig::allow_loopback`), so local receivers work out of the
//! box there. Cloud metadata endpoints open only for an allow-list entry naming that exact
//! address: opening 169.254.0.0/16 for a device should not hand out cloud credentials.
//!
//! **Loop guard.** A service URI that reaches Wharf's own listener is refused whatever the
//! allow-list says: a delivery to our own API could raise more events, each delivered to
//! ourselves again (a ping aimed at the ping operation would never end).

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;

/// What the history and errors say about a target that is our own listener (never the URI:
/// it is secret).
pub const REFUSED_SELF: &str = "refused: the service URI reaches this registry's own listener";

/// A blocked address range, named for messages (the rule, never the address asked for).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule(pub &'static str);

pub const LOOPBACK: Rule = Rule("loopback (127.0.0.0/8, ::1)");
pub const PRIVATE: Rule =
    Rule("private network (RFC 1918: 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16)");
pub const UNIQUE_LOCAL: Rule = Rule("unique local IPv6 (fc00::/7)");
pub const LINK_LOCAL: Rule = Rule("link-local (169.254.0.0/16, fe80::/10)");
pub const CLOUD_METADATA: Rule = Rule("cloud metadata endpoint");
pub const CGNAT: Rule = Rule("shared address space (CGNAT, 100.64.0.0/10)");
pub const MULTICAST: Rule = Rule("multicast");
pub const UNSPECIFIED: Rule = Rule("unspecified address (0.0.0.0, ::)");
pub const BROADCAST: Rule = Rule("broadcast (255.255.255.255)");
pub const THIS_NETWORK: Rule = Rule("\"this network\" (0.0.0.0/8)");
pub const IETF_V4: Rule = Rule("IETF protocol assignments (192.0.0.0/24)");
pub const DOCUMENTATION: Rule = Rule("documentation range");
pub const RELAY_6TO4: Rule = Rule("6to4 relay anycast (192.88.99.0/24)");
pub const BENCHMARKING: Rule = Rule("benchmarking (198.18.0.0/15)");
pub const RESERVED_V4: Rule = Rule("reserved (240.0.0.0/4)");
pub const SITE_LOCAL: Rule = Rule("site-local IPv6 (fec0::/10)");
pub const NAT64_LOCAL: Rule = Rule("local-use NAT64 (64:ff9b:1::/48)");
pub const DISCARD: Rule = Rule("discard-only IPv6 (100::/64)");
pub const IETF_V6: Rule = Rule("IETF protocol assignments and Teredo (2001::/23)");
pub const SIX_TO_FOUR: Rule = Rule("6to4 (2002::/16)");
pub const RESERVED_V6: Rule = Rule("reserved IPv6 (outside global unicast 2000::/3)");

/// Cloud instance metadata and platform endpoints, which hand out credentials to whoever
/// asks from inside the instance: AWS, GCP, Azure, OpenStack and Oracle (169.254.169.254),
/// the AWS ECS task endpoint (169.254.170.2), Alibaba (100.100.100.200), Azure's WireServer
/// (168.63.129.16, a public address, so only this list blocks it) and AWS's IPv6 endpoint.
const METADATA: [IpAddr; 5] = [
    IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)),
    IpAddr::V4(Ipv4Addr::new(169, 254, 170, 2)),
    IpAddr::V4(Ipv4Addr::new(100, 100, 100, 200)),
    IpAddr::V4(Ipv4Addr::new(168, 63, 129, 16)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)),
];

/// Why a target is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The target is this server's own listener (a loop).
    OwnListener,
    /// The address is in a blocked range.
    Blocked(Rule),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::OwnListener => f.write_str(REFUSED_SELF),
            Refusal::Blocked(Rule(rule)) => write!(
                f,
                "refused: the service URI reaches a blocked address: {rule}; an operator can \
                 open it with [webhooks] allow_networks"
            ),
        }
    }
}

impl std::error::Error for Refusal {}

/// A host name that did not resolve (the history says so rather than "connection failed").
#[derive(Debug)]
pub struct LookupFailed;

impl std::fmt::Display for LookupFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the service URI's host name could not be resolved")
    }
}

impl std::error::Error for LookupFailed {}

/// The blocked range `ip` is in, if any. IPv4-mapped (`::ffff:a.b.c.d`), IPv4-translated,
/// IPv4-compatible (`::a.b.c.d`) and NAT64 (`64:ff9b::a.b.c.d`) addresses are judged by the
/// IPv4 address they carry, since that is what they reach.
pub fn classify(ip: IpAddr) -> Option<Rule> {
    let ip = canonical(ip);
    if METADATA.contains(&ip) {
        return Some(CLOUD_METADATA);
    }
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<Rule> {
    if ip.is_unspecified() {
        return Some(UNSPECIFIED);
    }
    if ip.is_broadcast() {
        return Some(BROADCAST);
    }
    Some(match ip.octets() {
        [0, ..] => THIS_NETWORK,
        [10, ..] | [172, 16..=31, ..] | [192, 168, ..] => PRIVATE,
        [100, 64..=127, ..] => CGNAT,
        [127, ..] => LOOPBACK,
        [169, 254, ..] => LINK_LOCAL,
        [192, 0, 0, _] => IETF_V4,
        [192, 0, 2, _] | [198, 51, 100, _] | [203, 0, 113, _] => DOCUMENTATION,
        [192, 88, 99, _] => RELAY_6TO4,
        [198, 18..=19, ..] => BENCHMARKING,
        [224..=239, ..] => MULTICAST,
        [240..=255, ..] => RESERVED_V4,
        _ => return None,
    })
}

fn classify_v6(ip: Ipv6Addr) -> Option<Rule> {
    if ip.is_unspecified() {
        return Some(UNSPECIFIED);
    }
    if ip.is_loopback() {
        return Some(LOOPBACK);
    }
    let s = ip.segments();
    Some(match s {
        [a, ..] if a & 0xff00 == 0xff00 => MULTICAST,
        [a, ..] if a & 0xfe00 == 0xfc00 => UNIQUE_LOCAL,
        [a, ..] if a & 0xffc0 == 0xfe80 => LINK_LOCAL,
        [a, ..] if a & 0xffc0 == 0xfec0 => SITE_LOCAL,
        [0x64, 0xff9b, 1, ..] => NAT64_LOCAL,
        [0x100, 0, 0, 0, ..] => DISCARD,
        [0x2001, 0xdb8, ..] => DOCUMENTATION,
        [0x2001, b, ..] if b < 0x200 => IETF_V6,
        [a, ..] if a & 0xfff0 == 0x3ff0 => DOCUMENTATION,
        [0x2002, ..] => SIX_TO_FOUR,
        // Everything else outside global unicast is unassigned or special-purpose.
        [a, ..] if a & 0xe000 != 0x2000 => RESERVED_V6,
        _ => return None,
    })
}

/// The IPv4 address an IPv6 address stands for, if it carries one; otherwise the address.
fn canonical(ip: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = ip else {
        return ip;
    };
    let s = v6.segments();
    let o = v6.octets();
    let v4 = IpAddr::V4(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
    match s {
        // IPv4-mapped ::ffff:a.b.c.d and IPv4-translated ::ffff:0:a.b.c.d.
        [0, 0, 0, 0, 0, 0xffff, ..] | [0, 0, 0, 0, 0xffff, 0, ..] => v4,
        // NAT64's well-known prefix: a DNS64 resolver returns these for IPv4-only hosts on an
        // IPv6-only network, and the gateway connects to the IPv4 address inside.
        [0x64, 0xff9b, 0, 0, 0, 0, ..] => v4,
        // IPv4-compatible ::a.b.c.d (deprecated), but not :: and ::1, which are their own.
        [0, 0, 0, 0, 0, 0, hi, lo] if hi != 0 || lo > 1 => v4,
        _ => ip,
    }
}

/// Knows this server's listening address.
#[derive(Debug, Clone, Copy, Default)]
pub struct SelfGuard {
    own: Option<SocketAddr>,
}

impl SelfGuard {
    pub fn new(own: Option<SocketAddr>) -> Self {
        SelfGuard { own }
    }

    /// Whether a connection to `ip:port` would reach our listener.
    pub fn is_self(&self, ip: IpAddr, port: u16) -> bool {
        let Some(own) = self.own else {
            return false;
        };
        if port != own.port() {
            return false;
        }
        let ip = mapped(ip);
        let own_ip = mapped(own.ip());
        if own_ip.is_unspecified() {
            // Listening on every address: any address of this machine (or an unspecified
            // target, which connects to this machine) reaches us.
            return ip.is_unspecified() || ip.is_loopback() || is_local(ip);
        }
        // Connecting to 0.0.0.0 or :: reaches this machine's loopback.
        ip == own_ip || (ip.is_unspecified() && own_ip.is_loopback())
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:127.0.0.1`) are the IPv4 address they carry: a socket
/// connected to one reaches that IPv4 address.
fn mapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// Whether `ip` is an address of this machine: binding a socket to it succeeds only then.
/// (No portable interface listing in std; this asks the kernel the same question.)
fn is_local(ip: IpAddr) -> bool {
    std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// The guard of every delivery target: the loop guard, then the SSRF rules with the
/// operator's exceptions.
#[derive(Debug, Clone, Default)]
pub struct TargetGuard {
    own: SelfGuard,
    allow_loopback: bool,
    allow: Arc<[IpNet]>,
}

impl TargetGuard {
    /// `allow_loopback` opens 127.0.0.0/8 and ::1; `allow` opens whole networks.
    pub fn new(own: Option<SocketAddr>, allow_loopback: bool, allow: Vec<IpNet>) -> Self {
        TargetGuard {
            own: SelfGuard::new(own),
            allow_loopback,
            allow: allow.into(),
        }
    }

    /// Checks one address a delivery would connect to. `port` is the target's port if known;
    /// without it, any address of our listener counts as our listener (fail closed).
    pub fn check_addr(&self, ip: IpAddr, port: Option<u16>) -> Result<(), Refusal> {
        let own_port = self.own.own.map(|o| o.port());
        if let Some(p) = port.or(own_port)
            && self.own.is_self(ip, p)
        {
            return Err(Refusal::OwnListener);
        }
        match classify(ip) {
            None => Ok(()),
            Some(rule) if self.opens(ip, rule) => Ok(()),
            Some(rule) => Err(Refusal::Blocked(rule)),
        }
    }

    /// Whether the operator opened this blocked address.
    fn opens(&self, ip: IpAddr, rule: Rule) -> bool {
        if rule == LOOPBACK && self.allow_loopback {
            return true;
        }
        let c = canonical(ip);
        self.allow.iter().any(|net| {
            if rule == CLOUD_METADATA {
                // Only an entry naming exactly this endpoint opens it.
                net.prefix_len() == net.max_prefix_len() && (net.addr() == c || net.addr() == ip)
            } else {
                net.contains(&c) || net.contains(&ip)
            }
        })
    }

    /// The target's literal address and port, if its host is an IP literal.
    fn literal(uri: &str) -> Option<SocketAddr> {
        let url = reqwest::Url::parse(uri).ok()?;
        let port = url.port_or_known_default()?;
        // The URL parser has already normalised IPv4 forms (`2130706433`, `0x7f.1`) to
        // dotted quads; IPv6 literals come bracketed.
        let host = url.host_str()?;
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        literal
            .parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, port))
    }

    /// Checks a URI whose host is an IP literal (those never reach the resolver). Names pass:
    /// [`GuardedResolver`] checks what they resolve to when a delivery connects. A malformed
    /// URI passes too (validation refuses it elsewhere).
    pub fn check_literal(&self, uri: &str) -> Result<(), Refusal> {
        match Self::literal(uri) {
            Some(a) => self.check_addr(a.ip(), Some(a.port())),
            None => Ok(()),
        }
    }

    /// The check at create and update: a literal address must pass every rule; a name must
    /// not resolve to our own listener (a loop is refused at once, even if the name may
    /// change later; the SSRF rules are applied to names at every send, since what a name
    /// resolves to is only known then). A name that does not resolve passes.
    pub async fn check_uri(&self, uri: &str) -> Result<(), Refusal> {
        if Self::literal(uri).is_some() {
            return self.check_literal(uri);
        }
        if self.own.own.is_none() {
            return Ok(());
        }
        let Ok(url) = reqwest::Url::parse(uri) else {
            return Ok(());
        };
        let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
            return Ok(());
        };
        let Ok(addrs) = tokio::net::lookup_host((host, port)).await else {
            return Ok(());
        };
        for a in addrs {
            if self.own.is_self(a.ip(), a.port()) {
                return Err(Refusal::OwnListener);
            }
        }
        Ok(())
    }

    /// Runs a send with the target's port known to [`GuardedResolver`], which reqwest calls
    /// with the host name only: the loop guard needs the port to tell our listener from a
    /// receiver on another port of the same address.
    pub async fn with_port<F: Future>(port: u16, send: F) -> F::Output {
        TARGET_PORT.scope(port, send).await
    }
}

tokio::task_local! {
    /// The port of the delivery being sent on this task (see [`TargetGuard::with_port`]).
    static TARGET_PORT: u16;
}

/// The HTTP client's only resolver: resolves with the system resolver, then keeps only the
/// addresses the guard allows, so the connection goes to an address that was checked.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    guard: TargetGuard,
}

impl GuardedResolver {
    pub fn new(guard: TargetGuard) -> Self {
        GuardedResolver { guard }
    }
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = self.guard.clone();
        // Read now: the client calls `resolve` while the sender's task polls it, inside
        // `with_port`; the returned future may run elsewhere.
        let port = TARGET_PORT.try_with(|p| *p).ok();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|_| Box::new(LookupFailed) as Box<dyn std::error::Error + Send + Sync>)?;
            let mut refused = None;
            let allowed: Vec<SocketAddr> = addrs
                .filter(|a| match guard.check_addr(a.ip(), port) {
                    Ok(()) => true,
                    Err(r) => {
                        // The loop guard's reason matters most; otherwise the first rule.
                        if refused.is_none() || r == Refusal::OwnListener {
                            refused = Some(r);
                        }
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                return Err(match refused {
                    Some(r) => Box::new(r) as Box<dyn std::error::Error + Send + Sync>,
                    None => Box::new(LookupFailed),
                });
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The guard's refusal (or a failed lookup) somewhere in an HTTP client error's causes.
pub fn refusal_in(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<Refusal>() {
            return Some(r.to_string());
        }
        if let Some(l) = err.downcast_ref::<LookupFailed>() {
            return Some(l.to_string());
        }
        cur = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_our_own_listener_is_self() {
        let g = SelfGuard::new(Some("127.0.0.1:5000".parse().unwrap()));
        assert!(g.is_self(ip("127.0.0.1"), 5000));
        assert!(g.is_self(ip("::ffff:127.0.0.1"), 5000));
        assert!(g.is_self(ip("0.0.0.0"), 5000));
        assert!(
            !g.is_self(ip("127.0.0.1"), 5001),
            "a local receiver on another port"
        );
        assert!(
            !g.is_self(ip("127.0.0.2"), 5000),
            "another loopback address"
        );
        assert!(!SelfGuard::default().is_self(ip("127.0.0.1"), 5000));

        let any = SelfGuard::new(Some("0.0.0.0:5000".parse().unwrap()));
        assert!(any.is_self(ip("127.0.0.1"), 5000));
        assert!(any.is_self(ip("127.0.0.9"), 5000));
        assert!(
            !any.is_self(ip("192.0.2.1"), 5000),
            "TEST-NET-1 is never local"
        );
        let v6 = SelfGuard::new(Some("[::]:5000".parse().unwrap()));
        assert!(v6.is_self(ip("::1"), 5000));
        assert!(v6.is_self(ip("127.0.0.1"), 5000));
    }

    #[tokio::test]
    async fn names_and_literals_that_reach_us_are_refused() {
        // Development mode: loopback open, our own listener still refused.
        let g = TargetGuard::new(Some("127.0.0.1:5000".parse().unwrap()), true, vec![]);
        for uri in [
            "http://127.0.0.1:5000/wharf/v1/webhooks/x/ping",
            "http://localhost:5000/v2/",
            "http://[::ffff:127.0.0.1]:5000/",
            "http://0.0.0.0:5000/",
        ] {
            assert_eq!(g.check_uri(uri).await, Err(Refusal::OwnListener), "{uri}");
        }
        for uri in [
            "http://127.0.0.1:5001/hook",
            "http://127.0.0.1/hook",
            "https://127.0.0.1/",
            "http://localhost:5001/hook",
        ] {
            assert_eq!(g.check_uri(uri).await, Ok(()), "{uri}");
        }
    }

    #[test]
    fn blocked_ranges_are_named() {
        let cases = [
            ("127.0.0.1", LOOPBACK),
            ("127.255.0.9", LOOPBACK),
            ("::1", LOOPBACK),
            ("10.1.2.3", PRIVATE),
            ("172.16.0.1", PRIVATE),
            ("172.31.255.255", PRIVATE),
            ("192.168.1.1", PRIVATE),
            ("fd12:3456::1", UNIQUE_LOCAL),
            ("fc00::1", UNIQUE_LOCAL),
            ("169.254.1.1", LINK_LOCAL),
            ("fe80::1", LINK_LOCAL),
            ("169.254.169.254", CLOUD_METADATA),
            ("fd00:ec2::254", CLOUD_METADATA),
            ("168.63.129.16", CLOUD_METADATA),
            ("100.100.100.200", CLOUD_METADATA),
            ("100.64.0.1", CGNAT),
            ("100.127.255.254", CGNAT),
            ("224.0.0.1", MULTICAST),
            ("ff02::1", MULTICAST),
            ("0.0.0.0", UNSPECIFIED),
            ("::", UNSPECIFIED),
            ("255.255.255.255", BROADCAST),
            ("0.1.2.3", THIS_NETWORK),
            ("192.0.0.8", IETF_V4),
            ("192.0.2.1", DOCUMENTATION),
            ("198.51.100.7", DOCUMENTATION),
            ("203.0.113.9", DOCUMENTATION),
            ("2001:db8::1", DOCUMENTATION),
            ("3fff::1", DOCUMENTATION),
            ("192.88.99.1", RELAY_6TO4),
            ("198.18.0.1", BENCHMARKING),
            ("198.19.255.1", BENCHMARKING),
            ("240.0.0.1", RESERVED_V4),
            ("fec0::1", SITE_LOCAL),
            ("64:ff9b:1::1", NAT64_LOCAL),
            ("100::1", DISCARD),
            ("2001::1", IETF_V6),
            ("2002:c000:0204::1", SIX_TO_FOUR),
            ("4000::1", RESERVED_V6),
            // IPv6 forms of blocked IPv4 addresses are judged by what they carry.
            ("::ffff:127.0.0.1", LOOPBACK),
            ("::ffff:10.0.0.1", PRIVATE),
            ("::ffff:169.254.169.254", CLOUD_METADATA),
            ("::ffff:0:192.168.0.1", PRIVATE),
            ("::127.0.0.1", LOOPBACK),
            ("::10.0.0.1", PRIVATE),
            ("64:ff9b::127.0.0.1", LOOPBACK),
            ("64:ff9b::a9fe:a9fe", CLOUD_METADATA),
        ];
        for (addr, rule) in cases {
            assert_eq!(classify(ip(addr)), Some(rule), "{addr}");
        }
        for addr in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "169.255.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::8.8.8.8",
            "::8.8.8.8",
        ] {
            assert_eq!(classify(ip(addr)), None, "{addr}");
        }
    }

    #[test]
    fn allow_list_and_development_mode_open_what_they_name() {
        let nets = |v: &[&str]| v.iter().map(|n| n.parse().unwrap()).collect::<Vec<IpNet>>();
        let strict = TargetGuard::new(None, false, vec![]);
        assert_eq!(
            strict.check_addr(ip("127.0.0.1"), Some(80)),
            Err(Refusal::Blocked(LOOPBACK))
        );
        assert_eq!(strict.check_addr(ip("8.8.8.8"), Some(80)), Ok(()));

        let dev = TargetGuard::new(None, true, vec![]);
        assert_eq!(dev.check_addr(ip("127.0.0.1"), Some(80)), Ok(()));
        assert_eq!(dev.check_addr(ip("::1"), Some(80)), Ok(()));
        assert_eq!(dev.check_addr(ip("::ffff:127.0.0.1"), Some(80)), Ok(()));
        assert_eq!(
            dev.check_addr(ip("10.0.0.1"), Some(80)),
            Err(Refusal::Blocked(PRIVATE)),
            "development mode opens loopback only"
        );
        assert_eq!(
            dev.check_addr(ip("0.0.0.0"), Some(80)),
            Err(Refusal::Blocked(UNSPECIFIED))
        );

        let g = TargetGuard::new(None, false, nets(&["10.0.0.0/8", "169.254.0.0/16"]));
        assert_eq!(g.check_addr(ip("10.9.8.7"), Some(80)), Ok(()));
        assert_eq!(g.check_addr(ip("::ffff:10.9.8.7"), Some(80)), Ok(()));
        assert_eq!(g.check_addr(ip("169.254.1.1"), Some(80)), Ok(()));
        assert_eq!(
            g.check_addr(ip("169.254.169.254"), Some(80)),
            Err(Refusal::Blocked(CLOUD_METADATA)),
            "a wide entry does not open the metadata endpoint"
        );
        assert_eq!(
            g.check_addr(ip("192.168.0.1"), Some(80)),
            Err(Refusal::Blocked(PRIVATE))
        );
        let exact = TargetGuard::new(None, false, nets(&["169.254.169.254/32"]));
        assert_eq!(exact.check_addr(ip("169.254.169.254"), Some(80)), Ok(()));

        // The loop guard holds whatever is open; without a port, any port counts as ours.
        let own = TargetGuard::new(
            Some("127.0.0.1:5000".parse().unwrap()),
            true,
            nets(&["127.0.0.0/8"]),
        );
        assert_eq!(
            own.check_addr(ip("127.0.0.1"), Some(5000)),
            Err(Refusal::OwnListener)
        );
        assert_eq!(own.check_addr(ip("127.0.0.1"), Some(5001)), Ok(()));
        assert_eq!(
            own.check_addr(ip("127.0.0.1"), None),
            Err(Refusal::OwnListener)
        );
    }

    #[test]
    fn literals_are_checked_and_names_left_to_the_resolver() {
        let g = TargetGuard::new(None, false, vec![]);
        for uri in [
            "http://127.0.0.1:8080/x",
            "http://[::1]/x",
            "http://[::ffff:7f00:1]/x",
            "http://169.254.169.254/latest/meta-data/",
            "https://10.0.0.1/",
            "http://2130706433/",
            "http://0x7f.1/",
        ] {
            assert!(
                matches!(g.check_literal(uri), Err(Refusal::Blocked(_))),
                "{uri}"
            );
        }
        assert_eq!(g.check_literal("http://localhost:8080/x"), Ok(()));
        assert_eq!(g.check_literal("http://8.8.8.8/x"), Ok(()));
    }

    #[tokio::test]
    async fn the_resolver_drops_blocked_addresses_and_says_why() {
        use reqwest::dns::Resolve;
        let strict = GuardedResolver::new(TargetGuard::new(None, false, vec![]));
        let err = match strict.resolve("localhost".parse().unwrap()).await {
            Ok(_) => panic!("localhost resolved to something allowed"),
            Err(e) => e,
        };
        assert_eq!(
            refusal_in(err.as_ref()),
            Some(Refusal::Blocked(LOOPBACK).to_string())
        );
        let dev = GuardedResolver::new(TargetGuard::new(None, true, vec![]));
        let addrs: Vec<SocketAddr> = match dev.resolve("localhost".parse().unwrap()).await {
            Ok(a) => a.collect(),
            Err(e) => panic!("{e}"),
        };
        assert!(!addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback()));
    }
}
