//! Checkpoints SQLite's write-ahead log from a connection of its own.
//!
//! By default the connection that commits runs the checkpoint once the WAL passes 1,000
//! pages: it copies the pages into the database file and fsyncs it, twice, inside the commit
//! that crossed the line. Here that connection is the one write connection that every group
//! of manifest puts, every outbox row and every attempt record waits for, and a push with a
//! webhook writes about 27 WAL pages, so that happened every few dozen pushes, with the next
//! group of puts queued behind it. So the write connection runs with `wal_autocheckpoint=0`
//! and this task checkpoints instead, PASSIVE (it never waits for the writer or blocks it,
//! and the writer restarts the log from its start once it has all been copied).
//!
//! Durability does not change: a commit is on disk when its WAL frames are fsynced, before any
//! checkpoint; a checkpoint fsyncs the WAL before it copies and the database after. A
//! checkpoint that fails (a full disk) is logged and tried again on the next tick; the pages
//! stay in the WAL meanwhile, where every reader still finds them.

use std::time::Duration;

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Row};

/// How often the WAL is checkpointed. At a few thousand pushes per second the WAL grows by
/// some 30,000 pages a second; a tick of 50 ms keeps it near SQLite's own 1,000-page mark.
pub(crate) const EVERY: Duration = Duration::from_millis(50);

/// The checkpointing task; it stops when this is dropped or stopped.
#[derive(Debug)]
pub(crate) struct Checkpointer(tokio::task::JoinHandle<()>);

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Checkpointer {
    /// Starts checkpointing the database `opts` opens, on a connection of its own.
    pub(crate) fn spawn(opts: SqliteConnectOptions) -> Self {
        Checkpointer(tokio::spawn(run(opts)))
    }

    /// Stops checkpointing (the store is closing; SQLite checkpoints at the last close).
    pub(crate) fn stop(&self) {
        self.0.abort();
    }
}

async fn run(opts: SqliteConnectOptions) {
    let mut conn = None;
    let mut failing = false;
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if conn.is_none() {
            match opts.connect().await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    report(&mut failing, &e);
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        match sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(&mut *c)
            .await
        {
            // (busy, frames in the log, frames copied): busy is 1 only when another
            // checkpoint ran at the same time, which nothing here does.
            Ok(r) => {
                if failing {
                    tracing::info!(
                        wal_frames = r.try_get::<i64, _>(1).unwrap_or(-1),
                        "WAL checkpoints succeed again"
                    );
                    failing = false;
                }
            }
            Err(e) => {
                report(&mut failing, &e);
                // A fresh connection next time: this one's state is unknown.
                conn = None;
            }
        }
    }
}

/// Logs a failure once per run of failures (a full disk fails every tick).
fn report(failing: &mut bool, e: &sqlx::Error) {
    if !*failing {
        tracing::warn!(error = %e, "WAL checkpoint failed; retrying (pages stay in the WAL)");
        *failing = true;
    }
}
