//! Test support: real Postgres and Redis, isolated per test, a local media server, and
//! helpers to run the real binaries.

pub mod emulators;
pub mod gcs_fake;
pub mod media;
pub mod own_postgres;
pub mod procs;
pub mod prom;
pub mod receiver;
pub mod settings;

use std::future::Future;
use std::time::{Duration, Instant};

use clipstash_db::DatabaseArgs;
use clipstash_queue::RedisArgs;
use sqlx::PgPool;

pub use media::{MediaServer, media_sha256};
pub use own_postgres::OwnPostgres;

/// Admin connection used to create per-test databases; every test database's URL keeps its
/// query. The default turns TLS off: the test server is on loopback, where TLS protects
/// nothing and would cost every process on the job path CPU (docs/CONFIGURATION.md).
pub fn admin_url() -> String {
    std::env::var("CLIPSTASH_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable".into())
}

pub fn redis_url() -> String {
    std::env::var("CLIPSTASH_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A migrated database of its own, dropped when the test ends.
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub pool: PgPool,
}

impl TestDb {
    pub async fn new() -> Self {
        let db = Self::empty().await;
        clipstash_db::migrate(&db.pool).await.unwrap();
        db
    }

    /// A database of its own with no schema yet (to test a migration on data made by the
    /// ones before it).
    pub async fn empty() -> Self {
        let name = format!("cs_test_{}", uuid::Uuid::new_v4().simple());
        let admin = PgPool::connect(&admin_url())
            .await
            .expect("test Postgres reachable (CLIPSTASH_TEST_DATABASE_URL)");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await
            .unwrap();
        admin.close().await;
        let mut url = url_with_db(&admin_url(), &name);
        url.push_str(if url.contains('?') { "&" } else { "?" });
        url.push_str("application_name=clipstash-test");
        let pool = clipstash_db::connect(&url.clone().into(), 8).await.unwrap();
        Self { name, url, pool }
    }

    /// A database with every migration whose file name sorts before `first_left_out` (e.g.
    /// `"20261130000011"`), from a copy of the folder: for tests of a migration, or of the
    /// binaries against a schema behind them.
    pub async fn migrated_before(first_left_out: &str) -> Self {
        let db = Self::empty().await;
        let dir =
            std::env::temp_dir().join(format!("cs-migrations-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let all = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations");
        for entry in std::fs::read_dir(&all).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            if name.as_str() < first_left_out {
                std::fs::copy(&path, dir.join(&name)).unwrap();
            }
        }
        sqlx::migrate::Migrator::new(dir.as_path())
            .await
            .unwrap()
            .run(&db.pool)
            .await
            .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        db
    }

    /// An API key's row straight in Postgres, with no limits of its own (a submit carries
    /// its cap): for tests of what keys own and count.
    pub async fn api_key(&self, name: &str) -> uuid::Uuid {
        use clipstash_db::keys::{NewKey, StoredWebhookSecret, create_key};
        let id = uuid::Uuid::now_v7();
        // Unique, as the column requires: the key's own id, twice.
        let hash: [u8; 32] = [*id.as_bytes(), *id.as_bytes()]
            .concat()
            .try_into()
            .unwrap();
        let key = NewKey {
            name,
            key_hash: &hash,
            prefix: "cs_test",
            rate_per_minute: None,
            max_active_jobs: None,
            webhook_secret: &StoredWebhookSecret::Plain(vec![7; 32]),
        };
        create_key(&self.pool, id, &key).await.unwrap();
        id
    }

    /// Another writer in the middle of a submit of `n` queued jobs of `key`, as the batch
    /// statement makes them: the key's row locked, the jobs inserted (the first under
    /// `idempotency_key`, with request hash `s`, if given) and counted, not committed. Commit
    /// or roll back the transaction; the jobs' ids come with it.
    pub async fn submit_in_progress(
        &self,
        key: uuid::Uuid,
        n: i64,
        idempotency_key: Option<&str>,
    ) -> (sqlx::Transaction<'static, sqlx::Postgres>, Vec<uuid::Uuid>) {
        let mut tx = self.pool.begin().await.unwrap();
        sqlx::query("SELECT 1 FROM api_keys WHERE id = $1 FOR NO KEY UPDATE")
            .bind(key)
            .execute(&mut *tx)
            .await
            .unwrap();
        let mut ids = Vec::new();
        for i in 0..n {
            let id = uuid::Uuid::now_v7();
            let idempotency_key = idempotency_key.filter(|_| i == 0);
            sqlx::query(
                "INSERT INTO jobs (id, url, source, status, api_key_id, requested_source, \
                 idempotency_key, request_sha256) \
                 VALUES ($1, 'https://a.example/h.mp4', 'direct', 'queued', $2, 'auto', $3, \
                 CASE WHEN $3 IS NULL THEN NULL ELSE 's' END)",
            )
            .bind(id)
            .bind(key)
            .bind(idempotency_key)
            .execute(&mut *tx)
            .await
            .unwrap();
            ids.push(id);
        }
        sqlx::query("UPDATE api_keys SET active_jobs = active_jobs + $2 WHERE id = $1")
            .bind(key)
            .bind(n)
            .execute(&mut *tx)
            .await
            .unwrap();
        (tx, ids)
    }

    /// Returns once a session of this database waits on a lock, or once `finished()` says
    /// the work that was to block has ended without waiting.
    pub async fn until_a_session_waits_on_a_lock(&self, finished: impl Fn() -> bool) {
        loop {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .fetch_one(&self.pool)
            .await
            .unwrap();
            if waiting > 0 || finished() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub fn args(&self) -> DatabaseArgs {
        DatabaseArgs {
            database_url: self.url.clone().into(),
            db_max_connections: 8,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Best effort, on a thread of its own: Drop cannot await.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(admin) = PgPool::connect(&admin_url()).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&admin)
                    .await;
                }
            })
        })
        .join();
    }
}

