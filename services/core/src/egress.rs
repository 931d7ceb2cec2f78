//! Where a task pack's `http` step may connect: the egress policy of the task runner.
//!
//! Task packs are written by any tenant's operators, so a step's URL is untrusted input: without
//! a policy it reaches the services' own ports on loopback, the cluster's service network and
//! the cloud's metadata endpoint, and reads their answers back as an artifact (server-side
//! request forgery). The policy, on by default:
//! - **Addresses.** The address that is actually connected to, after DNS resolution and at
//!   connect time (so a name that resolves to loopback, or rebinds to it, does not pass), must
//!   not be loopback, private, shared (CGNAT), link-local, unique-local, multicast, unspecified,
//!   reserved or a cloud metadata address; IPv4 embedded in IPv6 (mapped, compatible, NAT64,
//!   6to4) is judged as the IPv4 address it carries. `STELLA_TASK_EGRESS_ALLOW` admits host
//!   names and CIDR ranges an operator trusts; `STELLA_TASK_EGRESS_DENY` refuses more ranges
//!   (the cluster's service network when it is not private) and wins over any allowance.
//! - **Offline mode** (`STELLA_OFFLINE=true`): only the hosts of `STELLA_EGRESS_ALLOW` are
//!   reached at all, checked before any socket is opened; those hosts are trusted, so an air-gap
//!   mirror on a private address needs to be listed only there.
//!
//! One parser decides: the step's URL is parsed once into the `http::Uri` that `ureq` requests,
//! the offline check reads its host, and the address check runs inside `ureq`'s resolver on the
//! same `Uri`, so there is no second reading of the URL that could disagree. Proxies from the
//! environment are not used by these requests (a proxy would connect on the step's behalf,
//! where this check cannot see it), and redirects are not followed (see
//! [`crate::http::Redirects::Refused`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use stella_runtime::config::{Config, Default as Fallback, Kind as SettingKind, Setting};
use stella_runtime::s;
use ureq::http::Uri;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::NextTimeout;

pub const OFFLINE: Setting = s(
    "STELLA_OFFLINE",
    SettingKind::Bool,
    Fallback::Value("false"),
    "Offline mode (air gap): a task step that would reach a host outside STELLA_EGRESS_ALLOW fails before \
     connecting, with `egress blocked: <host> is not allowed in offline mode`.",
);
pub const EGRESS_ALLOW: Setting = s(
    "STELLA_EGRESS_ALLOW",
    SettingKind::Hosts { cidrs: false },
    Fallback::None,
    "Offline mode: the only hosts task steps may reach; `*.example.org` allows its subdomains. These hosts may \
     have private addresses (an air-gap mirror).",
);
pub const TASK_EGRESS_ALLOW: Setting = s(
    "STELLA_TASK_EGRESS_ALLOW",
    SettingKind::Hosts { cidrs: true },
    Fallback::None,
    "Hosts and CIDR ranges task steps may reach although their addresses are loopback, private, link-local or \
     otherwise internal (refused by default, as `egress blocked: <address> is <class>`). A host admits whatever \
     address it resolves to; list only hosts whose DNS you control.",
);
pub const TASK_EGRESS_DENY: Setting = s(
    "STELLA_TASK_EGRESS_DENY",
    SettingKind::Hosts { cidrs: true },
    Fallback::None,
    "CIDR ranges and addresses task steps may never reach, in addition to the internal ranges: the cluster's \
     service network when it is not a private range. Wins over STELLA_TASK_EGRESS_ALLOW.",
);

/// A host name pattern: `mirror.internal`, or `*.corp.example` for every subdomain.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Host {
    Exact(String),
    Suffix(String),
}

impl Host {
    fn matches(&self, host: &str) -> bool {
        match self {
            Host::Exact(h) => h == host,
            Host::Suffix(s) => host.strip_suffix(s.as_str()).is_some_and(|head| head.ends_with('.')),
        }
    }
}

/// The task runner's egress policy (see the module's header).
#[derive(Clone, Debug, Default)]
pub struct Egress {
    pub offline: bool,
    offline_hosts: Vec<Host>,
    allow_hosts: Vec<Host>,
    allow_nets: Vec<IpNet>,
    deny_nets: Vec<IpNet>,
}

/// Why a connection was refused; the message the run records.
#[derive(Debug)]
pub struct Blocked(pub String);

