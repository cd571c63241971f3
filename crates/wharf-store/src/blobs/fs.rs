//! The blob store's filesystem backend: the data directory.
//!
//! Layout under the data directory:
//! - `blobs/<alg>/<2 hex>/<hex>`: published content, immutable, named by its digest;
//! - `uploads/<session id>`: the bytes of an upload session so far (its length is the offset).
//!
//! Durability rule: a blob is published by fsyncing the upload file, renaming it into place on
//! the same filesystem, and fsyncing the target directory, all before the upload's 201 is sent.
//! A manifest can only be accepted once every blob it names is published, so an accepted
//! manifest never points at a blob that a crash can lose or tear.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use tokio::fs;
use wharf_core::{Algorithm, Digest, Hasher};

use super::{AppendError, Appended, BlobInfo, ByteStream, Finished, SessionInfo, store_io};
use crate::StoreError;

/// Size of the read buffer used when hashing an upload file from disk.
const HASH_BUF: usize = 1 << 20;
/// Buffer size of the writer that appends to an upload file.
const WRITE_BUF: usize = 1 << 20;

#[derive(Debug, Clone)]
pub struct FsBlobs {
    root: PathBuf,
}

impl FsBlobs {
    /// Opens (creating if needed) the blob directories under `root`.
    pub async fn open(root: &Path) -> io::Result<Self> {
        fs::create_dir_all(root.join("blobs")).await?;
        fs::create_dir_all(root.join("uploads")).await?;
        Ok(FsBlobs {
            root: root.to_owned(),
        })
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.root
            .join("blobs")
            .join(digest.algorithm().as_str())
            .join(&hex[..2])
            .join(hex)
    }

    /// Session ids are checked by the registry before they get here (32 hex digits); a name
    /// with a separator would still never leave `uploads/`.
    fn upload_path(&self, session: &str) -> io::Result<PathBuf> {
        if session.is_empty() || session.contains(['/', '\\', '\0']) || session.starts_with('.') {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no such session"));
        }
        Ok(self.root.join("uploads").join(session))
    }

