//! The egress guard: which addresses a job's fetches may reach.
//!
//! Users choose the URLs we fetch, so without a guard a job could read the cloud metadata
//! service (169.254.169.254), the API's own Postgres, or anything else on the worker's
//! network. The guard refuses every non-global address ([`policy::classify`]) unless the
//! operator allowlists it (`CLIPSTASH_EGRESS_ALLOW`). It is checked where it cannot be
//! sidestepped:
//! - at connect time, for host names: [`GuardedResolver`] resolves and hands the HTTP
//!   client only the addresses it allows, so a name that resolves to a public address when
//!   submitted and to a private one when fetched (DNS rebinding) still gets nowhere;
//! - before connecting, for IP literals (the client does not resolve those): the URL of
//!   the request and of every redirect hop goes through [`EgressPolicy::check_url`]
//!   ([`redirect_policy`]).
//!
//! - for programs that connect on their own (yt-dlp): they go through [`EgressProxy`], an
//!   HTTP proxy on loopback that makes the same checks for every CONNECT and request and
//!   connects only to the addresses it checked.
//!
//! `CLIPSTASH_ALLOW_PRIVATE_NETWORKS=true` turns it off (local runs and tests).

pub mod policy;
pub mod proxy;
pub mod resolver;

use std::net::IpAddr;
use std::sync::Arc;

use url::{Host, Url};

pub use policy::{AddressClass, AllowEntry, Allowlist, AllowlistError, classify};
pub use proxy::{EgressProxy, ProxyLimits};
pub use resolver::GuardedResolver;

use policy::normalise_name;

/// Network settings of the worker's fetches (the API reads them too, to refuse literal
/// forbidden addresses at submit time).
#[derive(Debug, Clone, clap::Args)]
pub struct NetworkArgs {
    /// Turns the egress guard off: allows fetching from loopback, private, link-local and
    /// other non-global addresses. For local runs and tests only.
    #[arg(long, env = "CLIPSTASH_ALLOW_PRIVATE_NETWORKS", value_name = "CLIPSTASH_ALLOW_PRIVATE_NETWORKS", default_value_t = false, action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub allow_private_networks: bool,

    /// Destinations the egress guard lets through although they are not public: a
    /// comma-separated list of `host:port` (media.internal:8080, 10.1.2.3:80, [fd00::5]:443)
    /// and CIDR blocks (10.20.0.0/16, any port). A name entry matches URLs with that name,
    /// an address entry URLs with that address; empty: none.
    #[arg(long, env = "CLIPSTASH_EGRESS_ALLOW", value_name = "CLIPSTASH_EGRESS_ALLOW", default_value = "", value_parser = parse_allowlist)]
    pub egress_allow: Allowlist,
}

fn parse_allowlist(s: &str) -> Result<Allowlist, AllowlistError> {
    s.parse()
}

/// The guard's decision procedure, built once per process from [`NetworkArgs`].
#[derive(Debug, Clone)]
pub struct EgressPolicy {
    enabled: bool,
    allow: Arc<Allowlist>,
}

/// A destination the guard refused: a job fails with `forbidden_address`, not retried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Forbidden {
    #[error("{ip} is a {class} address, which the egress guard refuses")]
    Address { ip: IpAddr, class: AddressClass },
    #[error("{name} resolves only to addresses the egress guard refuses ({ip} is {class})")]
    Resolved {
        name: String,
        ip: IpAddr,
        class: AddressClass,
    },
    #[error("{name} is allowlisted on port(s) {allowed:?} only, not {port}")]
    Port {
        name: String,
        port: u16,
        allowed: Vec<u16>,
    },
    #[error("the URL has no host")]
    NoHost,
}

impl EgressPolicy {
    pub fn new(args: &NetworkArgs) -> Self {
        Self {
            enabled: !args.allow_private_networks,
            allow: Arc::new(args.egress_allow.clone()),
        }
    }

