//! Webhook targets that would loop back into this server are refused: a service URI that
//! reaches any address of Wharf's own listener (its management or registry API) is refused at
//! create/update, and checked again at send time, because a DNS name can start resolving to
//! us after it was accepted. (A delivery to our own API could raise more events, each
//! delivered to ourselves again.)
//!
//! The send-time check resolves the name itself and then lets the HTTP client resolve it
//! again, so a name that flips between the two lookups is not caught; the SSRF guard of the
//! access-control work closes that window by connecting to the vetted address.

use std::net::{IpAddr, SocketAddr};

/// What the history and errors say about a refused target (never the URI: it is secret).
pub const REFUSED_SELF: &str = "refused: the service URI reaches this registry's own listener";

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
        let ip = canonical(ip);
        let own_ip = canonical(own.ip());
        if own_ip.is_unspecified() {
            // Listening on every address: any address of this machine (or an unspecified
            // target, which connects to this machine) reaches us.
            return ip.is_unspecified() || ip.is_loopback() || is_local(ip);
        }
        // Connecting to 0.0.0.0 or :: reaches this machine's loopback.
        ip == own_ip || (ip.is_unspecified() && own_ip.is_loopback())
    }

    /// Resolves the URI's host and refuses it if any of its addresses is us. A name that does
    /// not resolve passes (the attempt will fail and say so); a malformed URI passes too
    /// (validation refuses it elsewhere).
    pub async fn check_uri(&self, uri: &str) -> Result<(), &'static str> {
        if self.own.is_none() {
            return Ok(());
        }
        let Ok(url) = reqwest::Url::parse(uri) else {
            return Ok(());
        };
        let Some(port) = url.port_or_known_default() else {
            return Ok(());
        };
        let Some(host) = url.host_str() else {
            return Ok(());
        };
        // IPv6 literals come bracketed.
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<SocketAddr> = match literal.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => match tokio::net::lookup_host((host, port)).await {
                Ok(a) => a.collect(),
                Err(_) => return Ok(()),
            },
        };
        if addrs.iter().any(|a| self.is_self(a.ip(), a.port())) {
            return Err(REFUSED_SELF);
        }
        Ok(())
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:127.0.0.1`) are the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
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
        let g = SelfGuard::new(Some("127.0.0.1:5000".parse().unwrap()));
        for uri in [
            "http://127.0.0.1:5000/wharf/v1/webhooks/x/ping",
            "http://localhost:5000/v2/",
            "http://[::ffff:127.0.0.1]:5000/",
            "http://0.0.0.0:5000/",
        ] {
            assert_eq!(g.check_uri(uri).await, Err(REFUSED_SELF), "{uri}");
        }
        for uri in [
            "http://127.0.0.1:5001/hook",
            "http://127.0.0.1/hook",
            "https://127.0.0.1/",
        ] {
            assert_eq!(g.check_uri(uri).await, Ok(()), "{uri}");
        }
    }
}