    pub(super) async fn size(&self, digest: &Digest) -> Result<Option<u64>, StoreError> {
        match fs::metadata(self.blob_path(digest)).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub(super) async fn read(
        &self,
        digest: &Digest,
        start: u64,
        len: u64,
    ) -> Result<ByteStream, StoreError> {
        super::file_range(&self.blob_path(digest), start, len)
            .await
            .map_err(store_io)
    }

    pub(super) async fn delete_blob(&self, digest: &Digest) -> Result<(), StoreError> {
        match fs::remove_file(self.blob_path(digest)).await {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    pub(super) async fn list_blobs(&self) -> Result<Vec<BlobInfo>, StoreError> {
        let root = self.root.join("blobs");
        tokio::task::spawn_blocking(move || -> io::Result<Vec<BlobInfo>> {
            let mut out = Vec::new();
            let dirs = |p: &Path| -> io::Result<Vec<std::fs::DirEntry>> {
                match std::fs::read_dir(p) {
                    Ok(d) => d.collect(),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
                    Err(e) => Err(e),
                }
            };
            for alg in dirs(&root)? {
                for shard in dirs(&alg.path())? {
                    for f in dirs(&shard.path())? {
                        let name = format!(
                            "{}:{}",
                            alg.file_name().to_string_lossy(),
                            f.file_name().to_string_lossy()
                        );
                        let (Ok(digest), Ok(meta)) = (Digest::parse(&name), f.metadata()) else {
                            continue;
                        };
                        if !meta.is_file() {
                            continue;
                        }
                        let age = meta
                            .modified()
                            .ok()
                            .and_then(|m| m.elapsed().ok())
                            .unwrap_or_default();
                        out.push(BlobInfo {
                            digest,
                            size: meta.len(),
                            age,
                        });
                    }
                }
            }
            Ok(out)
        })
        .await
        .map_err(io::Error::other)?
        .map_err(StoreError::from)
    }

    /// Creates the (empty) file of a new upload session.
    pub(super) async fn create_upload(&self, session: &str) -> Result<(), StoreError> {
        fs::File::create(self.upload_path(session)?).await?;
        Ok(())
    }

    /// Names of the files under `uploads/` (session ids) and how long since each was written.
    pub(super) async fn upload_sessions(&self) -> Result<Vec<SessionInfo>, StoreError> {
        let mut out = Vec::new();
        let mut dir = fs::read_dir(self.root.join("uploads")).await?;
        while let Some(e) = dir.next_entry().await? {
            let Some(name) = e.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            // A file removed meanwhile is simply not listed.
            let Ok(meta) = e.metadata().await else {
                continue;
            };
            let idle = meta
                .modified()
                .ok()
                .and_then(|m| m.elapsed().ok())
                .unwrap_or_default();
            out.push(SessionInfo { id: name, idle });
        }
        Ok(out)
    }

    /// Current length of an upload file: the session's offset.
    pub(super) async fn upload_len(&self, session: &str) -> Result<u64, StoreError> {
        Ok(fs::metadata(self.upload_path(session)?)
            .await
            .map_err(store_io)?
            .len())
    }

    /// Appends on a blocking thread fed through a channel: hashing megabytes on the async
    /// runtime would stall other requests. On failure the file is cut back to `offset`.
    pub(super) async fn append_upload(
        &self,
        session: &str,
        offset: u64,
        mut body: ByteStream,
        mut hasher: Option<Hasher>,
    ) -> Result<Appended, AppendError> {
        let path = self.upload_path(session).map_err(store_io)?;
        let file = fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .await
            .map_err(store_io)?
            .into_std()
            .await;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(16);
        let writer = tokio::task::spawn_blocking(move || -> io::Result<(u64, Option<Hasher>)> {
            let mut w = io::BufWriter::with_capacity(WRITE_BUF, file);
            let mut n = 0u64;
            while let Some(chunk) = rx.blocking_recv() {
                if let Some(h) = hasher.as_mut() {
                    h.update(&chunk);
                }
                w.write_all(&chunk)?;
                n += chunk.len() as u64;
            }
            w.flush()?;
            Ok((n, hasher))
        });
        let mut read_err = None;
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(c) => {
                    if tx.send(c).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    read_err = Some(e);
                    break;
                }
            }
        }
        drop(tx);
        let written = writer.await.map_err(io::Error::other);
        let err = match (read_err, written) {
            (None, Ok(Ok((written, hasher)))) => return Ok(Appended { written, hasher }),
            (Some(e), _) => AppendError::Body(e),
            (None, Ok(Err(e))) | (None, Err(e)) => AppendError::Store(e.into()),
        };
        self.truncate_upload(session, offset).await?;
        Err(err)
    }

    /// Truncates an upload back to `len` bytes.
    pub(super) async fn truncate_upload(&self, session: &str, len: u64) -> Result<(), StoreError> {
        let f = fs::OpenOptions::new()
            .write(true)
            .open(self.upload_path(session)?)
            .await
            .map_err(store_io)?;
        Ok(f.set_len(len).await?)
    }

    pub(super) async fn remove_upload(&self, session: &str) -> Result<(), StoreError> {
        match fs::remove_file(self.upload_path(session)?).await {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Hashes a whole upload file from disk: used when the in-memory hash state is gone (after a
    /// restart) or was computed with another algorithm than the client's digest.
    async fn hash_upload(&self, session: &str, algorithm: Algorithm) -> Result<Digest, StoreError> {
        let path = self.upload_path(session)?;
        tokio::task::spawn_blocking(move || {
            use std::io::Read;
            let mut f = std::fs::File::open(path)?;
            let mut h: Hasher = algorithm.hasher();
            let mut buf = vec![0u8; HASH_BUF];
            loop {
                let n = f.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
            Ok(h.finish())
        })
        .await
        .map_err(io::Error::other)?
        .map_err(store_io)
    }

    /// Verifies, then publishes: fsync, rename, fsync of the directory. If the content
    /// already exists the upload file is simply removed (content addressing makes the two
    /// identical).
    pub(super) async fn finish_upload(
        &self,
        session: &str,
        digest: &Digest,
        running: Option<Digest>,
    ) -> Result<Finished, StoreError> {
        let actual = match running {
            Some(d) if d.algorithm() == digest.algorithm() => d,
            _ => self.hash_upload(session, digest.algorithm()).await?,
        };
        if &actual != digest {
            return Ok(Finished::Mismatch);
        }
        let src = self.upload_path(session)?;
        let dst = self.blob_path(digest);
        tokio::task::spawn_blocking(move || publish(&src, &dst))
            .await
            .map_err(io::Error::other)?
            .map_err(store_io)
    }
}

fn publish(src: &Path, dst: &Path) -> io::Result<Finished> {
    let dir = dst
        .parent()
        .ok_or_else(|| io::Error::other("blob path has no parent"))?;
    if dst.exists() {
        // Content addressing makes the two identical; the upload file stays until the
        // content is linked (see `Finished::AlreadyStored`). The directory entry may belong
        // to a concurrent publisher that has not synced it yet: sync it before answering.
        std::fs::File::open(dir)?.sync_all()?;
        return Ok(Finished::AlreadyStored);
    }
    // New directories must be durable too, or a power cut could lose the entry of a whole
    // `ab/` directory along with the blobs in it: sync the parent of each one created.
    let mut created = Vec::new();
    let mut d = dir;
    while !d.exists() {
        created.push(d.to_owned());
        match d.parent() {
            Some(p) => d = p,
            None => break,
        }
    }
    std::fs::create_dir_all(dir)?;
    // Data and size are what a reader needs; sync_data skips timestamps.
    std::fs::File::open(src)?.sync_data()?;
    std::fs::rename(src, dst)?;
    std::fs::File::open(dir)?.sync_all()?;
    for c in created.iter().rev() {
        if let Some(parent) = c.parent() {
            std::fs::File::open(parent)?.sync_all()?;
        }
    }
    Ok(Finished::Published)
}