impl std::fmt::Display for Blocked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Blocked {}

/// A host as compared: lower case, without brackets or a trailing dot.
fn normal(host: &str) -> String {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

/// Splits a list setting into host patterns and networks (an address is a /32 or /128).
fn entries(list: Option<&str>) -> (Vec<Host>, Vec<IpNet>) {
    let (mut hosts, mut nets) = (vec![], vec![]);
    for entry in list.unwrap_or_default().split(',').map(str::trim).filter(|e| !e.is_empty()) {
        if let Ok(net) = entry.parse::<IpNet>() {
            nets.push(net);
        } else if let Ok(ip) = entry.parse::<IpAddr>() {
            nets.push(IpNet::from(ip));
        } else if let Some(suffix) = entry.strip_prefix("*.") {
            hosts.push(Host::Suffix(normal(suffix)));
        } else {
            hosts.push(Host::Exact(normal(entry)));
        }
    }
    (hosts, nets)
}

impl Egress {
    /// The policy from the settings above (validated at start-up by their kind).
    pub fn from_config(config: &Config) -> Egress {
        Egress::new(
            config.bool(OFFLINE.name),
            config.text(EGRESS_ALLOW.name),
            config.text(TASK_EGRESS_ALLOW.name),
            config.text(TASK_EGRESS_DENY.name),
        )
    }

    pub fn new(offline: bool, offline_allow: Option<&str>, allow: Option<&str>, deny: Option<&str>) -> Egress {
        // An offline allow-list entry that is an address counts as an exact host: the URL's host
        // is then that literal.
        let (mut offline_hosts, offline_nets) = entries(offline_allow);
        offline_hosts.extend(offline_nets.iter().map(|n| Host::Exact(n.addr().to_string())));
        let (allow_hosts, allow_nets) = entries(allow);
        let (_, deny_nets) = entries(deny);
        Egress { offline, offline_hosts, allow_hosts, allow_nets, deny_nets }
    }

    /// One line for the start-up log.
    pub fn summary(&self) -> String {
        let show = |hosts: &[Host], nets: &[IpNet]| {
            let hosts = hosts.iter().map(|h| match h {
                Host::Exact(h) => h.clone(),
                Host::Suffix(s) => format!("*.{s}"),
            });
            hosts.chain(nets.iter().map(IpNet::to_string)).collect::<Vec<_>>().join(",")
        };
        format!(
            "offline={} offline_allow=[{}] allow=[{}] deny=[internal ranges,{}]",
            self.offline,
            show(&self.offline_hosts, &[]),
            show(&self.allow_hosts, &self.allow_nets),
            show(&[], &self.deny_nets)
        )
    }

    /// Parses a step's URL into the `Uri` that will be requested, and applies the checks that
    /// need no connection: http(s) only, a host, and in offline mode the allow-list.
    pub fn uri(&self, url: &str) -> Result<Uri, String> {
        let uri: Uri = url.parse().map_err(|e| format!("`{url}` is not a valid URL: {e}"))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err(format!("`{url}` is not an http:// or https:// URL"));
        }
        let host = uri.host().map(normal).filter(|h| !h.is_empty()).ok_or(format!("`{url}` has no host"))?;
        if self.offline && !self.offline_hosts.iter().any(|h| h.matches(&host)) {
            return Err(format!("egress blocked: {host} is not allowed in offline mode"));
        }
        Ok(uri)
    }

    /// Whether a connection to `ip`, resolved from `host`, may be made.
    pub fn admit(&self, host: &str, ip: IpAddr) -> Result<(), Blocked> {
        let host = normal(host);
        let ip = canonical(ip);
        let named = if host == ip.to_string() { ip.to_string() } else { format!("{host} resolves to {ip}, which") };
        if let Some(net) = self.deny_nets.iter().find(|n| n.contains(&ip)) {
            return Err(Blocked(format!("egress blocked: {named} is in STELLA_TASK_EGRESS_DENY ({net})")));
        }
        let trusted = self.allow_nets.iter().any(|n| n.contains(&ip))
            || self.allow_hosts.iter().any(|h| h.matches(&host))
            || (self.offline && self.offline_hosts.iter().any(|h| h.matches(&host)));
        match internal(ip) {
            Some(class) if !trusted => {
                Err(Blocked(format!("egress blocked: {named} is {class} (allow it with STELLA_TASK_EGRESS_ALLOW)")))
            }
            _ => Ok(()),
        }
    }

    /// An agent for task steps: redirects refused, no proxy, and every resolved address
    /// checked by [`Egress::admit`] before `ureq` connects to it.
    pub fn agent(self: &Arc<Self>, timeout: Duration) -> ureq::Agent {
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .proxy(None)
            .tls_config(crate::http::tls())
            .build();
        let connector = ureq::unversioned::transport::DefaultConnector::default();
        ureq::Agent::with_parts(config, connector, Guard(self.clone()))
    }
}

