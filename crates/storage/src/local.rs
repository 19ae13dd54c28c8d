//! The local-disk provider.

use std::path::Path;

use object_store::local::LocalFileSystem;

/// The local provider's name while it is the only one configured.
pub const NAME: &str = "local";

/// Opens `root` as an object store, creating it if missing.
pub fn open(root: &Path) -> anyhow::Result<LocalFileSystem> {
    std::fs::create_dir_all(root).map_err(|e| {
        anyhow::anyhow!(
            "CLIPSTASH_STORAGE_DIR={}: cannot create: {e}",
            root.display()
        )
    })?;
    Ok(LocalFileSystem::new_with_prefix(root)
        .map_err(|e| anyhow::anyhow!("CLIPSTASH_STORAGE_DIR={}: {e}", root.display()))?
        // Removes emptied folders after deletes.
        .with_automatic_cleanup(true))
}
