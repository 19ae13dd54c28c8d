//! Google Cloud Storage: `gs://bucket[/prefix]`.
//!
//! Credentials come from `GOOGLE_APPLICATION_CREDENTIALS` / `GOOGLE_SERVICE_ACCOUNT` (or the
//! query's `google_service_account`), options from the URL's query with `object_store`'s
//! `GoogleConfigKey` names.

use std::sync::Arc;

use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};

use super::Built;

pub fn build(url: &url::Url, options: &[(String, String)]) -> Result<Built, String> {
    let mut builder = GoogleCloudStorageBuilder::from_env().with_url(super::base_url(url));
    for (key, value) in options {
        let k: GoogleConfigKey = key
            .parse()
            .map_err(|_| format!("unknown option '{key}' for gs://"))?;
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
