//! Write transactions that cannot outlive a failure.
//!
//! sqlx's own `Transaction` trusts its bookkeeping over SQLite's: when a COMMIT fails with
//! `SQLITE_FULL`, SQLite has already rolled the transaction back, the driver's follow-up
//! ROLLBACK fails, and sqlx 0.8 keeps counting the connection as one transaction deep. The next
//! `begin()` then becomes a SAVEPOINT inside a transaction that never ends, and every later
//! "commit" is a RELEASE that commits nothing — while the callers answer 201 and deliver events
//! for changes that were never stored.
//!
//! [`WriteTx`] issues `BEGIN IMMEDIATE`/`COMMIT`/`ROLLBACK` itself and trusts nothing after an
//! error: a transaction that fails to commit or roll back cleanly, or that is dropped without
//! either (an error returned with `?`, a cancelled request), closes its connection instead of
//! returning it to the pool. Closing a SQLite connection rolls back whatever it had open; the
//! pool opens a fresh one for the next writer. So a connection in an unknown state is never
//! reused.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::{Sqlite, SqliteConnection, SqlitePool};
use tokio::sync::{Notify, mpsc};

use crate::StoreError;

/// The wall clock in unix milliseconds: the time stamps of rows and leases.
pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// An open write transaction on a connection of the write pool. See the module docs.
pub(crate) struct WriteTx {
    conn: PoolConnection<Sqlite>,
    /// Running with `synchronous=NORMAL` (see [`WriteTx::begin_relaxed`]).
    relaxed: bool,
    /// Still open: dropping it now closes the connection.
    open: bool,
}

impl WriteTx {
    /// A durable transaction: its COMMIT fsyncs the WAL (`synchronous=FULL`).
    pub(crate) async fn begin(pool: &SqlitePool) -> Result<Self, StoreError> {
        Self::start(pool, false).await
    }

    /// A transaction with `synchronous=NORMAL`, for bookkeeping whose loss in a power failure
    /// costs at most a duplicate delivery or a restarted upload (leases,
    /// upload sessions). In WAL mode NORMAL skips the fsync at commit but still syncs the WAL
    /// before a checkpoint copies it into the database, so a checkpoint run here can never put
    /// earlier durable commits at risk (OFF could). The connection goes back to the pool only
    /// after `synchronous=FULL` is restored, so no durable write ever runs relaxed.
    pub(crate) async fn begin_relaxed(pool: &SqlitePool) -> Result<Self, StoreError> {
        Self::start(pool, true).await
    }

    async fn start(pool: &SqlitePool, relaxed: bool) -> Result<Self, StoreError> {
        // Wrapped before the first statement: from here on, any failure or cancellation
        // closes the connection (the pragma may have run, the BEGIN may have).
        let conn = acquire_write(pool).await?;
        let mut tx = WriteTx {
            conn,
            relaxed,
            open: true,
        };
        // One round trip either way (each is two thread switches to the connection's
        // thread). Should the BEGIN fail after the pragma ran, the connection is closed.
        let begin = if relaxed {
            "PRAGMA synchronous = NORMAL; BEGIN IMMEDIATE"
        } else {
            "BEGIN IMMEDIATE"
        };
        sqlx::query(begin).execute(&mut *tx.conn).await?;
        Ok(tx)
    }

    /// Commits. On any error the transaction did not commit as far as the caller may assume
    /// (nothing may be acknowledged), and the connection is closed.
    pub(crate) async fn commit(mut self) -> Result<(), StoreError> {
        sqlx::query("COMMIT").execute(&mut *self.conn).await?;
        self.settle().await;
        Ok(())
    }

    /// Rolls back (a refused change that wrote nothing, or wrote what must not stay).
    pub(crate) async fn rollback(mut self) {
        if sqlx::query("ROLLBACK")
            .execute(&mut *self.conn)
            .await
            .is_ok()
        {
            self.settle().await;
        }
        // Otherwise `self` drops still open, and the connection is closed.
    }

    /// After a clean COMMIT or ROLLBACK: restores durability and lets the connection go back
    /// to the pool, or leaves it marked open (to be closed) if that fails.
    async fn settle(&mut self) {
        if self.relaxed
            && sqlx::query("PRAGMA synchronous = FULL")
                .execute(&mut *self.conn)
                .await
                .is_err()
        {
            return;
        }
        self.open = false;
    }
}

