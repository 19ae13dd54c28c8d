//! Local disk: `file:///absolute/path`.

use std::path::Path;
use std::sync::Arc;

use object_store::local::LocalFileSystem;

use super::Built;

/// Opens `root` as an object store, creating it if missing. Local disk takes no options.
pub fn build(root: &Path, options: &[(String, String)]) -> Result<Built, String> {
    if let Some((key, _)) = options.first() {
        return Err(format!(
            "unknown option '{key}' for file:// (it takes only quota)"
        ));
    }
    if !root.is_absolute() {
        return Err(format!("{} is not an absolute path", root.display()));
    }
    std::fs::create_dir_all(root).map_err(|e| format!("cannot create {}: {e}", root.display()))?;
    let store = LocalFileSystem::new_with_prefix(root)
        .map_err(|e| format!("{}: {e}", root.display()))?
        // Removes emptied folders after deletes.
        .with_automatic_cleanup(true);
    Ok(Built {
        store: Arc::new(store),
        signer: None,
    })
}