/// `ureq`'s resolver, then the policy over every address it returned: `ureq` connects only to
/// addresses this resolver returns, so what is checked is what is connected to.
#[derive(Debug)]
struct Guard(Arc<Egress>);

impl Resolver for Guard {
    fn resolve(
        &self,
        uri: &Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let addrs = DefaultResolver::default().resolve(uri, config, timeout)?;
        let host = uri.host().unwrap_or_default();
        // Every address, not only the first: `ureq` may try the others when one fails.
        for addr in addrs.iter() {
            self.0.admit(host, addr.ip()).map_err(|b| ureq::Error::Other(Box::new(b)))?;
        }
        Ok(addrs)
    }
}

/// The message of a request's error: the policy's own when it refused the connection.
pub fn message(e: &ureq::Error) -> Option<String> {
    match e {
        ureq::Error::Other(inner) => inner.downcast_ref::<Blocked>().map(|b| b.0.clone()),
        _ => None,
    }
}

/// An IPv6 address that carries an IPv4 one (mapped `::ffff:a.b.c.d`, compatible `::a.b.c.d`,
/// NAT64 `64:ff9b::/96`, 6to4 `2002:AABB:CCDD::/48`) as that IPv4 address: the packets end up
/// there, so it is judged as it.
fn canonical(ip: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = ip else { return ip };
    let s = v6.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] => IpAddr::V4(low),
        // `::a.b.c.d`, but not `::` and `::1`, which are IPv6's own.
        [0, 0, 0, 0, 0, 0, hi, _] if hi != 0 => IpAddr::V4(low),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => IpAddr::V4(low),
        [0x2002, a, b, ..] => IpAddr::V4(Ipv4Addr::new((a >> 8) as u8, a as u8, (b >> 8) as u8, b as u8)),
        _ => ip,
    }
}

/// The class of an internal address, or `None` for a public one.
pub fn internal(ip: IpAddr) -> Option<&'static str> {
    match canonical(ip) {
        IpAddr::V4(v4) => internal_v4(v4),
        IpAddr::V6(v6) => internal_v6(v6),
    }
}

fn internal_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        _ if ip == Ipv4Addr::new(169, 254, 169, 254) => "a cloud metadata address",
        (0, ..) => "unspecified (0.0.0.0/8)",
        (127, ..) => "loopback",
        (10, ..) | (192, 168, _) => "private",
        (172, 16..=31, _) => "private",
        (100, 64..=127, _) => "shared address space (100.64.0.0/10)",
        (169, 254, _) => "link-local",
        (192, 0, 0) => "reserved (192.0.0.0/24)",
        (198, 18..=19, _) => "reserved (198.18.0.0/15)",
        (224..=239, ..) => "multicast",
        (240..=255, ..) => "reserved (240.0.0.0/4)",
        _ => return None,
    })
}