impl Drop for WriteTx {
    fn drop(&mut self) {
        if self.open {
            // Unknown state: never back to the pool. Closing rolls back anything still open.
            tracing::debug!("closing a write connection left in an unknown state");
            self.conn.close_on_drop();
        }
    }
}

impl Deref for WriteTx {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        &self.conn
    }
}

impl DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.conn
    }
}

/// A connection of the write pool for a statement outside [`WriteTx`] (one that commits on
/// its own), acquired as a waiting writer: a [`HeldConn`] gives the connection up for it
/// at once rather than after its idle hold. Every writer other than the group commit
/// acquires through here.
pub(crate) async fn acquire_write(pool: &SqlitePool) -> Result<PoolConnection<Sqlite>, StoreError> {
    let _waiting = Waiting::new();
    Ok(pool.acquire().await?)
}

/// How many writers are waiting for a write connection, in this process: a [`HeldConn`]
/// gives its connection back as soon as one is. (Process-wide rather than per pool: with
/// several stores in one process, as in tests, a holder only gives back sooner.)
static WRITERS_WAITING: AtomicUsize = AtomicUsize::new(0);

/// Wakes a [`HeldConn`] holding its connection while idle when a writer starts to wait.
static WRITER_WANTED: Notify = Notify::const_new();

/// Counts one waiting writer for as long as it lives (also when its acquire is cancelled).
struct Waiting;

