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

use std::path::Path;

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

/// The file in a data directory whose blobs a PostgreSQL database uses: the directory's own
/// id, which the database records (`store_identity.data_dir_id`), and the id of that database.
///
/// The object-store marker above guards a prefix; a data directory needs the same guard both
/// ways. Nodes over one database cannot share a data directory (each locks its own), so a
/// second node with a directory of its own would acknowledge blobs that the others cannot
/// read; and a directory pointed at another database would see all its content deleted by
/// that database's garbage collection, which links none of it.
pub(crate) const DATA_DIR_BINDING: &str = "wharf-database-binding";

/// A data directory's binding, as its file records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DirBinding {
    pub dir_id: String,
    pub database: String,
}

/// Reads the binding file of `dir`; None if there is none (a new directory, or one from
/// before bindings).
pub(crate) fn read_dir_binding(dir: &Path) -> Result<Option<DirBinding>, StoreError> {
    let text = match std::fs::read_to_string(dir.join(DATA_DIR_BINDING)) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut lines = text.lines().map(str::trim);
    match (lines.next(), lines.next()) {
        (Some(d), Some(db)) if !d.is_empty() && !db.is_empty() => Ok(Some(DirBinding {
            dir_id: d.to_owned(),
            database: db.to_owned(),
        })),
        _ => Err(StoreError::Corrupt(format!(
            "{} is not a binding Wharf wrote (two lines: the directory's id, the database's)",
            dir.join(DATA_DIR_BINDING).display()
        ))),
    }
}

/// Writes the binding file durably (a temporary file, fsynced, renamed, the directory
/// fsynced) before the database records it, so that a crash in between leaves a file that
/// the next start completes, never a database bound to a directory no file names.
pub(crate) fn write_dir_binding(dir: &Path, b: &DirBinding) -> Result<(), StoreError> {
    use std::io::Write;
    let tmp = dir.join(format!("{DATA_DIR_BINDING}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(format!("{}\n{}\n", b.dir_id, b.database).as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(DATA_DIR_BINDING))?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

/// Refuses SQLite on a data directory whose blobs a PostgreSQL database uses (it has a
/// binding file): the new SQLite database would link none of them, and its garbage collection
/// would delete them all.
pub(crate) fn refuse_sqlite_on_bound_dir(dir: &Path) -> Result<(), StoreError> {
    if dir.join(DATA_DIR_BINDING).try_exists()? {
        return Err(StoreError::Config(format!(
            "the data directory {} holds the blobs of a PostgreSQL database (its \
             {DATA_DIR_BINDING} says so): start with that database (storage.database), or \
             give SQLite a data directory of its own",
            dir.display()
        )));
    }
    Ok(())
}

/// What to do with a data directory at start-up, from the database's id, the directory it
/// is bound to (if any) and the directory's binding file (if any). `Ok(None)`: bound already;
/// `Ok(Some(b))`: write `b` (if the file does not say so yet) and record its id in the
/// database; `Err`: refuse to start.
///
/// `holds_sqlite`: the directory holds a SQLite registry's database (`wharf.db`). Without a
/// binding file its blobs are that registry's, which this database links none of.
pub(crate) fn decide_dir(
    database: &str,
    bound_dir: Option<&str>,
    file: Option<DirBinding>,
    holds_sqlite: bool,
    dir: &Path,
) -> Result<Option<DirBinding>, StoreError> {
    if file.is_none() && holds_sqlite {
        return Err(StoreError::Config(format!(
            "the data directory {} holds a SQLite registry (wharf.db) whose blobs this database \
             does not link: its garbage collection would delete them; give PostgreSQL a data \
             directory of its own",
            dir.display()
        )));
    }
    if let Some(f) = &file
        && f.database != database
    {
        return Err(StoreError::Config(format!(
            "the data directory {} holds the blobs of another Wharf database (its {DATA_DIR_BINDING} \
             names another): one data directory serves one database; start this node with the \
             database it belongs to, or with a data directory of its own",
            dir.display()
        )));
    }
    match (bound_dir, file) {
        (Some(b), Some(f)) if f.dir_id == b => Ok(None),
        (Some(_), _) => Err(StoreError::Config(format!(
            "this database's blobs are in another data directory than {} (the one it was first \
             started with): with blobs in a data directory one node serves a database; several \
             nodes need object storage (storage.blob_store)",
            dir.display()
        ))),
        // A crash between the file and the database's record, or two starts racing: claim
        // the id the file names.
        (None, Some(f)) => Ok(Some(f)),
        // A new directory, or one from before bindings: its blobs become this database's.
        (None, None) => Ok(Some(DirBinding {
            dir_id: hex::encode(crate::seal::random_bytes::<16>()?),
            database: database.to_owned(),
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir_id: &str, database: &str) -> Option<DirBinding> {
        Some(DirBinding {
            dir_id: dir_id.into(),
            database: database.into(),
        })
    }

    #[test]
    fn a_data_directory_serves_one_database_and_a_database_one_directory() {
        let dir = Path::new("/srv/wharf");
        // Bound already, both ways.
        assert_eq!(
            decide_dir("db1", Some("d1"), file("d1", "db1"), false, dir).unwrap(),
            None
        );
        // A new directory for a new database: a fresh id is claimed.
        let fresh = decide_dir("db1", None, None, false, dir).unwrap().unwrap();
        assert_eq!(fresh.database, "db1");
        assert_eq!(fresh.dir_id.len(), 32);
        assert_ne!(
            decide_dir("db1", None, None, false, dir)
                .unwrap()
                .unwrap()
                .dir_id,
            fresh.dir_id
        );
        // The file was written but the database did not record it (a crash): resumed.
        assert_eq!(
            decide_dir("db1", None, file("d1", "db1"), false, dir).unwrap(),
            file("d1", "db1")
        );
        // A second node with a directory of its own, new or bound before.
        for f in [None, file("d2", "db1")] {
            let e = decide_dir("db1", Some("d1"), f, false, dir)
                .unwrap_err()
                .to_string();
            assert!(e.contains("another data directory than /srv/wharf"), "{e}");
            assert!(e.contains("storage.blob_store"), "{e}");
        }
        // A directory of another database, whether this one is bound or not.
        for bound in [None, Some("d1")] {
            let e = decide_dir("db2", bound, file("d1", "db1"), false, dir)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("holds the blobs of another Wharf database"),
                "{e}"
            );
        }
        // A SQLite registry's directory, never bound: its blobs are that registry's.
        let e = decide_dir("db1", None, None, true, dir)
            .unwrap_err()
            .to_string();
        assert!(e.contains("holds a SQLite registry (wharf.db)"), "{e}");
        // Bound already: the binding decides.
        assert_eq!(
            decide_dir("db1", Some("d1"), file("d1", "db1"), true, dir).unwrap(),
            None
        );
    }

    #[test]
    fn the_binding_file_reads_back_and_a_torn_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_dir_binding(dir.path()).unwrap(), None);
        let b = DirBinding {
            dir_id: "0123abcd".into(),
            database: "feedbeef".into(),
        };
        write_dir_binding(dir.path(), &b).unwrap();
        assert_eq!(read_dir_binding(dir.path()).unwrap(), Some(b));
        std::fs::write(dir.path().join(DATA_DIR_BINDING), "0123abcd\n").unwrap();
        assert!(matches!(
            read_dir_binding(dir.path()),
            Err(StoreError::Corrupt(_))
        ));
    }
}
