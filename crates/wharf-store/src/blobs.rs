//! The content-addressed blob store on the local filesystem.
//!
//! Layout under the data directory:
//! - `blobs/<alg>/<2 hex>/<hex>`: published content, immutable, named by its digest;
//! - `uploads/<session id>`: the bytes of an upload session so far (its length is the offset).
//!
//! Durability rule: a blob is published by fsyncing the upload file, renaming it into place on
//! the same filesystem, and fsyncing the target directory, all before the upload's 201 is sent.
//! A manifest can only be accepted once every blob it names is published, so an accepted
//! manifest never points at a blob that a crash can lose or tear.

use std::io;
use std::path::{Path, PathBuf};

use tokio::fs;
use wharf_core::{Algorithm, Digest, Hasher};

/// Size of the read buffer used when hashing an upload file from disk.
const HASH_BUF: usize = 1 << 20;

#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
}

impl BlobStore {
    /// Opens (creating if needed) the blob directories under `root`.
    pub async fn open(root: &Path) -> io::Result<Self> {
        fs::create_dir_all(root.join("blobs")).await?;
        fs::create_dir_all(root.join("uploads")).await?;
        Ok(BlobStore {
            root: root.to_owned(),
        })
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.root
            .join("blobs")
            .join(digest.algorithm().as_str())
            .join(&hex[..2])
            .join(hex)
    }

    pub fn upload_path(&self, session: &str) -> PathBuf {
        self.root.join("uploads").join(session)
    }

    /// Creates the (empty) file of a new upload session.
    pub async fn create_upload(&self, session: &str) -> io::Result<()> {
        fs::File::create(self.upload_path(session)).await?;
        Ok(())
    }

    /// Names of the files under `uploads/` (session ids).
    pub async fn upload_files(&self) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        let mut dir = fs::read_dir(self.root.join("uploads")).await?;
        while let Some(e) = dir.next_entry().await? {
            if let Some(name) = e.file_name().to_str() {
                out.push(name.to_owned());
            }
        }
        Ok(out)
    }

    /// Opens an upload file for appending at its end.
    pub async fn append_upload(&self, session: &str) -> io::Result<fs::File> {
        fs::OpenOptions::new()
            .append(true)
            .open(self.upload_path(session))
            .await
    }

    /// Current length of an upload file: the session's offset.
    pub async fn upload_len(&self, session: &str) -> io::Result<u64> {
        Ok(fs::metadata(self.upload_path(session)).await?.len())
    }

    /// Truncates an upload back to `len` bytes (used to drop a chunk that failed half-way, so
    /// the offset the client sees stays the one it was told).
    pub async fn truncate_upload(&self, session: &str, len: u64) -> io::Result<()> {
        let f = fs::OpenOptions::new()
            .write(true)
            .open(self.upload_path(session))
            .await?;
        f.set_len(len).await
    }

    pub async fn remove_upload(&self, session: &str) -> io::Result<()> {
        match fs::remove_file(self.upload_path(session)).await {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Hashes a whole upload file from disk: used when the in-memory hash state is gone (after a
    /// restart) or was computed with another algorithm than the client's digest.
    pub async fn hash_upload(&self, session: &str, algorithm: Algorithm) -> io::Result<Digest> {
        let path = self.upload_path(session);
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
    }

    /// Publishes a verified upload under its digest: fsync, rename, fsync of the directory.
    /// If the content already exists the upload file is simply removed (content addressing
    /// makes the two identical).
    pub async fn publish_upload(&self, session: &str, digest: &Digest) -> io::Result<()> {
        let src = self.upload_path(session);
        let dst = self.blob_path(digest);
        tokio::task::spawn_blocking(move || publish(&src, &dst))
            .await
            .map_err(io::Error::other)?
    }

    pub async fn open_blob(&self, digest: &Digest) -> io::Result<fs::File> {
        fs::File::open(self.blob_path(digest)).await
    }

    pub async fn blob_exists(&self, digest: &Digest) -> bool {
        fs::metadata(self.blob_path(digest)).await.is_ok()
    }

    /// Deletes a blob's content. Ok(false) if it was not there. Only garbage collection calls
    /// it, inside the write transaction that found no link to the blob (see `gc.rs` for why
    /// that makes it safe against a concurrent upload of the same content). Not synced: a
    /// delete undone by a power failure leaves garbage that the next run collects.
    pub async fn delete_blob(&self, digest: &Digest) -> io::Result<bool> {
        match fs::remove_file(self.blob_path(digest)).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Every stored blob with its size and last-modified time, for garbage collection's sweep.
    /// Files whose names are not digests are left out (and so never deleted).
    pub async fn list_blobs(&self) -> io::Result<Vec<StoredBlob>> {
        let root = self.root.join("blobs");
        tokio::task::spawn_blocking(move || list_blobs(&root))
            .await
            .map_err(io::Error::other)?
    }
}

/// A blob found by [`BlobStore::list_blobs`].
#[derive(Debug, Clone)]
pub struct StoredBlob {
    pub digest: Digest,
    pub size: u64,
    /// Last modification, Unix milliseconds: when its bytes were written.
    pub modified_ms: i64,
}

fn list_blobs(root: &Path) -> io::Result<Vec<StoredBlob>> {
    let mut out = Vec::new();
    for alg in read_dir_or_empty(root)? {
        let alg = alg?;
        let Some(alg_name) = alg.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if !alg.file_type()?.is_dir() {
            continue;
        }
        for prefix in read_dir_or_empty(&alg.path())? {
            let prefix = prefix?;
            if !prefix.file_type()?.is_dir() {
                continue;
            }
            for file in read_dir_or_empty(&prefix.path())? {
                let file = file?;
                let Some(name) = file.file_name().to_str().map(str::to_owned) else {
                    continue;
                };
                let Ok(digest) = Digest::parse(&format!("{alg_name}:{name}")) else {
                    continue;
                };
                // Gone meanwhile (collected by a concurrent run): nothing to list.
                let meta = match file.metadata() {
                    Ok(m) if m.is_file() => m,
                    Ok(_) => continue,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                };
                let modified_ms = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
                out.push(StoredBlob {
                    digest,
                    size: meta.len(),
                    modified_ms,
                });
            }
        }
    }
    Ok(out)
}

fn read_dir_or_empty(dir: &Path) -> io::Result<Vec<io::Result<std::fs::DirEntry>>> {
    match std::fs::read_dir(dir) {
        Ok(d) => Ok(d.collect()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

fn publish(src: &Path, dst: &Path) -> io::Result<()> {
    let dir = dst
        .parent()
        .ok_or_else(|| io::Error::other("blob path has no parent"))?;
    if dst.exists() {
        // Content addressing makes the two identical. The directory entry may belong to a
        // concurrent publisher that has not synced it yet: sync it before answering.
        std::fs::remove_file(src)?;
        return std::fs::File::open(dir)?.sync_all();
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
    Ok(())
}
