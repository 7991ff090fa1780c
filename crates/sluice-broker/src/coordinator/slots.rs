//! What a coordinator holds of the internal-topic partitions it leads
//! (`__consumer_offsets`, `__transaction_state`): each partition is loaded
//! from its log for one leader epoch, and is only served once loaded for
//! the epoch it is led at now.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

/// Where one partition stands for a leader epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadState {
    /// Not loaded here (never, or for an older epoch).
    Absent,
    /// Being read; requests meanwhile get COORDINATOR_LOAD_IN_PROGRESS.
    Loading,
    Loaded,
}

#[derive(Debug)]
enum Slot<T> {
    Loading(i32),
    Loaded(i32, T),
}

/// Partition → its loaded state `T`, per leader epoch.
#[derive(Debug)]
pub struct Slots<T> {
    slots: Mutex<HashMap<i32, Slot<T>>>,
}

impl<T> Default for Slots<T> {
    fn default() -> Self {
        Slots {
            slots: Mutex::new(HashMap::new()),
        }
    }
}

impl<T> Slots<T> {
    fn lock(&self) -> MutexGuard<'_, HashMap<i32, Slot<T>>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where partition `p` stands for leader epoch `epoch`.
    pub fn state(&self, p: i32, epoch: i32) -> LoadState {
        match self.lock().get(&p) {
            Some(Slot::Loaded(e, _)) if *e == epoch => LoadState::Loaded,
            Some(Slot::Loading(e)) if *e == epoch => LoadState::Loading,
            _ => LoadState::Absent,
        }
    }

    /// Claims the load of `p` for `epoch`: true if the caller must load it
    /// now (nobody else is, and it is not loaded for that epoch).
    pub fn begin_load(&self, p: i32, epoch: i32) -> bool {
        let mut slots = self.lock();
        match slots.get(&p) {
            Some(Slot::Loaded(e, _)) | Some(Slot::Loading(e)) if *e == epoch => false,
            _ => {
                slots.insert(p, Slot::Loading(epoch));
                true
            }
        }
    }

    /// Installs a finished load (unless the partition moved on meanwhile);
    /// `None` (the load failed) frees the claim for a retry.
    pub fn finish_load(&self, p: i32, epoch: i32, loaded: Option<T>) {
        let mut slots = self.lock();
        if matches!(slots.get(&p), Some(Slot::Loading(e)) if *e == epoch) {
            match loaded {
                Some(v) => {
                    slots.insert(p, Slot::Loaded(epoch, v));
                }
                None => {
                    slots.remove(&p);
                }
            }
        }
    }

    /// Forgets partition `p` (this broker no longer leads it).
    pub fn unload(&self, p: i32) -> bool {
        self.lock().remove(&p).is_some()
    }

    /// Partitions loaded or loading, with their epochs.
    pub fn held(&self) -> Vec<(i32, i32)> {
        self.lock()
            .iter()
            .map(|(p, s)| match s {
                Slot::Loading(e) | Slot::Loaded(e, _) => (*p, *e),
            })
            .collect()
    }

    /// `f` over partition `p`'s state, if loaded (any epoch).
    pub fn with<R>(&self, p: i32, f: impl FnOnce(&T) -> R) -> Option<R> {
        match self.lock().get(&p) {
            Some(Slot::Loaded(_, v)) => Some(f(v)),
            _ => None,
        }
    }

    /// `f` over partition `p`'s state, if loaded for `epoch`.
    pub fn with_mut_at<R>(&self, p: i32, epoch: i32, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        match self.lock().get_mut(&p) {
            Some(Slot::Loaded(e, v)) if *e == epoch => Some(f(v)),
            _ => None,
        }
    }

    /// `f` over partition `p`'s state, if loaded (any epoch).
    pub fn with_mut<R>(&self, p: i32, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        match self.lock().get_mut(&p) {
            Some(Slot::Loaded(_, v)) => Some(f(v)),
            _ => None,
        }
    }

    /// `f` over every loaded partition's state.
    pub fn for_each_loaded(&self, mut f: impl FnMut(&T)) {
        for slot in self.lock().values() {
            if let Slot::Loaded(_, v) = slot {
                f(v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_is_served_only_once_loaded_for_its_epoch() {
        let s: Slots<u32> = Slots::default();
        assert_eq!(s.state(0, 7), LoadState::Absent);
        assert!(s.begin_load(0, 7));
        assert!(!s.begin_load(0, 7), "one loader at a time");
        assert_eq!(s.state(0, 7), LoadState::Loading);
        s.finish_load(0, 7, Some(5));
        assert_eq!(s.state(0, 7), LoadState::Loaded);
        assert_eq!(
            s.state(0, 8),
            LoadState::Absent,
            "a newer epoch loads again"
        );
        assert_eq!(s.with_mut_at(0, 6, |v| *v), None);
        assert_eq!(s.with_mut_at(0, 7, |v| *v), Some(5));
        // A load overtaken by a newer epoch is not installed.
        assert!(s.begin_load(1, 1));
        assert!(s.begin_load(1, 2));
        s.finish_load(1, 1, Some(9));
        assert_eq!(s.state(1, 2), LoadState::Loading);
        s.finish_load(1, 2, None);
        assert_eq!(
            s.state(1, 2),
            LoadState::Absent,
            "a failed load can be retried"
        );
        assert_eq!(s.held(), vec![(0, 7)]);
        assert!(s.unload(0));
        assert_eq!(s.with(0, |v| *v), None);
    }
}
