//! The blob store: content-addressed blobs and the upload sessions that produce them.
//!
//! This is the narrow boundary every blob byte crosses. Reads are range streams
//! ([`BlobStore::read`]), writes are upload sessions: create, append a stream at the current
//! offset, length, truncate (roll back), finish (verify the digest, then publish atomically
//! under the content address), abort, list sessions with their idle time. No file handle and no
//! path leaves it, so the same registry code runs on the local filesystem ([`fs`]) and on
//! object storage ([`object`], S3 and Azure Blob).
//!
//! An enum over the backends rather than a trait object: the methods are async and return
//! streams, which a `dyn` trait can only offer by boxing every future; with two backends
//! known at compile time, an enum dispatches statically, stays `Clone + Debug` like the rest of
//! `Store`, and needs no `async_trait`.

pub mod cache;
pub mod fs;
pub mod object;

use std::io;
use std::pin::Pin;
use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use wharf_core::{Digest, Hasher};

use crate::StoreError;

/// A stream of blob bytes: a read's range, or the body of an append.
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// Where blobs live: `--blob-store` / `[storage] blob_store`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum BlobLocation {
    /// `blobs/` and `uploads/` under the data directory (the default).
    #[default]
    DataDir,
    /// `s3://bucket/prefix`; endpoint, region and credentials from the `AWS_*` variables.
    S3 { bucket: String, prefix: String },
    /// `azure://container/prefix`; account and key from `AZURE_STORAGE_CONNECTION_STRING`.
    Azure { container: String, prefix: String },
}

impl FromStr for BlobLocation {
    type Err = String;

    /// `""`/`"data-dir"`, `s3://bucket[/prefix]`, `azure://container[/prefix]`.
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if t.is_empty() || t == "data-dir" {
            return Ok(BlobLocation::DataDir);
        }
        let (scheme, rest) = t.split_once("://").ok_or_else(|| {
            format!("{t:?} is not a blob store: use data-dir, s3://bucket/prefix or azure://container/prefix")
        })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let prefix = prefix.trim_matches('/').to_owned();
        let bucket = bucket.to_owned();
        let name_ok = |b: &str| {
            (3..=63).contains(&b.len())
                && b.bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.')
        };
        if !name_ok(&bucket) {
            return Err(format!(
                "{bucket:?} is not a bucket or container name (3 to 63 lower-case letters, digits, '-' or '.')"
            ));
        }
        if prefix.split('/').any(|p| p == "." || p == "..")
            || prefix.contains("//")
            || prefix.chars().any(|c| c.is_control())
        {
            return Err(format!("{prefix:?} is not a usable key prefix"));
        }
        match scheme {
            "s3" => Ok(BlobLocation::S3 { bucket, prefix }),
            "azure" | "az" => Ok(BlobLocation::Azure {
                container: bucket,
                prefix,
            }),
            _ => Err(format!(
                "{scheme:?} is not a blob store scheme: use s3:// or azure://"
            )),
        }
    }
}

impl std::fmt::Display for BlobLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (scheme, b, p) = match self {
            BlobLocation::DataDir => return f.write_str("data-dir"),
            BlobLocation::S3 { bucket, prefix } => ("s3", bucket, prefix),
            BlobLocation::Azure { container, prefix } => ("azure", container, prefix),
        };
        if p.is_empty() {
            write!(f, "{scheme}://{b}")
        } else {
            write!(f, "{scheme}://{b}/{p}")
        }
    }
}

/// What an append stored.
pub struct Appended {
    /// Bytes appended by this call.
    pub written: u64,
    /// The running hash, fed with the appended bytes (if one was passed in).
    pub hasher: Option<Hasher>,
}

impl std::fmt::Debug for Appended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Appended")
            .field("written", &self.written)
            .field("hashing", &self.hasher.is_some())
            .finish()
    }
}

/// Why an append failed. Either way the session's length is back where it was.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// Reading the body failed (the client went away): the client's fault, nothing stored.
    #[error("body read failed: {0}")]
    Body(io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The outcome of a finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    /// The session's bytes are published under their digest; the session is gone.
    Published,
    /// The content was already published under the digest (the session's bytes hash to it
    /// too). The session and its bytes are kept: content already there may be garbage that a
    /// collection removes before the caller links it, and a second finish then publishes
    /// these bytes. The caller removes the session once the content is linked
    /// ([`BlobStore::remove_upload`]).
    AlreadyStored,
    /// The session's bytes do not hash to the digest: nothing was published, the session
    /// stays as it was.
    Mismatch,
}

/// An upload session as the backend sees it.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub id: String,
    /// Time since the session was created or last written to.
    pub idle: Duration,
}

/// A published blob as the backend lists it (for garbage collection).
#[derive(Debug, Clone)]
pub struct BlobInfo {
    pub digest: Digest,
    pub size: u64,
    /// Time since it was published (written).
    pub age: Duration,
}

