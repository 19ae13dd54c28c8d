//! `clipstash-worker storage check | reconcile`: operator tools for the storage providers.

use std::collections::HashMap;
use std::time::Instant;

use anyhow::Context;
use bytes::Bytes;
use clipstash_db::usage;
use clipstash_storage::{Provider, Storage, StorageArgs};

use crate::settings::ReconcileArgs;

/// Probes every provider; returns whether all passed.
pub async fn check(args: &StorageArgs) -> anyhow::Result<bool> {
    let storage = Storage::from_args(args)?;
    println!(
        "{:<16} {:<6} {:<8} {:>8}  detail",
        "provider", "kind", "result", "ms"
    );
    let mut all_ok = true;
    for p in storage.providers() {
        let started = Instant::now();
        let result = probe(p).await;
        let ms = started.elapsed().as_millis();
        let (word, detail) = match &result {
            Ok(()) => ("ok", String::new()),
            Err(e) => ("FAILED", format!("{e:#}")),
        };
        all_ok &= result.is_ok();
        println!(
            "{:<16} {:<6} {:<8} {:>8}  {detail}",
            p.name().as_str(),
            p.kind().as_str(),
            word,
            ms
        );
    }
    Ok(all_ok)
}

async fn probe(p: &Provider) -> anyhow::Result<()> {
    let key = format!("clipstash-probe/{}", uuid::Uuid::new_v4());
    let body = Bytes::from_static(b"clipstash storage check");
    let mut up = p.start_upload(&key).await.context("write")?;
    up.put(body.clone());
    up.finish().await.context("write")?;
    let got = p
        .get(&key, None)
        .await
        .context("read")?
        .bytes()
        .await
        .context("read")?;
    anyhow::ensure!(got == body, "read back {} bytes that differ", got.len());
    let listed = p.list("clipstash-probe").await.context("list")?;
    anyhow::ensure!(
        listed.iter().any(|(k, _)| *k == key),
        "list does not show the probe"
    );
    p.delete(&key).await.context("delete")?;
    Ok(())
}

/// Reconciles every provider with Postgres; returns whether everything matched (or was fixed).
pub async fn reconcile(args: &ReconcileArgs) -> anyhow::Result<bool> {
    let storage = Storage::from_args(&args.storage)?;
    let pool = args
        .database
        .connect(2)
        .await
        .context("DATABASE_URL: cannot connect to Postgres")?;
    let cutoff = chrono::Utc::now() - chrono::Duration::from_std(args.grace)?;
    let mut clean = true;
    for p in storage.providers() {
        let name = p.name().as_str();
        let rows: HashMap<String, i64> = usage::files_on(&pool, name)
            .await?
            .into_iter()
            .map(|f| (f.object_key, f.size_bytes))
            .collect();
        let objects = p
            .list("downloads")
            .await
            .with_context(|| format!("listing {name}"))?;
        let mut orphans = 0;
        let mut removed = 0;
        let mut wrong_size = 0;
        for (key, meta) in &objects {
            match rows.get(key) {
                Some(size) if *size as u64 != meta.size => wrong_size += 1,
                Some(_) => {}
                None => {
                    orphans += 1;
                    if args.fix && meta.last_modified < cutoff {
                        p.delete(key)
                            .await
                            .with_context(|| format!("deleting {key} from {name}"))?;
                        removed += 1;
                    }
                }
            }
        }
        let held: std::collections::HashSet<&str> =
            objects.iter().map(|(k, _)| k.as_str()).collect();
        let missing = rows.keys().filter(|k| !held.contains(k.as_str())).count();
        let before = usage::provider_usage(&pool, name).await?;
        let after = if args.fix {
            Some(usage::rebuild_usage(&pool, name).await?)
        } else {
            None
        };
        println!(
            "{name}: {} objects, {} rows; orphans {orphans} (deleted {removed}), rows without object {missing}, size mismatches {wrong_size}; usage {} bytes / {} files{}",
            objects.len(),
            rows.len(),
            before.bytes_used,
            before.file_count,
            after.map_or(String::new(), |u| format!(
                " -> {} bytes / {} files",
                u.bytes_used, u.file_count
            )),
        );
        clean &= orphans == removed && missing == 0 && wrong_size == 0;
    }
    pool.close().await;
    Ok(clean)
}