fn internal_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    Some(match s[0] {
        _ if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) => "a cloud metadata address",
        _ if ip.is_unspecified() => "unspecified",
        _ if ip.is_loopback() => "loopback",
        0xfc00..=0xfdff => "unique-local",
        0xfe80..=0xfebf => "link-local",
        0xfec0..=0xfeff => "site-local",
        0xff00..=0xffff => "multicast",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn internal_addresses_of_every_class_are_refused_and_public_ones_pass() {
        let policy = Egress::default();
        for (addr, class) in [
            ("127.0.0.1", "loopback"),
            ("127.255.0.9", "loopback"),
            ("0.0.0.0", "unspecified (0.0.0.0/8)"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.254", "private"),
            ("192.168.1.1", "private"),
            ("100.64.0.1", "shared address space (100.64.0.0/10)"),
            ("100.100.100.200", "shared address space (100.64.0.0/10)"),
            ("169.254.169.254", "a cloud metadata address"),
            ("169.254.1.1", "link-local"),
            ("224.0.0.1", "multicast"),
            ("255.255.255.255", "reserved (240.0.0.0/4)"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "a cloud metadata address"),
            ("::10.0.0.1", "private"),
            ("64:ff9b::a9fe:a9fe", "a cloud metadata address"),
            ("2002:7f00:1::", "loopback"),
            ("fd00:ec2::254", "a cloud metadata address"),
            ("fd12:3456::1", "unique-local"),
            ("fe80::1", "link-local"),
            ("ff02::1", "multicast"),
        ] {
            assert_eq!(internal(ip(addr)), Some(class), "{addr}");
            let refused = policy.admit(addr, ip(addr)).unwrap_err().0;
            assert!(refused.starts_with("egress blocked: "), "{refused}");
            assert!(refused.contains(class), "{refused}");
        }
        for addr in ["93.184.215.14", "172.32.0.1", "100.128.0.1", "2606:4700::1111", "::ffff:8.8.8.8"] {
            assert_eq!(internal(ip(addr)), None, "{addr}");
            policy.admit("example.org", ip(addr)).unwrap();
        }
    }

    #[test]
    fn a_name_is_reported_with_the_address_it_resolved_to() {
        let refused = Egress::default().admit("LocalHost.", ip("127.0.0.1")).unwrap_err().0;
        assert_eq!(
            refused,
            "egress blocked: localhost resolves to 127.0.0.1, which is loopback (allow it with STELLA_TASK_EGRESS_ALLOW)"
        );
    }

    #[test]
    fn allowances_admit_hosts_and_ranges_and_the_deny_list_wins() {
        let policy = Egress::new(
            false,
            None,
            Some("mirror.internal, *.corp.example, 10.20.0.0/16, 127.0.0.2"),
            Some("10.20.30.0/24"),
        );
        policy.admit("mirror.internal.", ip("10.9.9.9")).unwrap();
        policy.admit("a.b.corp.example", ip("192.168.0.1")).unwrap();
        policy.admit("10.20.1.1", ip("10.20.1.1")).unwrap();
        policy.admit("127.0.0.2", ip("127.0.0.2")).unwrap();
        assert!(policy.admit("corp.example", ip("192.168.0.1")).is_err(), "the suffix is not the domain");
        assert!(policy.admit("evilcorp.example", ip("192.168.0.1")).is_err());
        assert!(policy.admit("127.0.0.1", ip("127.0.0.1")).is_err());
        let denied = policy.admit("mirror.internal", ip("10.20.30.4")).unwrap_err().0;
        assert_eq!(
            denied,
            "egress blocked: mirror.internal resolves to 10.20.30.4, which is in STELLA_TASK_EGRESS_DENY (10.20.30.0/24)"
        );
        // The deny list applies to public addresses too.
        let policy = Egress::new(false, None, None, Some("203.0.113.0/24"));
        assert!(policy.admit("svc", ip("203.0.113.7")).is_err());
    }

    #[test]
    fn offline_mode_allows_only_listed_hosts_and_trusts_them() {
        let offline = Egress::new(true, Some("mirror.internal, *.corp.example, 127.0.0.1"), None, None);
        assert_eq!(offline.uri("https://user@Mirror.Internal:8443/x").unwrap().host(), Some("Mirror.Internal"));
        offline.uri("http://feeds.corp.example/").unwrap();
        offline.uri("http://127.0.0.1:9/").unwrap();
        assert!(offline.uri("http://corp.example/").is_err());
        assert_eq!(offline.uri("http://[::1]:9/x").unwrap_err(), "egress blocked: ::1 is not allowed in offline mode");
        // A listed mirror on a private address is reached.
        offline.admit("mirror.internal", ip("10.0.0.5")).unwrap();
        let online = Egress::new(false, None, None, None);
        online.uri("http://anywhere.example/x").unwrap();
    }

    #[test]
    fn one_parser_reads_the_url_and_refuses_what_is_not_one() {
        let policy = Egress::default();
        // Userinfo: the host is what follows the last `@` of the authority.
        assert_eq!(policy.uri("http://allowed.example@127.0.0.1:9/").unwrap().host(), Some("127.0.0.1"));
        for bad in ["ftp://h/x", "http:///x", "http://a b/", "http://h\\@127.0.0.1/", "/relative"] {
            assert!(policy.uri(bad).is_err(), "{bad} was accepted");
        }
    }
}