fn url_with_db(url: &str, db: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let base = base.rsplit_once('/').map_or(base, |(b, _)| b);
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

/// A stored object of `size` bytes on the local provider, for completing a job in tests.
pub fn stored_object(id: uuid::Uuid, size: i64) -> clipstash_domain::StoredObject {
    clipstash_domain::StoredObject {
        provider: clipstash_domain::StorageProvider::new("local"),
        object_key: format!("downloads/{id}"),
        size_bytes: size,
        sha256: "00".repeat(32),
        content_type: "video/mp4".into(),
    }
}

/// A queue name (the Redis key prefix) of its own; its keys are deleted when dropped.
pub struct TestQueue {
    pub name: String,
}

impl TestQueue {
    pub fn new() -> Self {
        Self {
            name: format!("cs-test:{}", uuid::Uuid::new_v4().simple()),
        }
    }

    /// Queue settings with fast heartbeats so orphan recovery takes seconds in tests.
    pub fn args(&self) -> RedisArgs {
        RedisArgs {
            redis_url: redis_url().into(),
            queue: self.name.clone(),
            heartbeat_interval: Duration::from_secs(1),
            missed_heartbeats: 3,
        }
    }

    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(redis_url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }
}

impl Default for TestQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestQueue {
    fn drop(&mut self) {
        let pattern = format!("{}:*", self.name);
        let _ = std::thread::spawn(move || {
            let Ok(client) = redis::Client::open(redis_url()) else {
                return;
            };
            let Ok(mut conn) = client.get_connection() else {
                return;
            };
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(&pattern)
                .query(&mut conn)
                .unwrap_or_default();
            if !keys.is_empty() {
                let _: Result<(), _> = redis::cmd("DEL").arg(keys).query(&mut conn);
            }
        })
        .join();
    }
}

/// Polls `check` every 50 ms until it returns `Some`, or panics naming `what` after `limit`.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A port the OS just handed out, for the real binaries, which take an address (in-process
/// servers take a bound listener instead).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `redis-server` of the test's own on a free loopback port, without persistence, so a
/// test may flush or kill it without touching the shared one.
pub struct OwnRedis {
    pub port: u16,
    child: std::process::Child,
}

impl OwnRedis {
    pub async fn start() -> Self {
        let port = free_port();
        let this = Self {
            port,
            child: Self::spawn(port),
        };
        this.wait_up().await;
        this
    }

    fn spawn(port: u16) -> std::process::Child {
        std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server on PATH")
    }

    async fn wait_up(&self) {
        let url = self.url();
        wait_for("own redis", Duration::from_secs(10), || {
            let url = url.clone();
            async move { clipstash_queue::connect(&url.into()).await.ok().map(|_| ()) }
        })
        .await;
    }

    /// SIGKILL and start again, empty, on the same port: a restart without persistence.
    pub async fn restart(&mut self) {
        self.kill();
        self.child = Self::spawn(self.port);
        self.wait_up().await;
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: Redis is gone, as after a crash.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGSTOP: Redis keeps its connections but answers nothing, as in a long stall.
    pub fn pause(&self) {
        signal(self.child.id(), "STOP");
    }

    /// SIGCONT after [`pause`](OwnRedis::pause).
    pub fn resume(&self) {
        signal(self.child.id(), "CONT");
    }

    /// `FLUSHALL` on this instance only: as if Redis restarted without persistence.
    pub async fn flushall(&self) {
        let mut conn = clipstash_queue::connect(&self.url().into()).await.unwrap();
        let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `SIG{name}` to `pid` with kill(1).
pub fn signal(pid: u32, name: &str) {
    let ok = std::process::Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "kill -{name} {pid} failed");
}
