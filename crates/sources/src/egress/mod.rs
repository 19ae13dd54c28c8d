//! Egress settings for every outbound connection a job makes.
//!
//! Not enforced yet: nothing refuses loopback or private addresses today (the guard is
//! issue "video sources and an egress guard"). The switch is parsed, strictly, so that
//! deployments can set it now and a typo does not silently mean false.

/// Network settings of the worker's fetches.
#[derive(Debug, Clone, clap::Args)]
pub struct NetworkArgs {
    /// Reserved for the egress guard (not enforced yet): will allow fetching from loopback
    /// and private networks (local runs and tests only).
    #[arg(long, env = "CLIPSTASH_ALLOW_PRIVATE_NETWORKS", value_name = "CLIPSTASH_ALLOW_PRIVATE_NETWORKS", default_value_t = false, action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub allow_private_networks: bool,
}
