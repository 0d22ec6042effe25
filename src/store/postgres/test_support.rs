//! Scratch databases for tests against a real PostgreSQL server: each test creates its own
//! database and drops it when done, so that runs never see each other's rows.
//!
//! The server is named by `EPASS_TEST_POSTGRES`, the URL of a maintenance database that may
//! create databases (`postgres://postgres@127.0.0.1:5432/postgres`). When it is set and the
//! server cannot be reached, the test fails: CI sets it and must never skip. When it is unset,
//! the default above is tried, and if nothing answers there the test prints one line saying
//! so and is skipped.
//!
//! Public, but hidden from the docs, so that integration tests (`tests/`) can use it too:
//! `epass::store::postgres_test_support::ScratchDatabase::create()`.

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

/// The variable naming the server's maintenance database.
pub const ENV: &str = "EPASS_TEST_POSTGRES";

/// Tried when [`ENV`] is unset.
pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Every scratch database's name starts so: `epass_test_<16 hex digits>`.
pub const PREFIX: &str = "epass_test_";

/// A database created for one test, dropped (whoever is still connected) when this is dropped
/// or [`ScratchDatabase::drop_database`] is awaited, also when the test panics.
#[derive(Debug)]
pub struct ScratchDatabase {
    admin: PgConnectOptions,
    name: String,
    url: String,
    dropped: bool,
}

impl ScratchDatabase {
    /// Creates an empty database. `None` when [`ENV`] is unset and no server answers at the
    /// default address (one line says the test is skipped). Panics when [`ENV`] is set and
    /// its server cannot be reached, or when the database cannot be created.
    pub async fn create() -> Option<Self> {
        let (admin_url, required) = match std::env::var(ENV) {
            Ok(url) => (url, true),
            Err(_) => (DEFAULT_ADMIN_URL.to_owned(), false),
        };
        let admin: PgConnectOptions =
            admin_url.parse().unwrap_or_else(|err| panic!("{ENV}={admin_url:?} is not a PostgreSQL URL: {err}"));
        let mut conn = match admin.connect().await {
            Ok(conn) => conn,
            Err(err) if required => panic!("{ENV}={admin_url:?}: cannot reach PostgreSQL: {err}"),
            Err(_) => {
                println!(
                    "skipped: no PostgreSQL at 127.0.0.1:5432; set {ENV}=postgres://USER@HOST:PORT/postgres to run"
                );
                return None;
            }
        };
        let name = format!("{PREFIX}{}", hex::encode(rand::random::<[u8; 8]>()));
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|err| panic!("creating database {name}: {err}"));
        conn.close().await.ok();
        let url = admin.clone().database(&name).to_url_lossy().to_string();
        Some(Self { admin, name, url, dropped: false })
    }

    /// The URL of the scratch database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The name of the scratch database.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Drops the database now, closing whatever connections remain to it.
    pub async fn drop_database(mut self) {
        self.dropped = true;
        drop_now(&self.admin, &self.name).await;
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        self.dropped = true;
        // Drop runs inside the test's runtime, which cannot be blocked on: a thread of its own
        // with a runtime of its own drops the database, and this waits for it.
        let (admin, name) = (self.admin.clone(), self.name.clone());
        let dropping = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
            match runtime {
                Ok(runtime) => runtime.block_on(drop_now(&admin, &name)),
                Err(err) => eprintln!("database {name} left behind: no runtime to drop it: {err}"),
            }
        });
        if dropping.join().is_err() {
            eprintln!("database {} may be left behind: dropping it panicked", self.name);
        }
    }
}

/// `DROP DATABASE ... WITH (FORCE)`; reports rather than panics, since it runs in `Drop`.
async fn drop_now(admin: &PgConnectOptions, name: &str) {
    let result = async {
        let mut conn = admin.connect().await?;
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut conn).await?;
        conn.close().await
    }
    .await;
    if let Err(err) = result {
        eprintln!("database {name} left behind: {err}");
    }
}