    /// A policy that allows everything (the guard off).
    pub fn off() -> Self {
        Self {
            enabled: false,
            allow: Arc::default(),
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// Checks what can be checked without resolving: an IP literal host (on its port), and
    /// a name's port when the name is allowlisted. Other names pass here and are checked by
    /// [`GuardedResolver`] when connecting. Uses the parsed host, so every spelling of an
    /// address (`2130706433`, `0177.0.0.1`, `0x7f.1`, `[::ffff:127.0.0.1]`) is the address.
    pub fn check_url(&self, url: &Url) -> Result<(), Forbidden> {
        if !self.enabled {
            return Ok(());
        }
        let port = url.port_or_known_default().unwrap_or(0);
        match url.host() {
            None => Err(Forbidden::NoHost),
            Some(Host::Ipv4(ip)) => self.check_ip(IpAddr::V4(ip), port),
            Some(Host::Ipv6(ip)) => self.check_ip(IpAddr::V6(ip), port),
            Some(Host::Domain(name)) => {
                // The resolver trusts an allowlisted name without knowing the port; this is
                // where its port is held to the allowlist.
                let allowed = self.allow.ports_of(name);
                if allowed.is_empty() || allowed.contains(&port) {
                    Ok(())
                } else {
                    Err(Forbidden::Port {
                        name: normalise_name(name),
                        port,
                        allowed,
                    })
                }
            }
        }
    }

    fn check_ip(&self, ip: IpAddr, port: u16) -> Result<(), Forbidden> {
        if self.allow.permits_ip(ip, port) {
            return Ok(());
        }
        match classify(ip) {
            AddressClass::Global => Ok(()),
            class => Err(Forbidden::Address { ip, class }),
        }
    }

    /// Whether the client may connect to `ip`, an address host name `name` resolved to.
    /// Only names that passed [`check_url`](Self::check_url) are ever resolved.
    pub fn check_resolved(&self, name: &str, ip: IpAddr) -> Result<(), Forbidden> {
        if !self.enabled || self.allow.permits_resolved(ip) || !self.allow.ports_of(name).is_empty()
        {
            return Ok(());
        }
        match classify(ip) {
            AddressClass::Global => Ok(()),
            class => Err(Forbidden::Resolved {
                name: normalise_name(name),
                ip,
                class,
            }),
        }
    }
}

/// A client builder whose every connection goes through `policy`: the guarded resolver, and
/// no proxy (a proxy would be resolved instead of the destination, and would connect where
/// the guard cannot look). Callers add timeouts and a redirect policy ([`redirect_policy`],
/// or none); they must still [`EgressPolicy::check_url`] each request URL (IP literals are
/// never resolved). Used by direct downloads and webhook deliveries alike.
pub fn guarded_client(policy: &EgressPolicy) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .dns_resolver(GuardedResolver::new(policy.clone()))
        .no_proxy()
}

/// Follows at most `max` redirects, checking each hop's URL with `policy` before any
/// connection to it (IP literals are never resolved, so the resolver cannot see them).
pub fn redirect_policy(policy: EgressPolicy, max: usize) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() > max {
            return attempt.error(TooManyRedirects(max));
        }
        match policy.check_url(attempt.url()) {
            Ok(()) => attempt.follow(),
            Err(forbidden) => attempt.error(forbidden),
        }
    })
}

/// More redirects than [`redirect_policy`] follows.
#[derive(Debug, thiserror::Error)]
#[error("more than {0} redirects")]
pub struct TooManyRedirects(pub usize);

