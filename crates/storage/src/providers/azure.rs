//! Azure Blob Storage: `az://container[/prefix]`.
//!
//! Credentials come from the usual `AZURE_STORAGE_*` environment variables
//! (`AZURE_STORAGE_ACCOUNT_NAME`, `AZURE_STORAGE_ACCOUNT_KEY`, ...), options from the URL's
//! query with `object_store`'s `AzureConfigKey` names (`azure_storage_account_name`,
//! `azure_storage_endpoint`, `azure_storage_use_emulator`, `azure_allow_http`, ...).

use std::sync::Arc;

use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};

use super::Built;

pub fn build(url: &url::Url, options: &[(String, String)]) -> Result<Built, String> {
    let mut builder = MicrosoftAzureBuilder::from_env().with_url(super::base_url(url));
    for (key, value) in options {
        let k: AzureConfigKey = key
            .parse()
            .map_err(|_| format!("unknown option '{key}' for az://"))?;
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
