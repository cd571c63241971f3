//! TLS for the listener: the certificate chain and private key read from PEM files, served
//! through a resolver whose certificate can be replaced while the server runs, and the rustls
//! configuration (ALPN `h2` and `http/1.1`, ring as the crypto provider).
//!
//! Reloading is the caller's to schedule ([`CertResolver::reload_if_changed`] on a timer,
//! [`CertResolver::reload`] on SIGHUP): a handshake only ever reads the current certificate,
//! so a reload affects new connections and never one already established.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// A certificate or key that could not be used. Every variant names the file, because the
/// operator fixes a file, not a parser.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading TLS certificate {}: {source}", path.display())]
    ReadCert {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("reading TLS key {}: {source}", path.display())]
    ReadKey {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("TLS certificate {}: {reason}", path.display())]
    BadCert { path: PathBuf, reason: String },
    #[error("TLS key {}: {reason}", path.display())]
    BadKey { path: PathBuf, reason: String },
    #[error("TLS key {} does not belong to the certificate {}", key.display(), cert.display())]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error("building the TLS configuration: {0}")]
    Config(rustls::Error),
}

/// Where the certificate chain (leaf first, then intermediates) and its private key live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The crypto provider of every TLS object here. Named explicitly rather than taken from the
/// process default, which is ambiguous (a panic) if a dependency ever enables a second one.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads and checks a certificate chain and its key: both files must hold PEM, the key must
/// be one rustls can sign with (PKCS#8, PKCS#1 or SEC1; not encrypted), and it must be the
/// key of the chain's first certificate.
pub fn load_certified_key(files: &CertFiles) -> Result<CertifiedKey, TlsError> {
    let cert_pem = std::fs::read(&files.cert).map_err(|source| TlsError::ReadCert {
        path: files.cert.clone(),
        source,
    })?;
    let key_pem = std::fs::read(&files.key).map_err(|source| TlsError::ReadKey {
        path: files.key.clone(),
        source,
    })?;
    let bad_cert = |reason: String| TlsError::BadCert {
        path: files.cert.clone(),
        reason,
    };
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad_cert(format!("not valid PEM: {e}")))?;
    if chain.is_empty() {
        return Err(bad_cert("no CERTIFICATE block found".into()));
    }
    let bad_key = |reason: String| TlsError::BadKey {
        path: files.key.clone(),
        reason,
    };
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => bad_key(
            "no private key found (PKCS#8, PKCS#1 or SEC1 PEM; encrypted keys are not supported)"
                .into(),
        ),
        e => bad_key(format!("not valid PEM: {e}")),
    })?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|e| match e {
        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
            TlsError::Mismatch {
                cert: files.cert.clone(),
                key: files.key.clone(),
            }
        }
        // Parsing the leaf (to compare its public key) failed: the certificate is at fault.
        rustls::Error::InvalidCertificate(e) => bad_cert(format!("unusable certificate: {e:?}")),
        e => bad_key(format!("unusable private key: {e}")),
    })
}

/// What the files looked like when last read: a reload happens when this changes.
/// Modification time alone can miss a same-size rewrite within the file system's timestamp
/// granularity; the inode catches the usual atomic replace (write elsewhere, rename).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    cert: Option<FileStamp>,
    key: Option<FileStamp>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    #[cfg(unix)]
    inode: (u64, u64),
}

fn file_stamp(path: &Path) -> Option<FileStamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        modified: m.modified().ok(),
        len: m.len(),
        #[cfg(unix)]
        inode: {
            use std::os::unix::fs::MetadataExt;
            (m.dev(), m.ino())
        },
    })
}

impl Stamp {
    fn read(files: &CertFiles) -> Stamp {
        Stamp {
            cert: file_stamp(&files.cert),
            key: file_stamp(&files.key),
        }
    }
}

/// Serves the certificate most recently loaded from [`CertFiles`] to every handshake.
pub struct CertResolver {
    files: CertFiles,
    current: RwLock<Arc<CertifiedKey>>,
    /// The files as they were at the last load attempt, successful or not: a file that fails
    /// to load is reported once, and tried again when it changes.
    seen: Mutex<Stamp>,
}

impl fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("CertResolver")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl CertResolver {
    /// Loads the files; an error here is a start-up error.
    pub fn load(files: CertFiles) -> Result<Arc<CertResolver>, TlsError> {
        // The stamp is read before the contents, so a change that lands in between is seen
        // as a change at the next check rather than lost.
        let stamp = Stamp::read(&files);
        let key = load_certified_key(&files)?;
        Ok(Arc::new(CertResolver {
            files,
            current: RwLock::new(Arc::new(key)),
            seen: Mutex::new(stamp),
        }))
    }

    pub fn files(&self) -> &CertFiles {
        &self.files
    }

