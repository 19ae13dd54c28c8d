//! Amazon S3 and S3-compatible services: `s3://bucket[/prefix]`.
//!
//! Credentials and defaults come from the usual `AWS_*` environment variables
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, ...), options from the URL's
//! query with `object_store`'s `AmazonS3ConfigKey` names (`aws_endpoint`, `aws_region`,
//! `aws_allow_http`, `aws_virtual_hosted_style_request`, ...).

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};

use super::Built;

pub fn build(url: &url::Url, options: &[(String, String)]) -> Result<Built, String> {
    super::build_cloud!(AmazonS3Builder, AmazonS3ConfigKey, "s3", url, options)
}
