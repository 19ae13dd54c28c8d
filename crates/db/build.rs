// `sqlx::migrate!` embeds the migrations at compile time, but cargo does not know it reads
// them: without this, a new or changed migration leaves an incremental build stale.
fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
