//! What the egress guard lets through: the address classifier and the operator's allowlist.
//!
//! Pure functions over parsed addresses; nothing here resolves or connects.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use url::Host;

/// The kind of address, after unwrapping IPv6 forms that embed an IPv4 address.
/// Only [`AddressClass::Global`] may be fetched from without an allowlist entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum AddressClass {
    /// Publicly routable.
    Global,
    /// 0.0.0.0, `::`.
    Unspecified,
    /// 0.0.0.0/8 ("this network").
    ThisNetwork,
    /// 127.0.0.0/8, `::1`.
    Loopback,
    /// RFC 1918: 10/8, 172.16/12, 192.168/16.
    Private,
    /// 100.64.0.0/10, carrier-grade NAT.
    Shared,
    /// 169.254.0.0/16 (cloud metadata lives here), fe80::/10.
    LinkLocal,
    /// 192.0.0.0/24 and 2001::/23: IETF protocol assignments.
    IetfProtocol,
    /// 192.0.2/24, 198.51.100/24, 203.0.113/24, 2001:db8::/32, 3fff::/20.
    Documentation,
    /// 198.18.0.0/15, 2001:2::/48.
    Benchmarking,
    /// 192.88.99.0/24, the deprecated 6to4 relay anycast.
    Relay6to4,
    /// 224.0.0.0/4, ff00::/8.
    Multicast,
    /// 255.255.255.255.
    Broadcast,
    /// fc00::/7.
    UniqueLocal,
    /// fec0::/10 (deprecated, still routed inside some networks).
    SiteLocal,
    /// 64:ff9b:1::/48, NAT64 for local use.
    LocalTranslation,
    /// 100::/64, discard only.
    Discard,
    /// 240.0.0.0/4, and IPv6 outside global unicast 2000::/3 (unassigned, SRv6 SIDs, ...).
    Reserved,
}

impl AddressClass {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

impl fmt::Display for AddressClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

use AddressClass as C;

/// IPv4 special-purpose blocks (IANA registry), first match wins.
const V4_TABLE: &[(Ipv4Net, AddressClass)] = &[
    (v4(0, 0, 0, 0, 32), C::Unspecified),
    (v4(0, 0, 0, 0, 8), C::ThisNetwork),
    (v4(10, 0, 0, 0, 8), C::Private),
    (v4(100, 64, 0, 0, 10), C::Shared),
    (v4(127, 0, 0, 0, 8), C::Loopback),
    (v4(169, 254, 0, 0, 16), C::LinkLocal),
    (v4(172, 16, 0, 0, 12), C::Private),
    (v4(192, 0, 0, 0, 24), C::IetfProtocol),
    (v4(192, 0, 2, 0, 24), C::Documentation),
    (v4(192, 88, 99, 0, 24), C::Relay6to4),
    (v4(192, 168, 0, 0, 16), C::Private),
    (v4(198, 18, 0, 0, 15), C::Benchmarking),
    (v4(198, 51, 100, 0, 24), C::Documentation),
    (v4(203, 0, 113, 0, 24), C::Documentation),
    (v4(224, 0, 0, 0, 4), C::Multicast),
    (v4(255, 255, 255, 255, 32), C::Broadcast),
    (v4(240, 0, 0, 0, 4), C::Reserved),
];

/// IPv6 blocks that are not an IPv4 address in disguise, first match wins. Anything else
/// outside 2000::/3 is [`AddressClass::Reserved`].
const V6_TABLE: &[(Ipv6Net, AddressClass)] = &[
    (v6([0, 0, 0, 0, 0, 0, 0, 0], 128), C::Unspecified),
    (v6([0, 0, 0, 0, 0, 0, 0, 1], 128), C::Loopback),
    (
        v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48),
        C::LocalTranslation,
    ),
    (v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64), C::Discard),
    (v6([0x2001, 0x2, 0, 0, 0, 0, 0, 0], 48), C::Benchmarking),
    (v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 23), C::IetfProtocol),
    (v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32), C::Documentation),
    (v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20), C::Documentation),
    (v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7), C::UniqueLocal),
    (v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10), C::LinkLocal),
    (v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10), C::SiteLocal),
    (v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8), C::Multicast),
];

const GLOBAL_UNICAST_V6: Ipv6Net = v6([0x2000, 0, 0, 0, 0, 0, 0, 0], 3);

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8) -> Ipv4Net {
    Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), len)
}

const fn v6(s: [u16; 8], len: u8) -> Ipv6Net {
    Ipv6Net::new_assert(
        Ipv6Addr::new(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]),
        len,
    )
}

/// Classifies an address. IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`),
/// NAT64 (`64:ff9b::/96`) and 6to4 (`2002::/16`) addresses are classified by the IPv4
/// address they carry, since that is where the packets end up.
pub fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => classify_v4(v4),
            None => classify_v6(v6),
        },
    }
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    V4_TABLE
        .iter()
        .find(|(net, _)| net.contains(&ip))
        .map_or(C::Global, |(_, class)| *class)
}

fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    if let Some((_, class)) = V6_TABLE.iter().find(|(net, _)| net.contains(&ip)) {
        return *class;
    }
    if GLOBAL_UNICAST_V6.contains(&ip) {
        C::Global
    } else {
        C::Reserved
    }
}

/// The IPv4 address an IPv6 address stands for, if it is one of the forms that carry one.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let o = ip.octets();
    let last32 = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    match s {
        // `::` and `::1` are IPv6's own unspecified and loopback, not IPv4-compatible.
        [0, 0, 0, 0, 0, 0, 0, 0 | 1] => None,
        // IPv4-compatible ::a.b.c.d (deprecated) and IPv4-mapped ::ffff:a.b.c.d.
        [0, 0, 0, 0, 0, 0 | 0xffff, _, _] => Some(last32),
        // NAT64 well-known prefix 64:ff9b::/96.
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(last32),
        // 6to4 2002:a.b.c.d::/48.
        [0x2002, ..] => Some(Ipv4Addr::new(o[2], o[3], o[4], o[5])),
        _ => None,
    }
}

/// One `CLIPSTASH_EGRESS_ALLOW` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowEntry {
    /// A host and port: a name (lowercased, without a trailing dot) or an IP literal.
    HostPort(Host<String>, u16),
    /// Every address in the block, on any port.
    Cidr(IpNet),
}

/// Destinations that pass even when the guard is on: `host:port` entries and CIDR blocks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowlist {
    entries: Vec<AllowEntry>,
}

impl Allowlist {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn entries(&self) -> &[AllowEntry] {
        &self.entries
    }

    /// Whether `ip` on `port`, as the URL spells it, is allowlisted: an `ip:port` entry
    /// or a CIDR. IPv4-mapped addresses match their IPv4 entries.
    pub fn permits_ip(&self, ip: IpAddr, port: u16) -> bool {
        let ip = ip.to_canonical();
        self.entries.iter().any(|e| match e {
            AllowEntry::HostPort(Host::Ipv4(a), p) => IpAddr::V4(*a) == ip && *p == port,
            AllowEntry::HostPort(Host::Ipv6(a), p) => {
                IpAddr::V6(*a).to_canonical() == ip && *p == port
            }
            AllowEntry::HostPort(Host::Domain(_), _) => false,
            AllowEntry::Cidr(net) => net.contains(&ip),
        })
    }

    /// Whether a resolved address is allowlisted without knowing the port: CIDRs only.
    pub fn permits_resolved(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.entries
            .iter()
            .any(|e| matches!(e, AllowEntry::Cidr(net) if net.contains(&ip)))
    }

    /// The ports allowlisted for host name `name` (normalised), empty when it has none.
    pub fn ports_of(&self, name: &str) -> Vec<u16> {
        let name = normalise_name(name);
        self.entries
            .iter()
            .filter_map(|e| match e {
                AllowEntry::HostPort(Host::Domain(d), p) if *d == name => Some(*p),
                _ => None,
            })
            .collect()
    }
}

/// Lowercase, without the trailing dot of a fully qualified name, so `Media.Internal.`
/// and `media.internal` are one name.
pub(crate) fn normalise_name(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Why a `CLIPSTASH_EGRESS_ALLOW` entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("entry {entry:?}: {reason}")]
pub struct AllowlistError {
    pub entry: String,
    pub reason: String,
}

impl FromStr for Allowlist {
    type Err = AllowlistError;

    /// Comma-separated `host:port` (`media.internal:8080`, `10.1.2.3:80`, `[fd00::5]:443`)
    /// and CIDR (`10.20.0.0/16`, `fd00::/8`) entries; empty means none.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Ok(Self::default());
        }
        let entries = s
            .split(',')
            .map(|raw| parse_entry(raw.trim()))
            .collect::<Result<_, _>>()?;
        Ok(Self { entries })
    }
}

