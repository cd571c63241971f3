//! Which database an object-storage prefix belongs to.
//!
//! The database and the blobs are two stores that must agree: start-up removes upload
//! sessions that have no row in the database, garbage collection deletes content that no
//! link of the database names, and a blob HEAD answers from the database's link. Pointed at a
//! prefix another database also uses, a node would delete that database's uploads and
//! images; pointed at a prefix that is not where its blobs are (a changed or mistyped
//! `--blob-store`), it would acknowledge manifests whose content is not there. So each
//! database has an id (migration 0010), and the prefix records the id of the one database it
//! serves in its `wharf-store-id` object: a mismatch stops start-up with a clear error.
//!
//! Nodes that share one database (PostgreSQL) share its id, and so the prefix.

use sqlx::Row;

use crate::StoreError;
use crate::blobs::object::ObjectBlobs;
use crate::meta::Meta;

/// This database's id.
pub(crate) async fn store_id(meta: &Meta) -> Result<String, StoreError> {
    let row = sqlx::query("SELECT store_id FROM store_identity WHERE one = 1")
        .fetch_one(&meta.read)
        .await?;
    Ok(row.get(0))
}

/// Whether the database links any blob: then its content must already be in the prefix.
async fn links_blobs(meta: &Meta) -> Result<bool, StoreError> {
    let row = sqlx::query("SELECT EXISTS (SELECT 1 FROM repo_blobs)")
        .fetch_one(&meta.read)
        .await?;
    Ok(row.get::<i64, _>(0) != 0)
}

/// Binds the prefix to the SQLite database.
pub(crate) async fn bind(meta: &Meta, blobs: &ObjectBlobs) -> Result<(), StoreError> {
    let ours = store_id(meta).await?;
    bind_id(&ours, links_blobs(meta).await?, blobs).await
}

/// Binds the prefix to the database whose id is `ours`, or refuses: a prefix that names
/// another database, or an empty one (no id) while the database already links blobs.
pub(crate) async fn bind_id(
    ours: &str,
    links_blobs: bool,
    blobs: &ObjectBlobs,
) -> Result<(), StoreError> {
    match blobs.store_marker().await? {
        Some(theirs) if theirs == ours => Ok(()),
        Some(_) => Err(StoreError::Config(format!(
            "{} holds the blobs of another Wharf database (its wharf-store-id is not this \
             database's): one prefix serves one database; give this node its own prefix, or \
             the database that prefix belongs to",
            blobs.location()
        ))),
        None if links_blobs => Err(StoreError::Config(format!(
            "{} holds no wharf-store-id, but this database already links blobs: they are not \
             there (was --blob-store changed?); start with the location that holds them",
            blobs.location()
        ))),
        None => {
            blobs.write_store_marker(ours).await?;
            // Two new databases started on one empty prefix at once: the last write wins, and
            // the other one reads back an id that is not its own.
            match blobs.store_marker().await? {
                Some(theirs) if theirs == ours => {
                    tracing::info!(location = %blobs.location(), "bound the blob store to this database");
                    Ok(())
                }
                _ => Err(StoreError::Config(format!(
                    "{} was bound to another Wharf database at the same time: one prefix \
                     serves one database",
                    blobs.location()
                ))),
            }
        }
    }
}
