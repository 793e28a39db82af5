//! The report database: SQLite (one file) or PostgreSQL, through sqlx's `Any` driver, so that
//! both back ends run the same SQL and the same migrations (`publish/migrations/`).

use chrono::{DateTime, Utc};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};
use upd_channels::report::{Outcome, Report};

/// Why the database could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The `--db` value is neither `sqlite:PATH` nor `postgres://…`.
    #[error("--db {0:?}: expected sqlite:PATH or postgres://USER@HOST:PORT/DB")]
    Url(String),
    /// Connecting failed.
    #[error("connecting to {url}: {source}")]
    Connect {
        /// The URL, without its password.
        url: String,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// The schema migrations failed.
    #[error("migrating the report database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A query failed.
    #[error("report database: {0}")]
    Query(#[from] sqlx::Error),
}

/// The schema migrations, embedded at build time.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// An open, migrated report database.
#[derive(Debug, Clone)]
pub struct Db {
    pool: AnyPool,
}

/// A `--db` URL made ready for sqlx: `sqlite:PATH` creates the file when missing.
fn normalise(url: &str) -> Result<(String, bool), DbError> {
    if let Some(rest) = url.strip_prefix("sqlite:") {
        let rest = rest.trim_start_matches("//");
        if rest.is_empty() {
            return Err(DbError::Url(url.into()));
        }
        let sep = if rest.contains('?') { '&' } else { '?' };
        return Ok((format!("sqlite://{rest}{sep}mode=rwc"), true));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok((url.into(), false));
    }
    Err(DbError::Url(url.into()))
}

/// `url` with any password replaced, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let cred = &url[s + 3..at];
            match cred.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &cred[..c], &url[at..]),
                None => url.into(),
            }
        }
        _ => url.into(),
    }
}

impl Db {
    /// Connect (`connections`: the pool size; SQLite always uses one writer) and migrate.
    pub async fn open(url: &str, connections: u32) -> Result<Db, DbError> {
        sqlx::any::install_default_drivers();
        let (real, sqlite) = normalise(url)?;
        let max = if sqlite { 1 } else { connections.max(1) };
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .connect(&real)
            .await
            .map_err(|source| DbError::Connect {
                url: redact(url),
                source,
            })?;
        if sqlite {
            // Readers (`fleet status`, the guard) in other processes do not block the writer.
            sqlx::query("PRAGMA journal_mode=WAL")
                .fetch_all(&pool)
                .await?;
        }
        MIGRATOR.run(&pool).await?;
        Ok(Db { pool })
    }

    /// Store one checked report: in the history, as its machine's latest (unless a later one is
    /// already there) and as that machine's outcome for the release it is about. One transaction.
    pub async fn insert(&self, r: &Report, received: DateTime<Utc>) -> Result<(), DbError> {
        let time = r.time.timestamp_millis();
        let generation = i64::try_from(r.booted.generation).unwrap_or(i64::MAX);
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO reports (machine_id, received_ms, time_ms, channel, grp, event, os, \
             generation, pending, phase, error, fleet_position) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        // Not cached: through `Any`, PostgreSQL would keep the parameter types of the first
        // call (a null position) and refuse a later call's number ("incorrect binary data
        // format in bind parameter 12").
        .persistent(false)
        .bind(&r.machine_id)
        .bind(received.timestamp_millis())
        .bind(time)
        .bind(&r.channel)
        .bind(r.group.clone())
        .bind(r.event.as_str())
        .bind(&r.booted.os)
        .bind(generation)
        .bind(r.pending.clone())
        .bind(&r.phase)
        .bind(r.error.clone())
        .bind(r.fleet_position)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO machines (machine_id, time_ms, channel, grp, event, os, generation, \
             pending, phase, error, fleet_position) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             ON CONFLICT (machine_id) DO UPDATE SET time_ms = excluded.time_ms, \
             channel = excluded.channel, grp = excluded.grp, event = excluded.event, \
             os = excluded.os, generation = excluded.generation, pending = excluded.pending, \
             phase = excluded.phase, error = excluded.error, \
             fleet_position = excluded.fleet_position \
             WHERE excluded.time_ms >= machines.time_ms",
        )
        // Not cached: through `Any`, PostgreSQL would keep the parameter types of the first
        // call (a null position) and refuse a later call's number ("incorrect binary data
        // format in bind parameter 12").
        .persistent(false)
        .bind(&r.machine_id)
        .bind(time)
        .bind(&r.channel)
        .bind(r.group.clone())
        .bind(r.event.as_str())
        .bind(&r.booted.os)
        .bind(generation)
        .bind(r.pending.clone())
        .bind(&r.phase)
        .bind(r.error.clone())
        .bind(r.fleet_position)
        .execute(&mut *tx)
        .await?;
        if let Some((version, outcome)) = r.outcome() {
            sqlx::query(
                "INSERT INTO attempts (machine_id, channel, version, outcome, grp, \
                 fleet_position, time_ms) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (machine_id, channel, version) DO UPDATE SET \
                 outcome = excluded.outcome, grp = excluded.grp, \
                 fleet_position = COALESCE(excluded.fleet_position, attempts.fleet_position), \
                 time_ms = excluded.time_ms WHERE excluded.time_ms >= attempts.time_ms",
            )
            .persistent(false)
            .bind(&r.machine_id)
            .bind(&r.channel)
            .bind(version)
            .bind(outcome.as_str())
            .bind(r.group.clone())
            .bind(r.fleet_position)
            .bind(time)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The number of stored reports of `channel`.
    pub async fn report_count(&self, channel: &str) -> Result<i64, DbError> {
        let row = sqlx::query("SELECT COUNT(*) FROM reports WHERE channel = $1")
            .bind(channel)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get(0)?)
    }