    /// The certificate new handshakes get.
    pub fn current(&self) -> Arc<CertifiedKey> {
        // A poisoned lock still holds a whole Arc (the writer only assigns one).
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reloads if either file changed since the last attempt. `Ok(true)`: the new
    /// certificate is in use; `Ok(false)`: nothing changed; `Err`: the files changed but do
    /// not load, and the previous certificate stays in use. Blocking file I/O.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let stamp = Stamp::read(&self.files);
        {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if *seen == stamp {
                return Ok(false);
            }
            *seen = stamp;
        }
        self.swap()?;
        Ok(true)
    }

    /// Reloads whether or not the files look changed (SIGHUP). On an error the previous
    /// certificate stays in use. Blocking file I/O.
    pub fn reload(&self) -> Result<(), TlsError> {
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = Stamp::read(&self.files);
        self.swap()
    }

    fn swap(&self) -> Result<(), TlsError> {
        let key = Arc::new(load_certified_key(&self.files)?);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = key;
        Ok(())
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// ALPN name of HTTP/2, offered first.
pub const ALPN_H2: &[u8] = b"h2";
/// ALPN name of HTTP/1.1; also what a client that offers no ALPN gets.
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// A rustls server configuration serving `resolver`'s certificate, offering HTTP/2 and
/// HTTP/1.1 by ALPN, TLS 1.2 and 1.3, no client certificates.
pub fn server_config(resolver: Arc<CertResolver>) -> Result<Arc<ServerConfig>, TlsError> {
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    cfg.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()];
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Pair {
        cert: String,
        key: String,
    }

    fn pair(name: &str) -> Pair {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        Pair {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    fn write(dir: &Path, p: &Pair) -> CertFiles {
        let files = CertFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        std::fs::write(&files.cert, &p.cert).unwrap();
        std::fs::write(&files.key, &p.key).unwrap();
        files
    }

    fn leaf(r: &CertResolver) -> Vec<u8> {
        r.current().end_entity_cert().unwrap().to_vec()
    }

    fn pem_der(pem: &str) -> Vec<u8> {
        CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .to_vec()
    }

    #[test]
    fn errors_name_the_file_at_fault() {
        let dir = tempfile::tempdir().unwrap();
        let a = pair("a.test");
        let b = pair("b.test");
        let files = write(dir.path(), &a);
        let msg = |f: &CertFiles| load_certified_key(f).unwrap_err().to_string();

        let missing = CertFiles {
            cert: dir.path().join("nope.pem"),
            key: files.key.clone(),
        };
        let m = msg(&missing);
        assert!(m.contains("nope.pem") && m.contains("certificate"), "{m}");

        std::fs::write(&files.cert, "hello").unwrap();
        let m = msg(&files);
        assert!(
            m.contains("cert.pem") && m.contains("no CERTIFICATE"),
            "{m}"
        );

        std::fs::write(&files.cert, &a.cert).unwrap();
        std::fs::write(&files.key, &a.cert).unwrap();
        let m = msg(&files);
        assert!(m.contains("key.pem") && m.contains("no private key"), "{m}");

        std::fs::write(&files.key, &b.key).unwrap();
        let m = msg(&files);
        assert!(
            m.contains("key.pem") && m.contains("cert.pem") && m.contains("does not belong"),
            "{m}"
        );
    }

    #[test]
    fn a_reload_swaps_the_certificate_and_a_broken_one_keeps_the_old() {
        let dir = tempfile::tempdir().unwrap();
        let a = pair("a.test");
        let b = pair("b.test");
        let files = write(dir.path(), &a);
        let r = CertResolver::load(files.clone()).unwrap();
        assert_eq!(leaf(&r), pem_der(&a.cert));
        assert!(!r.reload_if_changed().unwrap(), "nothing changed yet");

        // Half-way through a replacement: B's certificate with A's key.
        let tmp = dir.path().join("cert.tmp");
        std::fs::write(&tmp, &b.cert).unwrap();
        std::fs::rename(&tmp, &files.cert).unwrap();
        assert!(matches!(
            r.reload_if_changed(),
            Err(TlsError::Mismatch { .. })
        ));
        assert_eq!(leaf(&r), pem_der(&a.cert), "the old certificate stays");
        // Reported once, not at every check.
        assert!(!r.reload_if_changed().unwrap());

        let tmp = dir.path().join("key.tmp");
        std::fs::write(&tmp, &b.key).unwrap();
        std::fs::rename(&tmp, &files.key).unwrap();
        assert!(r.reload_if_changed().unwrap());
        assert_eq!(leaf(&r), pem_der(&b.cert));

        // SIGHUP's reload reads even unchanged-looking files.
        std::fs::write(&files.key, "garbage").unwrap();
        assert!(r.reload().is_err());
        assert_eq!(leaf(&r), pem_der(&b.cert));
        write(dir.path(), &a);
        r.reload().unwrap();
        assert_eq!(leaf(&r), pem_der(&a.cert));
    }
}
