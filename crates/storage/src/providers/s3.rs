//! Amazon S3 and S3-compatible services: `s3://bucket[/prefix]`.
//!
//! Credentials and defaults come from the usual `AWS_*` environment variables
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, ...), options from the URL's
//! query with `object_store`'s `AmazonS3ConfigKey` names (`aws_endpoint`, `aws_region`,
//! `aws_allow_http`, `aws_virtual_hosted_style_request`, ...).

use std::sync::Arc;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};

use super::Built;

pub fn build(url: &url::Url, options: &[(String, String)]) -> Result<Built, String> {
    let mut builder = AmazonS3Builder::from_env().with_url(super::base_url(url));
    for (key, value) in options {
        let k: AmazonS3ConfigKey = key
            .parse()
            .map_err(|_| format!("unknown option '{key}' for s3://"))?;
        builder = builder.with_config(k, value);
    }
    let store = Arc::new(
        builder
            .with_retry(super::retry())
            .build()
            .map_err(|e| e.to_string())?,
    );
    Ok(Built {
        store: store.clone(),
        signer: Some(store),
    })
}