#[derive(Debug, Clone)]
pub enum BlobStore {
    Fs(fs::FsBlobs),
    Object(object::ObjectBlobs),
}

/// Dispatches a call to the backend.
macro_rules! each {
    ($self:ident, $b:ident => $e:expr) => {
        match $self {
            BlobStore::Fs($b) => $e,
            BlobStore::Object($b) => $e,
        }
    };
}

impl BlobStore {
    /// Opens the blob store at `location`; `data_dir` is the filesystem backend's root.
    pub async fn open(
        data_dir: &std::path::Path,
        location: &BlobLocation,
    ) -> Result<Self, StoreError> {
        Ok(match location {
            BlobLocation::DataDir => BlobStore::Fs(fs::FsBlobs::open(data_dir).await?),
            _ => {
                let b = object::ObjectBlobs::open(location)?;
                b.check().await?;
                BlobStore::Object(b)
            }
        })
    }

    /// Whether blobs live on the data volume (the free-space floor then guards them too).
    pub fn is_local(&self) -> bool {
        matches!(self, BlobStore::Fs(_))
    }

    /// The object-storage backend, for what only it offers: a blob whose bytes all arrive in
    /// the request that finishes its upload is cheaper written once to its key from memory
    /// ([`object::ObjectBlobs::put_whole`]) than staged as an object and copied into place
    /// (one write of its bytes on the object store instead of two). On the filesystem a
    /// session's file is renamed into place, which copies nothing.
    pub fn object_store(&self) -> Option<&object::ObjectBlobs> {
        match self {
            BlobStore::Fs(_) => None,
            BlobStore::Object(b) => Some(b),
        }
    }

    // ---- published blobs ---------------------------------------------------------------

    /// The size of a published blob, None if there is none.
    pub async fn size(&self, digest: &Digest) -> Result<Option<u64>, StoreError> {
        each!(self, b => b.size(digest).await)
    }

    /// Whether a blob is published. A backend that cannot answer is an error, never "no":
    /// callers act on "no" (an upload is told its content was collected).
    pub async fn blob_exists(&self, digest: &Digest) -> Result<bool, StoreError> {
        Ok(self.size(digest).await?.is_some())
    }

    /// Streams `len` bytes of a blob from `start`. `StoreError::NotFound` if there is no such
    /// blob. The bytes arrive as they are read: nothing buffers the whole range.
    pub async fn read(
        &self,
        digest: &Digest,
        start: u64,
        len: u64,
    ) -> Result<ByteStream, StoreError> {
        if len == 0 {
            // Still tells a missing blob apart from an empty range.
            return match self.size(digest).await? {
                Some(_) => Ok(Box::pin(futures_util::stream::empty())),
                None => Err(StoreError::NotFound),
            };
        }
        each!(self, b => b.read(digest, start, len).await)
    }

    /// Streams a whole blob whose size is `size` (known from its link). On object storage this
    /// is a plain GET: a ranged one costs some services (and emulators) more, for the same
    /// bytes.
    pub async fn read_whole(&self, digest: &Digest, size: u64) -> Result<ByteStream, StoreError> {
        match self {
            BlobStore::Object(o) if size > 0 => o.read_whole(digest, size).await,
            _ => self.read(digest, 0, size).await,
        }
    }

    /// A URL from which a client can read a whole published blob without the registry, valid
    /// for `ttl`: for a blob GET answered with a redirect, as ACR and Distribution answer on
    /// object storage. None on the data directory, which has no such URL. The URL grants that
    /// read to whoever holds it until it expires: hand it only to a client already allowed to
    /// read the blob, and never log it.
    pub async fn download_url(
        &self,
        digest: &Digest,
        ttl: std::time::Duration,
    ) -> Result<Option<String>, StoreError> {
        match self {
            BlobStore::Fs(_) => Ok(None),
            BlobStore::Object(o) => o.download_url(digest, ttl).await.map(Some),
        }
    }

    /// A whole small blob (an image config, a chart's metadata): None if it is missing or
    /// larger than `max` bytes.
    pub async fn read_small(
        &self,
        digest: &Digest,
        max: u64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        use futures_util::StreamExt;
        let Some(size) = self.size(digest).await? else {
            return Ok(None);
        };
        if size > max {
            return Ok(None);
        }
        let mut s = match self.read(digest, 0, size).await {
            Err(StoreError::NotFound) => return Ok(None),
            r => r?,
        };
        let mut out = Vec::with_capacity(size as usize);
        while let Some(c) = s.next().await {
            out.extend_from_slice(&c.map_err(store_io)?);
            if out.len() as u64 > max {
                return Ok(None);
            }
        }
        Ok(Some(out))
    }

