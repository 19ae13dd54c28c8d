//! Parsing `--storage NAME=URL` entries into providers, with a message naming the entry for
//! anything wrong. Option values never appear in messages: they may be credentials.

use std::path::PathBuf;

use clipstash_domain::StorageProvider;
use clipstash_domain::config::byte_size;

use crate::providers::{self, Kind, Provider};

/// One parsed entry, before its store is built.
#[derive(Debug)]
pub struct Entry {
    pub name: String,
    pub kind: Kind,
    pub url: url::Url,
    pub quota_bytes: u64,
    /// The query's options other than `quota` (values may be secrets).
    options: Vec<(String, String)>,
}

/// Parses `NAME=URL`.
pub fn parse_entry(raw: &str) -> Result<Entry, String> {
    let (name, url) = raw
        .split_once('=')
        .ok_or_else(|| format!("'{}': expected NAME=URL", redact(raw)))?;
    let bad = |msg: String| format!("storage '{name}': {msg}");
    if name.is_empty()
        || name.len() > 32
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
    {
        return Err(format!(
            "storage name '{name}' must be 1-32 characters of a-z, 0-9, - and _"
        ));
    }
    let url = url::Url::parse(url).map_err(|e| bad(format!("not a URL: {e}")))?;
    let kind = match url.scheme() {
        "file" => Kind::Local,
        "s3" => Kind::S3,
        "gs" => Kind::Gcs,
        "az" => Kind::Azure,
        other => {
            return Err(bad(format!(
                "scheme {other}:// is not one of file://, s3://, gs://, az://"
            )));
        }
    };
    if kind != Kind::Local && url.host_str().is_none_or(str::is_empty) {
        return Err(bad(format!(
            "{}:// needs a bucket or container",
            url.scheme()
        )));
    }
    let mut quota_bytes = 0;
    let mut options = Vec::new();
    for (k, v) in url.query_pairs() {
        if k == "quota" {
            quota_bytes = byte_size(&v).map_err(|e| bad(format!("quota: {e}")))?;
        } else {
            options.push((k.into_owned(), v.into_owned()));
        }
    }
    Ok(Entry {
        name: name.to_string(),
        kind,
        url,
        quota_bytes,
        options,
    })
}

impl Entry {
    /// Builds the provider's store (no network call: clients connect on first use).
    pub fn build(&self) -> Result<Provider, String> {
        let built = match self.kind {
            Kind::Local => providers::local::build(&PathBuf::from(self.url.path()), &self.options),
            Kind::S3 => providers::s3::build(&self.url, &self.options),
            Kind::Gcs => providers::gcs::build(&self.url, &self.options),
            Kind::Azure => providers::azure::build(&self.url, &self.options),
        }
        .map_err(|e| format!("storage '{}': {e}", self.name))?;
        let prefix = if self.kind == Kind::Local {
            ""
        } else {
            self.url.path()
        };
        Ok(Provider::new(
            StorageProvider::new(self.name.as_str()),
            self.kind,
            built,
            prefix,
            self.quota_bytes,
        ))
    }
}

/// The entry with its query removed, for messages.
fn redact(raw: &str) -> String {
    raw.split('?').next().unwrap_or_default().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse_with_quota_and_options() {
        let e = parse_entry("eu=s3://media/clips?aws_region=eu-west-1&quota=5GiB").unwrap();
        assert_eq!(
            (e.name.as_str(), e.kind, e.quota_bytes),
            ("eu", Kind::S3, 5 << 30)
        );
        assert_eq!(e.url.path(), "/clips");
        let e = parse_entry("disk=file:///var/lib/clipstash").unwrap();
        assert_eq!((e.kind, e.quota_bytes), (Kind::Local, 0));
    }

    #[test]
    fn bad_entries_name_the_entry_and_never_a_secret() {
        for (raw, wanted) in [
            ("s3://b", "NAME=URL"),
            ("Bad Name=s3://b", "must be 1-32"),
            ("x=ftp://b", "scheme ftp://"),
            ("x=s3://", "needs a bucket"),
            ("x=s3://b?quota=lots", "storage 'x': quota"),
        ] {
            let e = parse_entry(raw).unwrap_err();
            assert!(e.contains(wanted), "{raw}: {e}");
        }
        let e = parse_entry("x=s3://b?aws_secret_acess_key=hunter2")
            .unwrap()
            .build()
            .unwrap_err();
        assert!(
            e.contains("storage 'x'") && e.contains("aws_secret_acess_key"),
            "{e}"
        );
        assert!(!e.contains("hunter2"), "{e}");
        let e = parse_entry("x=file:///tmp/cs-x?aws_region=y")
            .unwrap()
            .build()
            .unwrap_err();
        assert!(e.contains("unknown option 'aws_region'"), "{e}");
    }
}