fn parse_entry(raw: &str) -> Result<AllowEntry, AllowlistError> {
    let err = |reason: &str| AllowlistError {
        entry: raw.to_string(),
        reason: reason.to_string(),
    };
    if raw.is_empty() {
        return Err(err("empty entry (two commas in a row?)"));
    }
    if raw.contains('/') {
        let net: IpNet = raw
            .parse()
            .map_err(|_| err("not a CIDR block like 10.20.0.0/16 or fd00::/8"))?;
        if net.trunc() != net {
            return Err(err(&format!(
                "has bits set past the prefix; the block is {}",
                net.trunc()
            )));
        }
        return Ok(AllowEntry::Cidr(net));
    }
    let (host, port) = match raw.strip_prefix('[') {
        Some(rest) => {
            let (v6, port) = rest
                .split_once("]:")
                .ok_or_else(|| err("an IPv6 entry is written [address]:port"))?;
            (format!("[{v6}]"), port)
        }
        None => raw
            .rsplit_once(':')
            .map(|(h, p)| (h.to_string(), p))
            .ok_or_else(|| {
                let every_port = match raw.parse::<IpAddr>() {
                    Ok(IpAddr::V4(ip)) => format!("{ip}/32"),
                    Ok(IpAddr::V6(ip)) => format!("{ip}/128"),
                    Err(_) => "a CIDR block".to_string(),
                };
                err(&format!(
                    "needs a port (host:port), or {every_port} for every port"
                ))
            })?,
    };
    if host.is_empty() {
        return Err(err("empty host"));
    }
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| err("port must be a number from 1 to 65535"))?;
    // The URL parser's own host parsing, so an entry means what the same host in a URL means
    // (case, IDNA, and IPv4 spellings like 0x7f.1 are normalised alike).
    let host = match Host::parse(&host).map_err(|e| err(&format!("bad host: {e}")))? {
        Host::Domain(d) => {
            if d.contains(':') || d.contains(['@', '?', '#', ' ']) {
                return Err(err("bad host"));
            }
            Host::Domain(normalise_name(&d))
        }
        ip => ip,
    };
    Ok(AllowEntry::HostPort(host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_address_class() {
        // (address, class): IPv4 special blocks at both edges, IPv6 blocks, and the IPv6
        // forms that carry an IPv4 address.
        let table = [
            // Allowed public examples.
            ("8.8.8.8", C::Global),
            ("1.1.1.1", C::Global),
            ("93.184.216.34", C::Global),
            ("9.255.255.255", C::Global),
            ("11.0.0.0", C::Global),
            ("100.63.255.255", C::Global),
            ("100.128.0.0", C::Global),
            ("172.15.255.255", C::Global),
            ("172.32.0.0", C::Global),
            ("192.0.1.255", C::Global),
            ("192.88.98.255", C::Global),
            ("198.17.255.255", C::Global),
            ("198.20.0.0", C::Global),
            ("223.255.255.255", C::Global),
            ("2606:4700::1", C::Global),
            ("2001:4860:4860::8888", C::Global),
            ("2a00:1450:4001::1", C::Global),
            ("::ffff:8.8.8.8", C::Global),
            ("64:ff9b::808:808", C::Global),
            ("2002:808:808::1", C::Global),
            // IPv4.
            ("0.0.0.0", C::Unspecified),
            ("0.1.2.3", C::ThisNetwork),
            ("0.255.255.255", C::ThisNetwork),
            ("10.0.0.0", C::Private),
            ("10.255.255.255", C::Private),
            ("100.64.0.0", C::Shared),
            ("100.127.255.255", C::Shared),
            ("127.0.0.1", C::Loopback),
            ("127.255.255.254", C::Loopback),
            ("169.254.169.254", C::LinkLocal),
            ("169.254.0.1", C::LinkLocal),
            ("172.16.0.1", C::Private),
            ("172.31.255.255", C::Private),
            ("192.0.0.1", C::IetfProtocol),
            ("192.0.0.170", C::IetfProtocol),
            ("192.0.2.1", C::Documentation),
            ("192.88.99.1", C::Relay6to4),
            ("192.168.0.1", C::Private),
            ("192.168.255.255", C::Private),
            ("198.18.0.1", C::Benchmarking),
            ("198.19.255.255", C::Benchmarking),
            ("198.51.100.7", C::Documentation),
            ("203.0.113.9", C::Documentation),
            ("224.0.0.1", C::Multicast),
            ("239.255.255.250", C::Multicast),
            ("240.0.0.1", C::Reserved),
            ("255.255.255.254", C::Reserved),
            ("255.255.255.255", C::Broadcast),
            // IPv6.
            ("::", C::Unspecified),
            ("::1", C::Loopback),
            ("fe80::1", C::LinkLocal),
            ("febf::1", C::LinkLocal),
            ("fec0::1", C::SiteLocal),
            ("fc00::1", C::UniqueLocal),
            ("fd12:3456::1", C::UniqueLocal),
            ("ff02::1", C::Multicast),
            ("ff05::2", C::Multicast),
            ("2001:db8::1", C::Documentation),
            ("3fff::1", C::Documentation),
            ("2001::1", C::IetfProtocol),
            ("2001:2::1", C::Benchmarking),
            ("100::1", C::Discard),
            ("64:ff9b:1::1", C::LocalTranslation),
            ("5f00::1", C::Reserved),
            ("4000::1", C::Reserved),
            ("1::1", C::Reserved),
            // IPv4-mapped.
            ("::ffff:127.0.0.1", C::Loopback),
            ("::ffff:7f00:1", C::Loopback),
            ("::ffff:10.0.0.1", C::Private),
            ("::ffff:169.254.169.254", C::LinkLocal),
            ("::ffff:0.0.0.0", C::Unspecified),
            // IPv4-compatible.
            ("::127.0.0.1", C::Loopback),
            ("::192.168.1.1", C::Private),
            ("::169.254.169.254", C::LinkLocal),
            // NAT64.
            ("64:ff9b::127.0.0.1", C::Loopback),
            ("64:ff9b::a00:1", C::Private),
            ("64:ff9b::169.254.169.254", C::LinkLocal),
            // 6to4.
            ("2002:7f00:1::", C::Loopback),
            ("2002:a9fe:a9fe::1", C::LinkLocal),
            ("2002:c0a8:101::1", C::Private),
            ("2002:6440:1::", C::Shared),
        ];
        let wrong: Vec<_> = table
            .iter()
            .filter_map(|(ip, want)| {
                let got = classify(ip.parse().unwrap());
                (got != *want).then(|| format!("{ip}: {got}, want {want}"))
            })
            .collect();
        assert!(wrong.is_empty(), "{wrong:#?}");
    }

    fn entry(s: &str) -> AllowEntry {
        let list: Allowlist = s.parse().unwrap();
        assert_eq!(list.entries().len(), 1);
        list.entries()[0].clone()
    }

    #[test]
    fn allowlist_entries_parse() {
        assert!("".parse::<Allowlist>().unwrap().is_empty());
        assert!("  ".parse::<Allowlist>().unwrap().is_empty());
        assert_eq!(
            entry("Media.Internal.:8080"),
            AllowEntry::HostPort(Host::Domain("media.internal".into()), 8080)
        );
        assert_eq!(
            entry("10.1.2.3:80"),
            AllowEntry::HostPort(Host::Ipv4(Ipv4Addr::new(10, 1, 2, 3)), 80)
        );
        // Same normalisation as a URL's host.
        assert_eq!(
            entry("0x7f.1:9000"),
            AllowEntry::HostPort(Host::Ipv4(Ipv4Addr::LOCALHOST), 9000)
        );
        assert_eq!(
            entry("[fd00::5]:443"),
            AllowEntry::HostPort(Host::Ipv6("fd00::5".parse().unwrap()), 443)
        );
        assert_eq!(
            entry("10.20.0.0/16"),
            AllowEntry::Cidr("10.20.0.0/16".parse().unwrap())
        );
        assert_eq!(
            entry("fd00::/8"),
            AllowEntry::Cidr("fd00::/8".parse().unwrap())
        );
        let list: Allowlist = " a.example:1 , 10.0.0.0/8,[::1]:2 ".parse().unwrap();
        assert_eq!(list.entries().len(), 3);
    }

    #[test]
    fn bad_allowlist_entries_are_refused() {
        for bad in [
            "media.internal",
            "10.1.2.3",
            "::1",
            "media.internal:",
            "media.internal:0",
            "media.internal:65536",
            "media.internal:http",
            ":80",
            "[::1]",
            "[::1]80",
            "[nope]:80",
            "10.0.0.0/33",
            "10.1.2.3/8",
            "fd00::1/8",
            "media.internal/24",
            "a.example:1,,b.example:2",
            "a.example:1,",
            "http://a.example:1",
            "user@a.example:1",
            "a b:1",
        ] {
            let got = bad.parse::<Allowlist>();
            assert!(got.is_err(), "{bad:?} was accepted: {got:?}");
        }
        let e = "10.1.2.3/8".parse::<Allowlist>().unwrap_err();
        assert!(e.to_string().contains("10.0.0.0/8"), "{e}");
        let e = "10.1.2.3".parse::<Allowlist>().unwrap_err();
        assert!(e.to_string().contains("10.1.2.3/32 for every port"), "{e}");
    }

    #[test]
    fn allowlist_matches_by_address_and_port() {
        let list: Allowlist = "127.0.0.1:8080,10.20.0.0/16,media.internal:9000"
            .parse()
            .unwrap();
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(list.permits_ip(lo, 8080));
        assert!(!list.permits_ip(lo, 8081));
        assert!(list.permits_ip("::ffff:127.0.0.1".parse().unwrap(), 8080));
        assert!(list.permits_ip("10.20.3.4".parse().unwrap(), 1));
        assert!(!list.permits_ip("10.21.0.1".parse().unwrap(), 1));
        // Resolved addresses come without a port: only CIDRs can vouch for them.
        assert!(!list.permits_resolved(lo));
        assert!(list.permits_resolved("10.20.3.4".parse().unwrap()));
        assert_eq!(list.ports_of("Media.Internal."), vec![9000]);
        assert!(list.ports_of("other.internal").is_empty());
    }
}
