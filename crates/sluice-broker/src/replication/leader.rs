//! A leader's view of its followers: their log ends, when each was last
//! caught up, the ISR and the high watermark that follows from them
//! (Kafka's `Partition` leader-side state).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use sluice_log::Partition;

use crate::cluster::PartitionState;

/// One follower as the leader sees it.
#[derive(Debug, Clone)]
pub struct Progress {
    /// Its log end offset (the offset of its last fetch); -1 until it
    /// fetches from this leader.
    pub leo: i64,
    /// When it last had everything the leader had (Kafka's
    /// `lastCaughtUpTimeMs`).
    pub last_caught_up: Instant,
    /// The time of its previous fetch and the leader's log end then.
    last_fetch: Option<(Instant, i64)>,
}

/// A change of ISR to ask the controller for.
#[derive(Debug, Clone)]
pub struct IsrProposal {
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub isr: Vec<i32>,
}

/// What a leader keeps for one partition.
#[derive(Debug)]
pub struct LeaderState {
    pub leader: i32,
    pub epoch: i32,
    pub partition_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub followers: HashMap<i32, Progress>,
    /// An ISR change is with the controller: no second one until it answers.
    pub isr_change_pending: bool,
    /// The ISR an expansion asked for, until the controller answers: the
    /// high watermark counts the joining follower already (Kafka's
    /// `maximalIsr`), since the controller may have written the larger ISR
    /// — and a later leader may be elected from it — before this leader
    /// hears back.
    pub pending_isr: Option<Vec<i32>>,
    /// This broker's etcd registration when it took the leadership: after
    /// a lost lease and a new registration it must not acknowledge as this
    /// leader any more.
    pub incarnation: i64,
    /// The log end when this broker became leader: a follower joins the ISR
    /// only once it has at least this (it then holds every record of the
    /// previous epochs the leader holds).
    epoch_start_offset: i64,
}

impl LeaderState {
    pub fn new(
        state: &PartitionState,
        replicas: &[i32],
        log: &Partition,
        incarnation: i64,
    ) -> LeaderState {
        let now = Instant::now();
        let followers = replicas
            .iter()
            .filter(|&&r| r != state.leader)
            .map(|&r| {
                (
                    r,
                    Progress {
                        leo: -1,
                        // As Kafka: an ISR member gets the full lag time to
                        // show up at its new leader.
                        last_caught_up: now,
                        last_fetch: None,
                    },
                )
            })
            .collect();
        LeaderState {
            leader: state.leader,
            epoch: state.leader_epoch,
            partition_epoch: state.partition_epoch,
            replicas: replicas.to_vec(),
            isr: state.isr.clone(),
            followers,
            isr_change_pending: false,
            pending_isr: None,
            incarnation,
            epoch_start_offset: log.log_end(),
        }
    }

    /// The partition's replicas changed under this leader (a reassignment
    /// added or dropped some): new followers are tracked from their first
    /// fetch, dropped ones forgotten.
    pub fn set_replicas(&mut self, replicas: &[i32]) {
        let now = Instant::now();
        self.followers.retain(|id, _| replicas.contains(id));
        for &r in replicas {
            if r != self.leader {
                self.followers.entry(r).or_insert(Progress {
                    leo: -1,
                    last_caught_up: now,
                    last_fetch: None,
                });
            }
        }
        self.replicas = replicas.to_vec();
    }

    /// A newer state of the same leader epoch (the ISR changed).
    pub fn update(&mut self, state: &PartitionState) {
        if state.partition_epoch >= self.partition_epoch {
            self.isr = state.isr.clone();
            self.partition_epoch = state.partition_epoch;
        }
    }

    /// Records a follower's fetch at `fetch_offset`. Returns an ISR
    /// expansion to ask for when an out-of-sync follower has caught up to
    /// the high watermark.
    pub fn record_fetch(
        &mut self,
        log: &Partition,
        follower: i32,
        fetch_offset: i64,
    ) -> Option<IsrProposal> {
        let now = Instant::now();
        let leader_end = log.log_end();
        let p = self.followers.get_mut(&follower)?;
        p.leo = fetch_offset;
        // Kafka's rule: caught up now if it asked for our end; caught up at
        // its previous fetch if it now has what we had then.
        if fetch_offset >= leader_end {
            p.last_caught_up = now;
        } else if let Some((at, end_then)) = p.last_fetch
            && fetch_offset >= end_then
        {
            p.last_caught_up = p.last_caught_up.max(at);
        }
        p.last_fetch = Some((now, leader_end));
        let caught_up =
            fetch_offset >= log.high_watermark() && fetch_offset >= self.epoch_start_offset;
        if !self.isr.contains(&follower) && caught_up && !self.isr_change_pending {
            self.isr_change_pending = true;
            let mut isr = self.isr.clone();
            isr.push(follower);
            isr.sort_unstable();
            self.pending_isr = Some(isr.clone());
            return Some(IsrProposal {
                leader_epoch: self.epoch,
                partition_epoch: self.partition_epoch,
                isr,
            });
        }
        None
    }

