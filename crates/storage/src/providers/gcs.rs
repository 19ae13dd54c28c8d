//! Google Cloud Storage: `gs://bucket[/prefix]`.
//!
//! Credentials come from `GOOGLE_APPLICATION_CREDENTIALS` / `GOOGLE_SERVICE_ACCOUNT` (or the
//! query's `google_service_account`), options from the URL's query with `object_store`'s
//! `GoogleConfigKey` names.

use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};

use super::Built;

pub fn build(url: &url::Url, options: &[(String, String)]) -> Result<Built, String> {
    super::build_cloud!(
        GoogleCloudStorageBuilder,
        GoogleConfigKey,
        "gs",
        url,
        options
    )
}
