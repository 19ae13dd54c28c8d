//! The HTTP client's DNS resolver: resolves with the system resolver (getaddrinfo, through
//! tokio) and hands on only the addresses the [`EgressPolicy`] allows. The client connects
//! to exactly what this returns, so the check and the connection see the same addresses.

use std::net::SocketAddr;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::EgressPolicy;

/// A [`reqwest::dns::Resolve`] that drops forbidden addresses and fails with
/// [`Forbidden`](super::Forbidden) when none is left.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    policy: EgressPolicy,
}

impl GuardedResolver {
    pub fn new(policy: EgressPolicy) -> Self {
        Self { policy }
    }

    /// The addresses of `name` the policy allows (port 0: the client sets the URL's port).
    pub async fn lookup(
        &self,
        name: &str,
    ) -> Result<Vec<SocketAddr>, Box<dyn std::error::Error + Send + Sync>> {
        let resolved: Vec<SocketAddr> = tokio::net::lookup_host((name, 0)).await?.collect();
        let mut refused = None;
        let allowed: Vec<SocketAddr> = resolved
            .into_iter()
            .filter(|a| match self.policy.check_resolved(name, a.ip()) {
                Ok(()) => true,
                Err(f) => {
                    refused.get_or_insert(f);
                    false
                }
            })
            .collect();
        match (allowed.is_empty(), refused) {
            (true, Some(forbidden)) => Err(Box::new(forbidden)),
            (true, None) => Err(format!("{name} has no addresses").into()),
            (false, _) => Ok(allowed),
        }
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let this = self.clone();
        Box::pin(async move {
            let addrs = this.lookup(name.as_str()).await?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}
