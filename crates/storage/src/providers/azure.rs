//! Azure Blob Storage: `az://container[/prefix]`.
//!
//! Credentials come from the usual `AZURE_STORAGE_*` environment variables
//! (`AZURE_STORAGE_ACCOUNT_NAME`, `AZURE_STORAGE_ACCOUNT_KEY`, ...), options from the URL's
//! query with `object_store`'s `AzureConfigKey` names (`azure_storage_account_name`,
//! `azure_storage_endpoint`, `azure_storage_use_emulator`, `azure_allow_http`, ...).

use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};

use super::Built;

pub fn build(url: &url::Url, options: &[(String, String)]) -> Result<Built, String> {
    super::build_cloud!(MicrosoftAzureBuilder, AzureConfigKey, "az", url, options)
}
