//! `wharf gc [--dry-run]`: asks the running server for one garbage collection (the server
//! holds the data directory, so the command cannot open it itself) through the management
//! API's `POST /wharf/v1/gc`, with the management credential or the admin user, and prints
//! the run's figures.

use clap::Args;
use serde_json::Value;

use crate::client::{self, Conn, render_rows, s};

#[derive(Args)]
pub struct GcArgs {
    /// Report what a run would remove, removing nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    conn: Conn,
}

/// Runs `wharf gc` and returns the process's exit status.
pub async fn run(a: GcArgs) -> i32 {
    let res = async {
        let c = client::Client::new(&a.conn)?;
        let path = format!("/wharf/v1/gc?dryRun={}", a.dry_run);
        let v = c.call(reqwest::Method::POST, &path, None).await?;
        let v = c.object(v, "garbage collection figures")?;
        render_rows(
            &v,
            a.conn.output,
            &[
                "DRY RUN",
                "LINKS REMOVED",
                "BLOBS REMOVED",
                "BYTES RECLAIMED",
                "UPLOADS REMOVED",
                "DURATION MS",
            ],
            |v: &Value| {
                [
                    "dryRun",
                    "linksRemoved",
                    "blobsRemoved",
                    "bytesReclaimed",
                    "uploadsRemoved",
                    "durationMs",
                ]
                .iter()
                .map(|k| s(&v[*k]))
                .collect()
            },
            false,
        )
    }
    .await;
    client::finish(res)
}
