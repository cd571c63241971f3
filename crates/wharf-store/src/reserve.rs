//! A little space held back on the data volume, so that Wharf can start on a full disk.
//!
//! Opening SQLite in WAL mode creates and grows its shared-memory file (`wharf.db-shm`), and
//! start-up writes a few rows (lease recovery, upload clean-up). On a volume with no free byte
//! at all, that fails, and a registry restarted on a full disk (a crash, a node reboot, an
//! operator's restart) would not even serve reads. So the data directory keeps `wharf.reserve`,
//! 1 MiB of zeros written while there is room; when the database cannot be opened on a nearly
//! full volume, the reserve is released and the open tried again. It is written back at a
//! later start, once the volume has room again.

use std::io::Write;
use std::path::Path;

use crate::space::SpaceGuard;

const FILE: &str = "wharf.reserve";
pub(crate) const BYTES: u64 = 1 << 20;

/// Releases the reserve if the volume is nearly full and the reserve is there. True if it was
/// released (the caller tries again).
pub(crate) fn release_if_full(data_dir: &Path, space: &SpaceGuard) -> bool {
    let nearly_full = space
        .free_and_total()
        .is_ok_and(|(free, _)| free < 4 * BYTES);
    if !nearly_full {
        return false;
    }
    match std::fs::remove_file(data_dir.join(FILE)) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => {
            tracing::warn!(error = %e, "could not release the space reserve");
            false
        }
    }
}

/// Writes the reserve if it is missing and the volume has ample room for it (taking the last
/// megabyte of a nearly full volume would only bring the next ENOSPC closer). Failures are
/// logged: the reserve is a safety margin, not a condition of running.
pub(crate) fn ensure(data_dir: &Path, space: &SpaceGuard) {
    let path = data_dir.join(FILE);
    if path.exists() {
        return;
    }
    if !space
        .free_and_total()
        .is_ok_and(|(free, _)| free > 16 * BYTES)
    {
        return;
    }
    let tmp = data_dir.join(format!("{FILE}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        // Real zeros, not a sparse length: a sparse file would hold no space back.
        let zeros = vec![0u8; 64 * 1024];
        for _ in 0..(BYTES / zeros.len() as u64) {
            f.write_all(&zeros)?;
        }
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        tracing::warn!(error = %e, "could not write the space reserve (wharf.reserve)");
    }
}
