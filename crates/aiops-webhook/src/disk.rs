//! The state volume's headroom, and the reserve kept for work already acknowledged.
//!
//! An acknowledged notification still has to be processed (one state-log entry), delivered
//! (one delivery record per message) and compacted (a snapshot), and its pending action stored.
//! All of that needs disk. So the journal admits a new notification only while the volume keeps
//! `webhook.state_reserve_mib` free after it: below that the receiver answers 503 +
//! Retry-After (Alertmanager retries) while everything already acknowledged goes on using the
//! reserve. Free space is read with statvfs(2) at every group commit and every `/healthz` or
//! `/metrics`, so the receiver accepts again as soon as space comes back.

use std::path::{Path, PathBuf};

/// What statvfs(2) says about the volume holding the state directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    /// Bytes an unprivileged writer may still use (`f_bavail`).
    pub free: u64,
    /// The volume's size (`f_blocks`).
    pub size: u64,
}

/// The state directory's volume and the reserve kept on it.
#[derive(Debug, Clone)]
pub struct Headroom {
    dir: PathBuf,
    reserve: u64,
}

/// A new notification would eat into the reserve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the state volume has {} free, not more than it keeps for notifications already acknowledged ({} reserve + {} for processing those not processed yet)",
    mib(*free),
    mib(*reserve),
    mib(*promised)
)]
pub struct BelowReserve {
    pub free: u64,
    pub reserve: u64,
    /// What processing the acknowledged but unprocessed notifications is expected to write.
    pub promised: u64,
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

impl Headroom {
    pub fn new(dir: &Path, reserve_bytes: u64) -> Self {
        Self {
            dir: dir.to_owned(),
            reserve: reserve_bytes,
        }
    }

    pub fn reserve(&self) -> u64 {
        self.reserve
    }

    /// Measures the volume now.
    pub fn space(&self) -> std::io::Result<Space> {
        let st = nix::sys::statvfs::statvfs(&self.dir).map_err(std::io::Error::from)?;
        let unit = st.fragment_size();
        Ok(Space {
            free: st.blocks_available().saturating_mul(unit),
            size: st.blocks().saturating_mul(unit),
        })
    }

    /// How many of `sizes` (bytes each, in order) fit while `reserve` stays free: the rule for
    /// admitting new notifications. Pure, for the journal writer and its tests.
    pub fn admissible(free: u64, reserve: u64, sizes: impl IntoIterator<Item = u64>) -> usize {
        let mut left = free.saturating_sub(reserve);
        let mut n = 0;
        for s in sizes {
            if s > left {
                break;
            }
            left -= s;
            n += 1;
        }
        n
    }

    /// `Err` when the volume has no more free than the reserve plus `promised`. A volume that
    /// cannot be measured passes: then the writes themselves decide.
    pub fn check(&self, promised: u64) -> Result<(), BelowReserve> {
        match self.space() {
            Ok(s) if s.free <= self.reserve.saturating_add(promised) => Err(BelowReserve {
                free: s.free,
                reserve: self.reserve,
                promised,
            }),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_are_admitted_only_while_the_reserve_stays_free() {
        assert_eq!(Headroom::admissible(100, 40, [20, 20, 20]), 3);
        assert_eq!(
            Headroom::admissible(100, 40, [20, 50, 5]),
            1,
            "in order: the first that does not fit stops the rest"
        );
        assert_eq!(Headroom::admissible(100, 40, [61]), 0);
        assert_eq!(Headroom::admissible(30, 40, [1]), 0, "already below");
    }

    #[test]
    fn the_state_directory_has_a_measurable_volume() {
        let dir = tempfile::tempdir().unwrap();
        let h = Headroom::new(dir.path(), 0);
        let s = h.space().unwrap();
        assert!(s.size > 0 && s.free <= s.size, "{s:?}");
        assert!(h.check(0).is_ok());
        assert!(h.check(s.size).is_err(), "promised more than there is");
        let h = Headroom::new(dir.path(), u64::MAX);
        assert!(h.check(0).is_err());
    }
}