    /// Moves the high watermark to the smallest log end in the ISR (and in
    /// an expansion awaiting the controller), if that is past it. A member
    /// that has not fetched yet holds it where it is.
    pub fn advance_hw(&self, log: &Partition) -> bool {
        let mut hw = log.log_end();
        let pending = self.pending_isr.iter().flatten();
        for id in self.isr.iter().chain(pending) {
            if *id == self.leader {
                continue;
            }
            match self.followers.get(id) {
                Some(p) if p.leo >= 0 => hw = hw.min(p.leo),
                _ => return false,
            }
        }
        if hw > log.high_watermark() {
            log.set_high_watermark(hw);
            return true;
        }
        false
    }

    /// The ISR without the followers not caught up within `lag`, if any.
    pub fn shrink_proposal(&mut self, now: Instant, lag: Duration) -> Option<IsrProposal> {
        if self.isr_change_pending {
            return None;
        }
        let out: Vec<i32> = self
            .isr
            .iter()
            .copied()
            .filter(|id| *id != self.leader)
            .filter(|id| {
                self.followers
                    .get(id)
                    .is_some_and(|p| now.saturating_duration_since(p.last_caught_up) > lag)
            })
            .collect();
        if out.is_empty() {
            return None;
        }
        self.isr_change_pending = true;
        Some(IsrProposal {
            leader_epoch: self.epoch,
            partition_epoch: self.partition_epoch,
            isr: self
                .isr
                .iter()
                .copied()
                .filter(|id| !out.contains(id))
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(leader: i32, isr: &[i32]) -> PartitionState {
        PartitionState {
            leader,
            leader_epoch: 1,
            isr: isr.to_vec(),
            partition_epoch: 1,
            controller_epoch: 1,
        }
    }

    fn log_with(dir: &std::path::Path, records: usize) -> Partition {
        let p = Partition::open(&dir.join("t-0"), sluice_log::LogConfig::default(), false)
            .expect("open");
        for i in 0..records {
            let b = sluice_log::batch::build_batch(1, &[format!("r{i}").as_bytes()]);
            p.append(&b, 1).expect("append");
        }
        p.set_high_watermark(0);
        p
    }

    /// The high watermark is the smallest log end in the ISR; a member
    /// that has not fetched holds it.
    #[test]
    fn the_high_watermark_follows_the_slowest_isr_member() {
        let dir = tempfile::tempdir().expect("dir");
        let log = log_with(dir.path(), 10);
        let mut l = LeaderState::new(&state(1, &[1, 2, 3]), &[1, 2, 3], &log, 1);
        assert!(l.record_fetch(&log, 2, 10).is_none());
        assert!(!l.advance_hw(&log), "broker 3 has not fetched");
        assert_eq!(log.high_watermark(), 0);
        l.record_fetch(&log, 3, 4);
        assert!(l.advance_hw(&log));
        assert_eq!(log.high_watermark(), 4);
        l.record_fetch(&log, 3, 10);
        assert!(l.advance_hw(&log));
        assert_eq!(log.high_watermark(), 10);
    }

    /// A follower joining the ISR counts for the high watermark from the
    /// moment its expansion is asked for (Kafka's maximalIsr): the
    /// controller may write the larger ISR, and elect from it, before this
    /// leader hears back.
    #[test]
    fn a_joining_follower_holds_the_high_watermark_while_its_expansion_is_pending() {
        let dir = tempfile::tempdir().expect("dir");
        // Four records from earlier epochs, six in this leader's.
        let log = log_with(dir.path(), 4);
        let mut l = LeaderState::new(&state(1, &[1, 2]), &[1, 2, 3], &log, 1);
        for i in 0..6 {
            let b = sluice_log::batch::build_batch(1, &[format!("n{i}").as_bytes()]);
            log.append(&b, 1).expect("append");
        }
        l.record_fetch(&log, 2, 6);
        assert!(l.advance_hw(&log));
        assert_eq!(log.high_watermark(), 6);
        // Broker 3 reaches the high watermark: an expansion is proposed.
        let proposal = l.record_fetch(&log, 3, 6).expect("an expansion");
        assert_eq!(proposal.isr, vec![1, 2, 3]);
        // Broker 2 catches up fully; broker 3 is still at 6: the high
        // watermark must not pass 6 while 3's membership is pending.
        l.record_fetch(&log, 2, 10);
        assert!(!l.advance_hw(&log));
        assert_eq!(log.high_watermark(), 6);
        l.record_fetch(&log, 3, 10);
        assert!(l.advance_hw(&log));
        assert_eq!(log.high_watermark(), 10);
    }

    /// A follower not caught up for longer than the lag time is proposed
    /// out; the leader never is.
    #[test]
    fn a_lagging_follower_is_proposed_out_of_the_isr() {
        let dir = tempfile::tempdir().expect("dir");
        let log = log_with(dir.path(), 10);
        let mut l = LeaderState::new(&state(1, &[1, 2, 3]), &[1, 2, 3], &log, 1);
        let lag = Duration::from_millis(100);
        l.record_fetch(&log, 2, 10);
        assert!(l.shrink_proposal(Instant::now(), lag).is_none());
        let later = Instant::now() + Duration::from_millis(150);
        // 2 was caught up 150 ms before `later`; 3 never fetched.
        let p = l.shrink_proposal(later, lag).expect("a shrink");
        assert_eq!(p.isr, vec![1]);
        assert!(
            l.shrink_proposal(later, lag).is_none(),
            "one change at a time"
        );
    }
}