impl Waiting {
    fn new() -> Self {
        WRITERS_WAITING.fetch_add(1, Ordering::SeqCst);
        WRITER_WANTED.notify_waiters();
        Waiting
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        WRITERS_WAITING.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The write connection kept by one writer across consecutive transactions (the manifest
/// group commit). Giving a connection back to sqlx's pool spawns a task that pings the
/// connection's thread before the next acquire can have it: a round trip and two task
/// wake-ups between every two groups, on the path of every waiting push. The writer keeps
/// the connection instead, also for a short idle while ([`HeldConn::hold_for_work`]), until
/// another writer waits for it ([`HeldConn::keep`] says when it must give it back). The
/// rules of [`WriteTx`] hold for each transaction on it ([`HeldTx`]): a transaction
/// that ends in doubt closes the connection rather than reuse it.
pub(crate) struct HeldConn {
    conn: PoolConnection<Sqlite>,
    /// A transaction on it ended in doubt: closed when dropped, never reused.
    poisoned: bool,
    /// Transactions run on it since it was acquired.
    uses: usize,
}

impl HeldConn {
    /// Most transactions in a row before the connection goes back to the pool, so that a
    /// writer that bypasses [`acquire_write`] (a statement straight on the pool, as tests
    /// do) waits a bounded time behind a steady stream of groups: a few hundred milliseconds
    /// at most. Every writer in the store acquires through it and is served at once; each
    /// give-back costs the waiting pushes about 1.2 ms, so it should be rare.
    const MAX_USES: usize = 256;

    /// How long the group commit keeps an idle connection for its next group
    /// ([`HeldConn::hold_for_work`]).
    /// Pushers at concurrency 8 leave the queue empty for a few hundred microseconds between
    /// most groups (they are reading their replies and sending the next manifest); giving
    /// the connection back each time cost about 1.2 ms per group in the pool's release ping
    /// and re-acquire. Other writers never wait this out: they wake the holder.
    pub(crate) const IDLE_HOLD: Duration = Duration::from_millis(10);

    pub(crate) async fn acquire(pool: &SqlitePool) -> Result<Self, StoreError> {
        Ok(HeldConn {
            conn: pool.acquire().await?,
            poisoned: false,
            uses: 0,
        })
    }

    /// Whether the connection may be kept for another transaction: not if it is in doubt, nor
    /// once it has been kept long enough, nor while another writer waits for it.
    pub(crate) fn keep(&self) -> bool {
        !self.poisoned && self.uses < Self::MAX_USES && WRITERS_WAITING.load(Ordering::SeqCst) == 0
    }

    /// Waits, keeping the connection, for the next work on `rx`: gives up (`Release`) when it
    /// must not be kept ([`HeldConn::keep`]), when another writer starts waiting for it, or
    /// after `idle` with nothing to do.
    pub(crate) async fn hold_for_work<T>(
        &self,
        rx: &mut mpsc::Receiver<T>,
        idle: Duration,
    ) -> Held<T> {
        // Registered before the check, so a writer that starts waiting after it still wakes
        // this wait.
        let wanted = WRITER_WANTED.notified();
        tokio::pin!(wanted);
        wanted.as_mut().enable();
        if !self.keep() {
            return Held::Release;
        }
        tokio::select! {
            biased;
            _ = &mut wanted => Held::Release,
            job = rx.recv() => job.map_or(Held::Closed, Held::Work),
            _ = tokio::time::sleep(idle) => Held::Release,
        }
    }

    /// A durable transaction (`synchronous=FULL`, the connection's setting) whose
    /// `BEGIN IMMEDIATE` is sent with its first statement: see [`HeldTx::begin_sql`].
    pub(crate) fn tx(&mut self) -> HeldTx<'_> {
        self.uses += 1;
        HeldTx {
            held: self,
            begun: false,
            open: true,
        }
    }
}

impl Drop for HeldConn {
    fn drop(&mut self) {
        if self.poisoned {
            tracing::debug!("closing a write connection left in an unknown state");
            self.conn.close_on_drop();
        }
    }
}

/// What [`HeldConn::hold_for_work`] ended with.
pub(crate) enum Held<T> {
    /// Work arrived; the connection is still held for it.
    Work(T),
    /// The connection should go back to the pool.
    Release,
    /// The channel closed: no more work will come.
    Closed,
}

/// A transaction on a [`HeldConn`], under [`WriteTx`]'s rules: dropped before a clean COMMIT
/// or ROLLBACK, it leaves its connection to be closed.
pub(crate) struct HeldTx<'a> {
    held: &'a mut HeldConn,
    /// Its BEGIN was sent (or is about to be, at the head of a statement).
    begun: bool,
    /// Not yet cleanly committed or rolled back.
    open: bool,
}

impl HeldTx<'_> {
    /// The first time, `BEGIN IMMEDIATE;` for the caller to send at the head of its next
    /// statement's text, saving the BEGIN its own round trip to the connection's thread;
    /// nothing after that. Should that statement fail, the transaction is in doubt like any
    /// other failure.
    pub(crate) fn begin_sql(&mut self) -> &'static str {
        if self.begun {
            ""
        } else {
            self.begun = true;
            "BEGIN IMMEDIATE;\n"
        }
    }

    /// Sends the BEGIN now unless it was sent already.
    pub(crate) async fn begin(&mut self) -> Result<(), StoreError> {
        if !self.begun {
            self.begun = true;
            sqlx::query("BEGIN IMMEDIATE")
                .execute(&mut *self.held.conn)
                .await?;
        }
        Ok(())
    }

    /// Commits. On any error nothing may be assumed committed, and the connection is closed.
    pub(crate) async fn commit(mut self) -> Result<(), StoreError> {
        if self.begun {
            sqlx::query("COMMIT").execute(&mut *self.held.conn).await?;
        }
        self.open = false;
        Ok(())
    }

    /// Records that the statement batch the caller ended with `COMMIT` ran without error, so
    /// the transaction committed (a failure anywhere in the batch returns before this, and
    /// closes the connection).
    pub(crate) fn committed_by_batch(mut self) {
        self.open = false;
    }
}

impl Drop for HeldTx<'_> {
    fn drop(&mut self) {
        if self.open {
            self.held.poisoned = true;
        }
    }
}

impl Deref for HeldTx<'_> {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        &self.held.conn
    }
}

impl DerefMut for HeldTx<'_> {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.held.conn
    }
}

#[cfg(test)]
mod tests {
    use sqlx::Row;

    use super::*;
    use crate::Meta;

    async fn sync_mode(pool: &SqlitePool) -> i64 {
        sqlx::query("PRAGMA synchronous")
            .fetch_one(pool)
            .await
            .unwrap()
            .get(0)
    }