    /// Deletes a published blob's content (garbage collection). Deleting a blob that is not
    /// there succeeds.
    pub async fn delete_blob(&self, digest: &Digest) -> Result<(), StoreError> {
        each!(self, b => b.delete_blob(digest).await)
    }

    /// Every published blob, with its size and age (garbage collection's view of the
    /// content). Entries that are not content (a stray file or key) are left out.
    pub async fn list_blobs(&self) -> Result<Vec<BlobInfo>, StoreError> {
        each!(self, b => b.list_blobs().await)
    }

    // ---- upload sessions ---------------------------------------------------------------

    /// Creates the (empty) session `id`.
    pub async fn create_upload(&self, id: &str) -> Result<(), StoreError> {
        each!(self, b => b.create_upload(id).await)
    }

    /// The session's length so far (its offset). `StoreError::NotFound` if there is none.
    pub async fn upload_len(&self, id: &str) -> Result<u64, StoreError> {
        each!(self, b => b.upload_len(id).await)
    }

    /// Appends `body` at `offset`, which must be the session's current length (the caller
    /// holds the session's lock), feeding `hasher` as the bytes go by. Durable once it
    /// returns Ok; on any failure the session is cut back to `offset`.
    pub async fn append_upload(
        &self,
        id: &str,
        offset: u64,
        body: ByteStream,
        hasher: Option<Hasher>,
    ) -> Result<Appended, AppendError> {
        each!(self, b => b.append_upload(id, offset, body, hasher).await)
    }

    /// Cuts a session back to `len` bytes (drops a chunk whose length did not match its
    /// range, so the offset the client was told stays true).
    pub async fn truncate_upload(&self, id: &str, len: u64) -> Result<(), StoreError> {
        each!(self, b => b.truncate_upload(id, len).await)
    }

    /// Verifies that the session's bytes hash to `digest`, then publishes them under it,
    /// atomically: no reader ever sees unverified or partial content at the digest. `running`
    /// is the hash of the session's bytes computed while they were appended, if the caller
    /// has it (the backend then need not read them to check). Publishing content that is
    /// already there succeeds. After `Published` the session is gone.
    pub async fn finish_upload(
        &self,
        id: &str,
        digest: &Digest,
        running: Option<Digest>,
    ) -> Result<Finished, StoreError> {
        each!(self, b => b.finish_upload(id, digest, running).await)
    }

    /// Removes a session and its bytes. Removing one that is not there succeeds.
    pub async fn remove_upload(&self, id: &str) -> Result<(), StoreError> {
        each!(self, b => b.remove_upload(id).await)
    }

    /// Every session the backend holds, with how long it has been idle.
    pub async fn upload_sessions(&self) -> Result<Vec<SessionInfo>, StoreError> {
        each!(self, b => b.upload_sessions().await)
    }
}

/// Read buffer for blob range streams from a file: large enough that a download is not a
/// storm of small reads.
const READ_BUF: usize = 1 << 20;

/// Streams `len` bytes from `start` of the file at `path` (a published blob, or a node's
/// copy of one): the filesystem backend's reads and the blob cache's hits.
pub(crate) async fn file_range(
    path: &std::path::Path,
    start: u64,
    len: u64,
) -> io::Result<ByteStream> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let mut file = tokio::fs::File::open(path).await?;
    if start > 0 {
        file.seek(io::SeekFrom::Start(start)).await?;
    }
    Ok(Box::pin(tokio_util::io::ReaderStream::with_capacity(
        file.take(len),
        READ_BUF,
    )))
}

/// An I/O error of the blob layer as a store error: a missing file is `NotFound`.
pub(crate) fn store_io(e: io::Error) -> StoreError {
    if e.kind() == io::ErrorKind::NotFound {
        StoreError::NotFound
    } else {
        e.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse() {
        assert_eq!("".parse(), Ok(BlobLocation::DataDir));
        assert_eq!("data-dir".parse(), Ok(BlobLocation::DataDir));
        assert_eq!(
            "s3://my-bucket/reg/one/".parse(),
            Ok(BlobLocation::S3 {
                bucket: "my-bucket".into(),
                prefix: "reg/one".into()
            })
        );
        assert_eq!(
            "azure://blobs".parse(),
            Ok(BlobLocation::Azure {
                container: "blobs".into(),
                prefix: "".into()
            })
        );
        for bad in [
            "s3://",
            "s3://UPPER",
            "gs://bucket",
            "/var/lib/wharf",
            "s3://ok-bucket/../x",
            "s3://ok-bucket/a//b",
            "s3://a",
        ] {
            assert!(bad.parse::<BlobLocation>().is_err(), "{bad}");
        }
        assert_eq!(
            "s3://b-1/p".parse::<BlobLocation>().unwrap().to_string(),
            "s3://b-1/p"
        );
    }
}
