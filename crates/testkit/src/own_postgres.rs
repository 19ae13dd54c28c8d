//! A Postgres cluster of the test's own (initdb into a temp dir, a free loopback port, its
//! unix socket in that dir), so a test may restart or stop it without touching the shared
//! server on 127.0.0.1:5432 that every other test uses.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{free_port, wait_for};

/// A private Postgres cluster, stopped and deleted when dropped.
pub struct OwnPostgres {
    pub port: u16,
    pub dir: PathBuf,
    bin: PathBuf,
    /// Whether commands run as the `postgres` user (initdb refuses to run as root).
    as_postgres: bool,
}

/// The directory of `initdb` and `pg_ctl`: `CLIPSTASH_PG_BIN`, else the newest
/// /usr/lib/postgresql/*/bin, else the PATH.
fn pg_bin() -> PathBuf {
    if let Ok(dir) = std::env::var("CLIPSTASH_PG_BIN") {
        return dir.into();
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    dirs.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    dirs.pop().unwrap_or_default()
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().next().map(|u| u == "0"))
        })
        .unwrap_or(false)
}

impl OwnPostgres {
    /// initdb (trust auth, user `postgres`, fsync off) and start on a free port.
    pub async fn start() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "cs-pg-{}",
            uuid::Uuid::new_v4()
                .simple()
                .to_string()
                .get(..12)
                .unwrap_or("x")
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let as_postgres = is_root();
        if as_postgres {
            let ok = Command::new("chown")
                .args(["postgres:postgres", &dir.display().to_string()])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            assert!(ok, "chown postgres {}", dir.display());
        }
        let this = Self {
            port: free_port(),
            dir,
            bin: pg_bin(),
            as_postgres,
        };
        let data = this.data_dir();
        this.run(
            "initdb",
            &[
                "-D",
                &data.display().to_string(),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        this.pg_ctl(&["start", "-w", "-t", "60"]);
        let url = this.url("postgres");
        wait_for("own postgres", Duration::from_secs(30), || {
            let url = url.clone();
            async move {
                let pool = sqlx::PgPool::connect(&url).await.ok()?;
                pool.close().await;
                Some(())
            }
        })
        .await;
        this
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// A connection URL for database `db` over TCP on loopback.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    fn options(&self) -> String {
        format!(
            "-c listen_addresses=127.0.0.1 -c port={} -c unix_socket_directories={} \
             -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
             -c max_connections=300 -c log_min_messages=warning",
            self.port,
            self.dir.display()
        )
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let exe = self.bin.join(tool);
        let exe = if exe.exists() {
            exe
        } else {
            PathBuf::from(tool)
        };
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let out = cmd
            .args(args)
            .current_dir(&self.dir)
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", exe.display()));
        assert!(
            out.status.success(),
            "{tool} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn pg_ctl(&self, args: &[&str]) {
        let data = self.data_dir().display().to_string();
        let log = self.dir.join("postgres.log").display().to_string();
        let opts = self.options();
        let mut all = vec!["-D", &data, "-l", &log, "-o", &opts];
        all.extend_from_slice(args);
        self.run("pg_ctl", &all);
    }

    /// `pg_ctl restart -m fast`: every session is terminated, the server comes back on the
    /// same port; returns once it accepts connections.
    pub fn restart_fast(&self) {
        self.pg_ctl(&["restart", "-m", "fast", "-w", "-t", "60"]);
    }

    /// `pg_ctl stop -m immediate`.
    pub fn stop(&self) {
        self.pg_ctl(&["stop", "-m", "immediate", "-w"]);
    }

    /// The directory holding the cluster (data, socket, log).
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Creates database `name` and applies clipstash's migrations to it.
    pub async fn create_db(&self, name: &str) -> String {
        let admin = sqlx::PgPool::connect(&self.url("postgres")).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await
            .unwrap();
        admin.close().await;
        let url = self.url(name);
        let pool = clipstash_db::connect(&url.clone().into(), 2).await.unwrap();
        clipstash_db::migrate(&pool).await.unwrap();
        pool.close().await;
        url
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let data = self.data_dir().display().to_string();
        let _ = if self.as_postgres {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(self.bin.join("pg_ctl"))
                .args(["-D", &data, "stop", "-m", "immediate", "-w"])
                .output()
        } else {
            Command::new(self.bin.join("pg_ctl"))
                .args(["-D", &data, "stop", "-m", "immediate", "-w"])
                .output()
        };
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
