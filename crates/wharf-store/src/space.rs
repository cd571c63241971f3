//! The free-space floor: writes are refused cleanly (`StoreError::OutOfSpace`) while the data
//! volume has less free space than the floor, so the disk is never driven to exhaustion by
//! pushes, and SQLite keeps room for its WAL, checkpoints and delivery bookkeeping. Reads,
//! deletes and delivery records are never refused by the floor.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::StoreError;

/// How much free space writes must leave on the data volume.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum FreeSpaceFloor {
    /// An absolute number of bytes (0: no floor; real ENOSPC is still answered cleanly).
    Bytes(u64),
    /// A percentage of the volume's size.
    Percent(f64),
    /// `auto`: 1 % of the volume, at most 256 MiB. Scales down to a small test volume, and on a
    /// large (or thinly provisioned) disk does not hold back gigabytes a registry could use.
    #[default]
    Auto,
}

const AUTO_CAP: u64 = 256 << 20;

impl FreeSpaceFloor {
    /// The floor in bytes on a volume of `total` bytes.
    pub fn bytes(self, total: u64) -> u64 {
        match self {
            FreeSpaceFloor::Bytes(b) => b,
            FreeSpaceFloor::Percent(p) => (total as f64 * p / 100.0) as u64,
            FreeSpaceFloor::Auto => (total / 100).min(AUTO_CAP),
        }
    }
}

impl FromStr for FreeSpaceFloor {
    type Err = String;

    /// `"auto"`, `"0"`, `"1048576"`, `"512MiB"`, `"2GiB"`, `"10%"` (binary units; `MB`/`GB` are taken as
    /// the same, since the floor is a margin, not an accounting figure).
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let bad = || format!("{s:?} is not a size: use auto, bytes, KiB, MiB, GiB or a percentage");
        if t.eq_ignore_ascii_case("auto") {
            return Ok(FreeSpaceFloor::Auto);
        }
        if let Some(p) = t.strip_suffix('%') {
            let v: f64 = p.trim().parse().map_err(|_| bad())?;
            if !(0.0..=100.0).contains(&v) {
                return Err(format!("{s:?}: a percentage must be between 0 and 100"));
            }
            return Ok(FreeSpaceFloor::Percent(v));
        }
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num.parse().map_err(|_| bad())?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" | "kib" => 1 << 10,
            "m" | "mb" | "mib" => 1 << 20,
            "g" | "gb" | "gib" => 1 << 30,
            "t" | "tb" | "tib" => 1 << 40,
            _ => return Err(bad()),
        };
        n.checked_mul(mult)
            .map(FreeSpaceFloor::Bytes)
            .ok_or_else(bad)
    }
}

/// Watches the free space of the volume that holds the data directory.
#[derive(Debug, Clone)]
pub struct SpaceGuard {
    root: PathBuf,
    floor: FreeSpaceFloor,
}

impl SpaceGuard {
    pub fn new(root: &Path, floor: FreeSpaceFloor) -> Self {
        SpaceGuard {
            root: root.to_owned(),
            floor,
        }
    }

    /// Free bytes available to this process, and the volume's size.
    pub fn free_and_total(&self) -> std::io::Result<(u64, u64)> {
        let st = rustix::fs::statvfs(&self.root)?;
        let frsize = st.f_frsize.max(1);
        Ok((
            st.f_bavail.saturating_mul(frsize),
            st.f_blocks.saturating_mul(frsize),
        ))
    }

    /// Ok if a write may go ahead. If the volume cannot be measured, writes go ahead (and a
    /// real ENOSPC is still answered as out of space).
    pub fn check(&self) -> Result<(), StoreError> {
        let Ok((free, total)) = self.free_and_total() else {
            return Ok(());
        };
        let floor = self.floor.bytes(total);
        if floor > 0 && free < floor {
            return Err(StoreError::OutOfSpace);
        }
        Ok(())
    }

    /// Whether `bytes` more can be written and still leave the floor free: for writes the
    /// registry could do without (a cache's copies), which must never eat into the room the
    /// floor keeps for pushes. False if the volume cannot be measured.
    pub fn room_for(&self, bytes: u64) -> bool {
        match self.free_and_total() {
            Ok((free, total)) => free >= self.floor.bytes(total).saturating_add(bytes),
            Err(_) => false,
        }
    }

    /// Whether the volume is (nearly) full right now: an I/O error seen at such a moment is
    /// reported as out of space even when the OS said only "I/O error" (SQLite maps some
    /// ENOSPC failures, such as growing its shared-memory file, to a generic I/O error).
    pub fn is_full(&self) -> bool {
        const NEARLY_FULL: u64 = 1 << 20;
        match self.free_and_total() {
            Ok((free, _)) => free < NEARLY_FULL || self.check().is_err(),
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floors_parse() {
        use FreeSpaceFloor::*;
        for (s, want) in [
            ("0", Bytes(0)),
            ("4096", Bytes(4096)),
            ("512MiB", Bytes(512 << 20)),
            ("2 GiB", Bytes(2 << 30)),
            ("1g", Bytes(1 << 30)),
            ("10%", Percent(10.0)),
            ("0.5%", Percent(0.5)),
            ("auto", Auto),
        ] {
            assert_eq!(s.parse::<FreeSpaceFloor>(), Ok(want), "{s}");
        }
        for s in ["", "x", "-1", "10 parsecs", "101%", "99999999999999TiB"] {
            assert!(s.parse::<FreeSpaceFloor>().is_err(), "{s}");
        }
    }

    #[test]
    fn the_automatic_floor_is_one_percent_at_most_256_mib() {
        let gib = 1u64 << 30;
        assert_eq!(FreeSpaceFloor::Auto.bytes(64 << 20), (64 << 20) / 100);
        assert_eq!(FreeSpaceFloor::Auto.bytes(10 * gib), 10 * gib / 100);
        assert_eq!(FreeSpaceFloor::Auto.bytes(252 * gib), 256 << 20);
        assert_eq!(FreeSpaceFloor::Percent(10.0).bytes(1000), 100);
        assert_eq!(FreeSpaceFloor::Bytes(7).bytes(1000), 7);
    }

    #[test]
    fn a_floor_above_the_free_space_refuses_writes() {
        let dir = tempfile::tempdir().unwrap();
        let (free, _) = SpaceGuard::new(dir.path(), FreeSpaceFloor::Bytes(0))
            .free_and_total()
            .unwrap();
        assert!(
            SpaceGuard::new(dir.path(), FreeSpaceFloor::Bytes(0))
                .check()
                .is_ok()
        );
        assert!(
            SpaceGuard::new(dir.path(), FreeSpaceFloor::Bytes(1))
                .check()
                .is_ok()
        );
        let over = SpaceGuard::new(dir.path(), FreeSpaceFloor::Bytes(free + (1 << 30)));
        assert!(matches!(over.check(), Err(StoreError::OutOfSpace)));
        assert!(over.is_full());
        let all = SpaceGuard::new(dir.path(), FreeSpaceFloor::Percent(100.0));
        assert!(matches!(all.check(), Err(StoreError::OutOfSpace)));
    }
}