/// The [`Forbidden`] somewhere in `err`'s cause chain, if the guard is why it failed.
pub fn find_forbidden<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a Forbidden> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(f) = e.downcast_ref::<Forbidden>() {
            return Some(f);
        }
        cur = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(allow: &str) -> EgressPolicy {
        EgressPolicy::new(&NetworkArgs {
            allow_private_networks: false,
            egress_allow: allow.parse().unwrap(),
        })
    }

    fn check(policy: &EgressPolicy, url: &str) -> Result<(), Forbidden> {
        policy.check_url(&Url::parse(url).unwrap())
    }

    #[test]
    fn every_spelling_of_loopback_is_refused() {
        // The URL parser normalises these WHATWG-style; the guard sees 127.0.0.1 or ::1.
        let policy = guard("");
        for url in [
            "http://127.0.0.1/",
            "http://2130706433/",
            "http://0177.0.0.1/",
            "http://0x7f.1/",
            "http://0x7F000001/",
            "http://127.1/",
            "http://127.0.1/",
            "http://017700000001/",
            "https://127.0.0.1:8443/x.mp4",
            "http://[::1]/",
            "http://[0:0:0:0:0:0:0:1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://[::127.0.0.1]/",
            "http://[64:ff9b::7f00:1]/",
            "http://[2002:7f00:1::]/",
        ] {
            match check(&policy, url) {
                Err(Forbidden::Address {
                    class: AddressClass::Loopback,
                    ..
                }) => {}
                other => panic!("{url}: {other:?}"),
            }
        }
        for (url, class) in [
            (
                "http://169.254.169.254/latest/meta-data/",
                AddressClass::LinkLocal,
            ),
            ("http://0xa9fea9fe/", AddressClass::LinkLocal),
            ("http://[::ffff:169.254.169.254]/", AddressClass::LinkLocal),
            ("http://0.0.0.0:8080/", AddressClass::Unspecified),
            ("http://0/", AddressClass::Unspecified),
            ("http://10.1.2.3/", AddressClass::Private),
            ("http://[fd00::1]/", AddressClass::UniqueLocal),
        ] {
            match check(&policy, url) {
                Err(Forbidden::Address { class: got, .. }) if got == class => {}
                other => panic!("{url}: {other:?}"),
            }
        }
        // Public literals and names pass here (names are checked when resolved).
        for url in [
            "http://8.8.8.8/",
            "https://[2606:4700::1]/",
            "https://example.com/v.mp4",
            "http://localhost/",
        ] {
            assert_eq!(check(&policy, url), Ok(()), "{url}");
        }
        // Off: everything passes.
        assert_eq!(check(&EgressPolicy::off(), "http://127.0.0.1/"), Ok(()));
    }

    #[tokio::test]
    async fn localhost_resolves_to_nothing_the_guard_allows() {
        // Resolves through /etc/hosts; connects nowhere.
        let resolver = GuardedResolver::new(guard(""));
        for name in ["localhost", "LOCALHOST"] {
            let err = resolver.lookup(name).await.unwrap_err();
            match err.downcast_ref::<Forbidden>() {
                Some(Forbidden::Resolved {
                    class: AddressClass::Loopback,
                    ..
                }) => {}
                other => panic!("{name}: {other:?} ({err})"),
            }
        }
        // With the guard off, or a CIDR that covers it, the same name resolves.
        let off = GuardedResolver::new(EgressPolicy::off());
        assert!(!off.lookup("localhost").await.unwrap().is_empty());
        let cidr = GuardedResolver::new(guard("127.0.0.0/8"));
        let addrs = cidr.lookup("localhost").await.unwrap();
        assert!(
            addrs.iter().all(|a| a.ip().is_loopback() && a.is_ipv4()),
            "{addrs:?}"
        );
    }

    #[test]
    fn allowlist_opens_exactly_its_entries() {
        let policy = guard("127.0.0.1:8080,10.20.0.0/16,media.internal:9000");
        assert_eq!(check(&policy, "http://127.0.0.1:8080/a"), Ok(()));
        assert_eq!(check(&policy, "http://2130706433:8080/a"), Ok(()));
        assert!(check(&policy, "http://127.0.0.1:8081/a").is_err());
        assert!(check(&policy, "http://127.0.0.1/a").is_err());
        assert!(check(&policy, "http://[::1]:8080/a").is_err());
        assert_eq!(check(&policy, "http://10.20.9.9:22/"), Ok(()));
        assert!(check(&policy, "http://10.21.0.1/").is_err());
        assert_eq!(check(&policy, "http://Media.Internal:9000/v.mp4"), Ok(()));
        assert!(matches!(
            check(&policy, "http://media.internal/v.mp4"),
            Err(Forbidden::Port { port: 80, .. })
        ));
        assert!(matches!(
            check(&policy, "http://media.internal.:22/"),
            Err(Forbidden::Port { port: 22, .. })
        ));
        // Only names the allowlist holds are trusted when resolved, and CIDRs.
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(policy.check_resolved("media.internal", lo), Ok(()));
        assert!(policy.check_resolved("localhost", lo).is_err());
        assert_eq!(
            policy.check_resolved("x.example", "10.20.1.1".parse().unwrap()),
            Ok(())
        );
    }

    #[test]
    fn bad_allowlist_fails_start_up_naming_the_variable() {
        #[derive(clap::Parser, Debug)]
        struct Cli {
            #[command(flatten)]
            network: NetworkArgs,
        }
        use clap::Parser;
        let err = Cli::try_parse_from(["x", "--egress-allow", "media.internal"]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("CLIPSTASH_EGRESS_ALLOW"), "{msg}");
        assert!(msg.contains("needs a port"), "{msg}");
        // Defaults read from the definition, not a parse: the environment (`just` sets
        // CLIPSTASH_ALLOW_PRIVATE_NETWORKS=true) must not decide this test.
        let cmd = <Cli as clap::CommandFactory>::command();
        let default = |id: &str| {
            cmd.get_arguments()
                .find(|a| a.get_id() == id)
                .unwrap()
                .get_default_values()
                .to_vec()
        };
        assert_eq!(default("allow_private_networks"), ["false"]);
        assert_eq!(default("egress_allow"), [""]);
    }
}