    /// Machines of `channel` by (running OS, group) from their latest reports.
    pub async fn running(&self, channel: &str) -> Result<Vec<(String, String, i64)>, DbError> {
        let rows = sqlx::query(
            "SELECT os, COALESCE(grp, ''), COUNT(*) FROM machines WHERE channel = $1 \
             GROUP BY os, COALESCE(grp, '')",
        )
        .bind(channel)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect()
    }

    /// Attempts of `channel` counted by (release, outcome, group, wave): the wave is the index
    /// of the first bound in `bounds` (ascending fractions) above the fleet position, -1 when
    /// the position is unknown.
    pub async fn attempts(
        &self,
        channel: &str,
        bounds: &[f64],
    ) -> Result<Vec<AttemptCount>, DbError> {
        let mut case = String::from("CASE WHEN fleet_position IS NULL THEN -1");
        for (i, _) in bounds.iter().enumerate() {
            case += &format!(" WHEN fleet_position < ${} THEN {i}", i + 2);
        }
        case += &format!(" ELSE {} END", bounds.len());
        let sql = format!(
            "SELECT version, outcome, COALESCE(grp, ''), {case} AS wave, COUNT(*) FROM attempts \
             WHERE channel = $1 GROUP BY version, outcome, COALESCE(grp, ''), wave"
        );
        let mut q = sqlx::query(&sql).bind(channel);
        for b in bounds {
            q = q.bind(*b);
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter().map(AttemptCount::of).collect()
    }

    /// Reports of `channel` in time order: (time ms, machine, event, booted OS, pending, outcome
    /// failure?) for the page's history, at most `limit` of the latest.
    pub async fn history(&self, channel: &str, limit: i64) -> Result<Vec<HistoryRow>, DbError> {
        let rows = sqlx::query(
            "SELECT time_ms, machine_id, event, os, pending, error FROM reports \
             WHERE channel = $1 ORDER BY time_ms DESC LIMIT $2",
        )
        .bind(channel)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut out: Vec<HistoryRow> = rows
            .iter()
            .map(|r| {
                Ok(HistoryRow {
                    time_ms: r.try_get(0)?,
                    machine_id: r.try_get(1)?,
                    event: r.try_get(2)?,
                    os: r.try_get(3)?,
                    pending: r.try_get(4)?,
                    error: r.try_get(5)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()?;
        out.reverse();
        Ok(out)
    }

    /// Close the pool (waits for connections to be returned).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// One group of [`Db::attempts`].
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptCount {
    /// The release.
    pub version: String,
    /// The outcome.
    pub outcome: Outcome,
    /// The group ("" when none was reported).
    pub group: String,
    /// The wave index (-1: position unknown).
    pub wave: i64,
    /// Machines.
    pub count: i64,
}

impl AttemptCount {
    fn of(r: &AnyRow) -> Result<AttemptCount, DbError> {
        let outcome: String = r.try_get(1)?;
        Ok(AttemptCount {
            version: r.try_get(0)?,
            outcome: Outcome::parse(&outcome).unwrap_or(Outcome::Failed),
            group: r.try_get(2)?,
            wave: wave_of(r)?,
            count: r.try_get(4)?,
        })
    }
}

/// The wave column: an integer in both back ends, but SQLite may type a CASE as either width.
fn wave_of(r: &AnyRow) -> Result<i64, sqlx::Error> {
    r.try_get::<i64, _>(3)
        .or_else(|_| r.try_get::<i32, _>(3).map(i64::from))
}

/// One stored report, for the page.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HistoryRow {
    /// When it happened (ms since the epoch).
    pub time_ms: i64,
    /// The machine.
    pub machine_id: String,
    /// The event.
    pub event: String,
    /// The booted OS.
    pub os: String,
    /// The release it was about.
    pub pending: Option<String>,
    /// The error kind.
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_normalised_and_redacted() {
        assert_eq!(
            normalise("sqlite:/tmp/x.db").unwrap(),
            ("sqlite:///tmp/x.db?mode=rwc".into(), true)
        );
        assert!(normalise("mysql://x").is_err());
        assert!(normalise("sqlite:").is_err());
        assert_eq!(
            redact("postgres://u:secret@h:5/d"),
            "postgres://u:***@h:5/d"
        );
    }
}