    async fn insert_upload(tx: &mut WriteTx, id: &str, pad: usize) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO uploads (id, repo, algorithm, created_at) VALUES (?, ?, 'sha256', 0)",
        )
        .bind(id)
        .bind("x".repeat(pad))
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    #[tokio::test]
    async fn relaxed_transactions_never_return_their_connection_relaxed() {
        let dir = tempfile::tempdir().unwrap();
        let meta = Meta::open(&dir.path().join("t.db")).await.unwrap();
        // 2 = FULL: every durable commit fsyncs.
        assert_eq!(sync_mode(&meta.write).await, 2);
        let mut tx = WriteTx::begin_relaxed(&meta.write).await.unwrap();
        let mode: i64 = sqlx::query("PRAGMA synchronous")
            .fetch_one(&mut *tx)
            .await
            .unwrap()
            .get(0);
        assert_eq!(mode, 1, "relaxed means NORMAL");
        tx.commit().await.unwrap();
        assert_eq!(sync_mode(&meta.write).await, 2, "commit restores FULL");
        // Dropped without commit (an error path, a cancelled request): the connection is
        // closed, and the pool's replacement is opened with the configured FULL.
        let tx = WriteTx::begin_relaxed(&meta.write).await.unwrap();
        drop(tx);
        assert_eq!(
            sync_mode(&meta.write).await,
            2,
            "a dropped transaction's connection is not reused"
        );
    }

    /// A connection held idle for the group commit is given up as soon as another writer
    /// waits for it, not after the idle hold: that writer (a webhook change, a lease renewal)
    /// never waits out pushes it does not race.
    #[tokio::test]
    async fn an_idle_held_connection_is_given_up_to_a_waiting_writer() {
        let dir = tempfile::tempdir().unwrap();
        let meta = Meta::open(&dir.path().join("t.db")).await.unwrap();
        // The group commit's own hold ends within its idle time; then this one holds.
        let held = HeldConn::acquire(&meta.write).await.unwrap();
        let (_tx, mut rx) = mpsc::channel::<()>(1);
        let hold = tokio::spawn(async move {
            // An hour: only a waiting writer can end this hold within the test's limit.
            let r = held.hold_for_work(&mut rx, Duration::from_secs(3600)).await;
            (matches!(r, Held::Release), held)
        });
        // Give the hold time to start waiting (were the writer first, `keep` refuses at once:
        // the same outcome).
        tokio::time::sleep(Duration::from_millis(50)).await;
        let writer = {
            let pool = meta.write.clone();
            tokio::spawn(async move {
                let mut tx = WriteTx::begin(&pool).await.unwrap();
                insert_upload(&mut tx, "u1", 1).await.unwrap();
                tx.commit().await.unwrap();
            })
        };
        let (released, held) = tokio::time::timeout(Duration::from_secs(30), hold)
            .await
            .expect("the waiting writer ended the hold")
            .unwrap();
        assert!(released);
        drop(held);
        tokio::time::timeout(Duration::from_secs(30), writer)
            .await
            .expect("the writer got the connection")
            .unwrap();
    }

    /// A write that runs out of space is reported as such, leaves nothing behind, and the
    /// next transaction commits for real on a fresh connection. (The COMMIT-time failure of
    /// the module docs needs a really full volume: the fault suite, `scripts/faults.sh`,
    /// reproduces it on a tmpfs.)
    #[tokio::test]
    async fn after_running_out_of_space_the_next_commit_is_real() {
        let dir = tempfile::tempdir().unwrap();
        let meta = Meta::open(&dir.path().join("t.db")).await.unwrap();
        // Cap the database's size on the (single) write connection: writes past it fail with
        // SQLITE_FULL, as on a full disk. A replacement connection has no cap: space is back.
        let pages: i64 = sqlx::query("PRAGMA page_count")
            .fetch_one(&meta.write)
            .await
            .unwrap()
            .get(0);
        sqlx::query(&format!("PRAGMA max_page_count = {}", pages + 4))
            .execute(&meta.write)
            .await
            .unwrap();
        let mut tx = WriteTx::begin(&meta.write).await.unwrap();
        let mut err = None;
        for i in 0..64 {
            if let Err(e) = insert_upload(&mut tx, &format!("fill{i}"), 2000).await {
                err = Some(e);
                break;
            }
        }
        let err = err.expect("the capped database fills up");
        assert!(matches!(err, StoreError::OutOfSpace), "{err:?}");
        drop(tx);

        let mut tx = WriteTx::begin(&meta.write).await.unwrap();
        insert_upload(&mut tx, "after", 1).await.unwrap();
        tx.commit().await.unwrap();
        let ids: Vec<String> = sqlx::query("SELECT id FROM uploads")
            .fetch_all(&meta.read)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(
            ids,
            ["after"],
            "the failed transaction left nothing, the next one committed"
        );
        let depth = <sqlx::sqlite::SqliteTransactionManager as sqlx::TransactionManager>::get_transaction_depth(
            &*meta.write.acquire().await.unwrap(),
        );
        assert_eq!(depth, 0);
    }
}
