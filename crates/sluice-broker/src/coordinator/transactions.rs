//! The transaction coordinator's state machine (Kafka's
//! `TransactionCoordinator` / `TransactionMetadata`, KIP-98), and the
//! records it keeps in `__transaction_state`.
//!
//! Pure: each operation takes a transactional id's current metadata and
//! returns the metadata to write (or a Kafka error code), and the caller
//! (`api`) writes it to the log before answering — so the state a new
//! coordinator loads is exactly what clients were told. The markers a
//! PrepareCommit/PrepareAbort calls for are written by the caller too.
//!
//! Records: key `TransactionLogKey` v0 (version i16 = 0, transactional id
//! string); value `TransactionLogValue` v0 (version i16 = 0, producer id
//! i64, producer epoch i16, transaction timeout ms i32, status i8,
//! partitions: nullable array (i32 count) of topic string + partition ids
//! (array of i32), last update ms i64, start ms i64), or null (the id
//! expired).

use std::collections::{BTreeMap, BTreeSet};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::ResponseError as E;

use super::records::Reader;

/// The internal topic holding every transactional id's state.
pub const TRANSACTION_TOPIC: &str = "__transaction_state";

/// Kafka's `TransactionState`, with its record ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnState {
    Empty = 0,
    Ongoing = 1,
    PrepareCommit = 2,
    PrepareAbort = 3,
    CompleteCommit = 4,
    CompleteAbort = 5,
    Dead = 6,
    PrepareEpochFence = 7,
}

impl TxnState {
    fn from_id(id: i8) -> Option<TxnState> {
        Some(match id {
            0 => TxnState::Empty,
            1 => TxnState::Ongoing,
            2 => TxnState::PrepareCommit,
            3 => TxnState::PrepareAbort,
            4 => TxnState::CompleteCommit,
            5 => TxnState::CompleteAbort,
            6 => TxnState::Dead,
            7 => TxnState::PrepareEpochFence,
            _ => return None,
        })
    }

    /// The name DescribeTransactions and ListTransactions use.
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
            TxnState::Dead => "Dead",
            TxnState::PrepareEpochFence => "PrepareEpochFence",
        }
    }

    /// Markers are being written: the transaction is ending.
    pub fn is_preparing(self) -> bool {
        matches!(self, TxnState::PrepareCommit | TxnState::PrepareAbort)
    }
}

/// A partition in a transaction.
pub type TopicPartition = (String, i32);

/// One transactional id's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnMetadata {
    pub transactional_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    pub partitions: BTreeSet<TopicPartition>,
    pub start_ms: i64,
    pub last_update_ms: i64,
}

/// The highest epoch handed out before a producer id is replaced (Kafka
/// stops at `Short.MaxValue - 1` so that a fence can still bump it).
const MAX_EPOCH: i16 = i16::MAX - 1;

/// What InitProducerId should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitOutcome {
    /// Write this metadata, then answer with its producer id and epoch.
    Ready(TxnMetadata),
    /// A transaction is open: write this (the epoch bumped, fencing the
    /// old producer, PrepareAbort), write abort markers to its partitions,
    /// complete it — and answer CONCURRENT_TRANSACTIONS so the new producer
    /// retries once the abort is done (Kafka's behaviour).
    AbortFirst(TxnMetadata),
}

fn code(e: E) -> i16 {
    e.code()
}

/// InitProducerId for a transactional id. `existing` is its current state;
/// `new_producer_id` hands out a fresh id (a new transactional id, or an
/// exhausted epoch).
pub fn init_producer_id(
    transactional_id: &str,
    existing: Option<&TxnMetadata>,
    timeout_ms: i32,
    max_timeout_ms: i32,
    now_ms: i64,
    new_producer_id: &mut dyn FnMut() -> Result<i64, i16>,
) -> Result<InitOutcome, i16> {
    if timeout_ms <= 0 || timeout_ms > max_timeout_ms {
        return Err(code(E::InvalidTransactionTimeout));
    }
    let Some(m) = existing.filter(|m| m.state != TxnState::Dead) else {
        return Ok(InitOutcome::Ready(TxnMetadata {
            transactional_id: transactional_id.to_string(),
            producer_id: new_producer_id()?,
            producer_epoch: 0,
            timeout_ms,
            state: TxnState::Empty,
            partitions: BTreeSet::new(),
            start_ms: -1,
            last_update_ms: now_ms,
        }));
    };
    match m.state {
        TxnState::PrepareCommit | TxnState::PrepareAbort | TxnState::PrepareEpochFence => {
            Err(code(E::ConcurrentTransactions))
        }
        TxnState::Ongoing => Ok(InitOutcome::AbortFirst(TxnMetadata {
            producer_epoch: m.producer_epoch.saturating_add(1),
            state: TxnState::PrepareAbort,
            last_update_ms: now_ms,
            ..m.clone()
        })),
        _ => {
            let (producer_id, producer_epoch) = if m.producer_epoch >= MAX_EPOCH {
                (new_producer_id()?, 0)
            } else {
                (m.producer_id, m.producer_epoch + 1)
            };
            Ok(InitOutcome::Ready(TxnMetadata {
                transactional_id: m.transactional_id.clone(),
                producer_id,
                producer_epoch,
                timeout_ms,
                state: TxnState::Empty,
                partitions: BTreeSet::new(),
                start_ms: -1,
                last_update_ms: now_ms,
            }))
        }
    }
}

/// The checks every request of a producer goes through: its id is the
/// transactional id's, its epoch the current one (an older one is a
/// zombie: PRODUCER_FENCED for clients that know it (`fenced_code`),
/// INVALID_PRODUCER_EPOCH otherwise).
fn check_producer(
    m: &TxnMetadata,
    producer_id: i64,
    producer_epoch: i16,
    fenced_code: i16,
) -> Result<(), i16> {
    if m.producer_id != producer_id {
        return Err(code(E::InvalidProducerIdMapping));
    }
    if m.producer_epoch != producer_epoch {
        return Err(fenced_code);
    }
    Ok(())
}

/// AddPartitionsToTxn (and AddOffsetsToTxn, with the group's offsets
/// partition): the transaction is Ongoing with these partitions added.
/// `Ok(None)`: nothing to write (all already in it).
pub fn add_partitions(
    existing: Option<&TxnMetadata>,
    producer_id: i64,
    producer_epoch: i16,
    partitions: &[TopicPartition],
    now_ms: i64,
    fenced_code: i16,
) -> Result<Option<TxnMetadata>, i16> {
    let m = existing.ok_or(code(E::InvalidProducerIdMapping))?;
    check_producer(m, producer_id, producer_epoch, fenced_code)?;
    if m.state.is_preparing() || m.state == TxnState::PrepareEpochFence {
        return Err(code(E::ConcurrentTransactions));
    }
    if m.state == TxnState::Dead {
        return Err(code(E::InvalidProducerIdMapping));
    }
    if m.state == TxnState::Ongoing && partitions.iter().all(|p| m.partitions.contains(p)) {
        return Ok(None);
    }
    let mut next = m.clone();
    if m.state != TxnState::Ongoing {
        next.partitions.clear();
        next.start_ms = now_ms;
    }
    next.state = TxnState::Ongoing;
    next.partitions.extend(partitions.iter().cloned());
    next.last_update_ms = now_ms;
    Ok(Some(next))
}

/// What EndTxn should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndOutcome {
    /// Write this (PrepareCommit or PrepareAbort), then the markers, then
    /// the completion ([`complete`]).
    Prepare(TxnMetadata),
    /// A retried EndTxn of a transaction already ended the same way.
    AlreadyDone,
}

pub fn end_txn(
    existing: Option<&TxnMetadata>,
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
    now_ms: i64,
    fenced_code: i16,
) -> Result<EndOutcome, i16> {
    let m = existing.ok_or(code(E::InvalidProducerIdMapping))?;
    check_producer(m, producer_id, producer_epoch, fenced_code)?;
    match (m.state, commit) {
        (TxnState::Ongoing, _) => Ok(EndOutcome::Prepare(TxnMetadata {
            state: if commit {
                TxnState::PrepareCommit
            } else {
                TxnState::PrepareAbort
            },
            last_update_ms: now_ms,
            ..m.clone()
        })),
        (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => {
            Ok(EndOutcome::AlreadyDone)
        }
        (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {
            Err(code(E::ConcurrentTransactions))
        }
        (TxnState::PrepareEpochFence, _) => Err(code(E::ConcurrentTransactions)),
        // An abort with nothing open: nothing to do (librdkafka aborts
        // after an error before anything was added).
        (TxnState::Empty, false) => Ok(EndOutcome::AlreadyDone),
        _ => Err(code(E::InvalidTxnState)),
    }
}

/// The transaction's end once its markers are written: CompleteCommit or
/// CompleteAbort, no partitions.
pub fn complete(m: &TxnMetadata, now_ms: i64) -> TxnMetadata {
    TxnMetadata {
        state: if m.state == TxnState::PrepareCommit {
            TxnState::CompleteCommit
        } else {
            TxnState::CompleteAbort
        },
        partitions: BTreeSet::new(),
        last_update_ms: now_ms,
        ..m.clone()
    }
}

/// A transaction open past its timeout: aborted by the coordinator, with
/// the producer's epoch bumped so the producer cannot go on with it
/// (Kafka's `abortTimedOutTransactions`).
pub fn expire(m: &TxnMetadata, now_ms: i64) -> Option<TxnMetadata> {
    (m.state == TxnState::Ongoing && now_ms > m.start_ms + i64::from(m.timeout_ms)).then(|| {
        TxnMetadata {
            producer_epoch: m.producer_epoch.saturating_add(1),
            state: TxnState::PrepareAbort,
            last_update_ms: now_ms,
            ..m.clone()
        }
    })
}

// ---- records ----------------------------------------------------------------

fn put_str(out: &mut BytesMut, s: &str) -> Result<(), i16> {
    let len = i16::try_from(s.len()).map_err(|_| code(E::InvalidRequest))?;
    out.put_i16(len);
    out.put_slice(s.as_bytes());
    Ok(())
}

/// `TransactionLogKey` v0.
pub fn log_key(transactional_id: &str) -> Result<Bytes, i16> {
    let mut out = BytesMut::new();
    out.put_i16(0);
    put_str(&mut out, transactional_id)?;
    Ok(out.freeze())
}

/// `TransactionLogValue` v0.
pub fn log_value(m: &TxnMetadata) -> Result<Bytes, i16> {
    let mut out = BytesMut::new();
    out.put_i16(0);
    out.put_i64(m.producer_id);
    out.put_i16(m.producer_epoch);
    out.put_i32(m.timeout_ms);
    out.put_i8(m.state as i8);
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (t, p) in &m.partitions {
        by_topic.entry(t).or_default().push(*p);
    }
    out.put_i32(by_topic.len() as i32);
    for (t, ps) in by_topic {
        put_str(&mut out, t)?;
        out.put_i32(ps.len() as i32);
        for p in ps {
            out.put_i32(p);
        }
    }
    out.put_i64(m.last_update_ms);
    out.put_i64(m.start_ms);
    Ok(out.freeze())
}

/// Reads a `__transaction_state` record: the transactional id and its
/// metadata (None: a tombstone). None for a record that does not parse or
/// a flexible (v1) value, which Sluice does not write.
pub fn decode(key: &[u8], value: Option<&[u8]>) -> Option<(String, Option<TxnMetadata>)> {
    let mut k = Reader(key);
    if k.i16()? != 0 {
        return None;
    }
    let transactional_id = k.str()?;
    let Some(value) = value else {
        return Some((transactional_id, None));
    };
    let mut v = Reader(value);
    if v.i16()? != 0 {
        return None;
    }
    let producer_id = v.i64()?;
    let producer_epoch = v.i16()?;
    let timeout_ms = v.i32()?;
    let state = TxnState::from_id(v.i8()?)?;
    let topics = v.i32()?;
    let mut partitions = BTreeSet::new();
    for _ in 0..topics.max(0) {
        let topic = v.str()?;
        let n = v.i32()?;
        for _ in 0..n.max(0) {
            partitions.insert((topic.clone(), v.i32()?));
        }
    }
    let last_update_ms = v.i64()?;
    let start_ms = v.i64()?;
    Some((
        transactional_id.clone(),
        Some(TxnMetadata {
            transactional_id,
            producer_id,
            producer_epoch,
            timeout_ms,
            state,
            partitions,
            start_ms,
            last_update_ms,
        }),
    ))
}

// ---- the partitions this broker coordinates -----------------------------------

use super::slots::{LoadState, Slots};

/// The transactional ids of the `__transaction_state` partitions this
/// broker leads (`transaction.state.log.num.partitions`, 50).
#[derive(Debug)]
pub struct TxnStore {
    partitions: u32,
    slots: Slots<BTreeMap<String, TxnMetadata>>,
    /// What the coordinator has done, for the metrics page.
    pub counters: TxnCounters,
}

/// Transactions ended here since start.
#[derive(Debug, Default)]
pub struct TxnCounters {
    pub committed: std::sync::atomic::AtomicU64,
    pub aborted: std::sync::atomic::AtomicU64,
    /// Aborted by the coordinator for running past their timeout.
    pub timed_out: std::sync::atomic::AtomicU64,
}

impl TxnStore {
    pub fn new(partitions: u32) -> TxnStore {
        TxnStore {
            partitions: partitions.max(1),
            slots: Slots::default(),
            counters: TxnCounters::default(),
        }
    }

    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// The partition of a transactional id (the same hash as groups').
    pub fn partition_for(&self, transactional_id: &str) -> i32 {
        super::offsets::partition_for(transactional_id, self.partitions)
    }

    pub fn slots(&self) -> &Slots<BTreeMap<String, TxnMetadata>> {
        &self.slots
    }

    pub fn state(&self, p: i32, epoch: i32) -> LoadState {
        self.slots.state(p, epoch)
    }

    /// The id's metadata, if its partition is loaded here.
    pub fn get(&self, transactional_id: &str) -> Option<TxnMetadata> {
        self.slots
            .with(self.partition_for(transactional_id), |m| {
                m.get(transactional_id).cloned()
            })
            .flatten()
    }

    /// Records metadata once written durably, if `p` is still loaded for
    /// `epoch`.
    pub fn put(&self, p: i32, epoch: i32, m: TxnMetadata) {
        self.slots.with_mut_at(p, epoch, |ids| {
            ids.insert(m.transactional_id.clone(), m);
        });
    }

    /// Transactions open (Ongoing) in the loaded partitions.
    pub fn open_count(&self) -> usize {
        let mut n = 0;
        self.slots.for_each_loaded(|ids| {
            n += ids
                .values()
                .filter(|m| m.state == TxnState::Ongoing)
                .count()
        });
        n
    }

    /// Every loaded id's metadata (timeouts, ListTransactions).
    pub fn all(&self) -> Vec<TxnMetadata> {
        let mut out = Vec::new();
        self.slots
            .for_each_loaded(|ids| out.extend(ids.values().cloned()));
        out
    }
}

/// One lock per transactional id: each request reads the id's metadata,
/// writes the next, and waits for it to be durable before the next request
/// for the same id looks (Kafka holds the metadata's lock the same way).
#[derive(Debug, Default)]
pub struct IdLocks {
    locks:
        std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<tokio::sync::Mutex<()>>>>,
}

impl IdLocks {
    pub async fn lock(&self, transactional_id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            // Forget the locks nobody holds or waits for, now and then.
            if locks.len() > 1024 {
                locks.retain(|_, l| std::sync::Arc::strong_count(l) > 1);
            }
            locks
                .entry(transactional_id.to_string())
                .or_default()
                .clone()
        };
        lock.lock_owned().await
    }
}

/// Whether InitProducerId must hand out a fresh producer id (a new or dead
/// transactional id, or one whose epochs are used up).
pub fn needs_new_producer_id(existing: Option<&TxnMetadata>) -> bool {
    existing.is_none_or(|m| m.state == TxnState::Dead || m.producer_epoch >= MAX_EPOCH)
}

/// Reads a `__transaction_state` partition: the latest metadata of each
/// transactional id (a tombstone removes it).
pub fn load(part: &sluice_log::Partition) -> std::io::Result<BTreeMap<String, TxnMetadata>> {
    let mut out = BTreeMap::new();
    super::records::for_each_record(part, |r| {
        if r.control {
            return;
        }
        let Some(key) = &r.key else { return };
        match decode(key, r.value.as_deref()) {
            Some((id, Some(m))) => {
                out.insert(id, m);
            }
            Some((id, None)) => {
                out.remove(&id);
            }
            None => {}
        }
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FENCED: i16 = E::ProducerFenced.code();

    fn ids() -> impl FnMut() -> Result<i64, i16> {
        let mut next = 1000;
        move || {
            next += 1;
            Ok(next)
        }
    }

    fn ready(o: Result<InitOutcome, i16>) -> TxnMetadata {
        match o {
            Ok(InitOutcome::Ready(m)) => m,
            other => panic!("{other:?}"),
        }
    }

    fn tp(t: &str, p: i32) -> TopicPartition {
        (t.to_string(), p)
    }

    #[test]
    fn a_transaction_runs_commit_and_the_next_init_bumps_the_epoch() {
        let mut alloc = ids();
        let m = ready(init_producer_id("tx", None, 60_000, 900_000, 1, &mut alloc));
        assert_eq!(
            (m.producer_id, m.producer_epoch, m.state),
            (1001, 0, TxnState::Empty)
        );
        let m = add_partitions(Some(&m), 1001, 0, &[tp("a", 0)], 2, FENCED)
            .unwrap()
            .unwrap();
        assert_eq!((m.state, m.start_ms), (TxnState::Ongoing, 2));
        assert_eq!(
            add_partitions(Some(&m), 1001, 0, &[tp("a", 0)], 3, FENCED),
            Ok(None),
            "already in it"
        );
        let m = add_partitions(Some(&m), 1001, 0, &[tp("b", 1)], 3, FENCED)
            .unwrap()
            .unwrap();
        assert_eq!(m.partitions.len(), 2);
        assert_eq!(m.start_ms, 2, "the start stays");
        let EndOutcome::Prepare(p) = end_txn(Some(&m), 1001, 0, true, 4, FENCED).unwrap() else {
            panic!()
        };
        assert_eq!(p.state, TxnState::PrepareCommit);
        assert_eq!(
            end_txn(Some(&p), 1001, 0, true, 4, FENCED),
            Err(E::ConcurrentTransactions.code()),
            "markers still being written"
        );
        let done = complete(&p, 5);
        assert_eq!(done.state, TxnState::CompleteCommit);
        assert!(done.partitions.is_empty());
        assert_eq!(
            end_txn(Some(&done), 1001, 0, true, 6, FENCED),
            Ok(EndOutcome::AlreadyDone)
        );
        assert_eq!(
            end_txn(Some(&done), 1001, 0, false, 6, FENCED),
            Err(E::InvalidTxnState.code())
        );
        let again = ready(init_producer_id(
            "tx",
            Some(&done),
            60_000,
            900_000,
            7,
            &mut alloc,
        ));
        assert_eq!((again.producer_id, again.producer_epoch), (1001, 1));
    }

    #[test]
    fn a_new_init_fences_the_zombie_and_aborts_its_open_transaction_first() {
        let mut alloc = ids();
        let m = ready(init_producer_id("tx", None, 60_000, 900_000, 1, &mut alloc));
        let open = add_partitions(Some(&m), m.producer_id, 0, &[tp("a", 0)], 2, FENCED)
            .unwrap()
            .unwrap();
        let InitOutcome::AbortFirst(fence) =
            init_producer_id("tx", Some(&open), 60_000, 900_000, 3, &mut alloc).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (fence.producer_epoch, fence.state),
            (1, TxnState::PrepareAbort)
        );
        assert_eq!(fence.partitions, open.partitions, "markers go to these");
        // The zombie (epoch 0) is fenced from here on.
        assert_eq!(
            add_partitions(Some(&fence), m.producer_id, 0, &[tp("a", 1)], 4, FENCED),
            Err(FENCED)
        );
        assert_eq!(
            end_txn(Some(&fence), m.producer_id, 0, true, 4, FENCED),
            Err(FENCED)
        );
        assert_eq!(
            init_producer_id("tx", Some(&fence), 60_000, 900_000, 4, &mut alloc),
            Err(E::ConcurrentTransactions.code()),
            "the new producer retries until the abort is complete"
        );
        let done = complete(&fence, 5);
        assert_eq!(done.state, TxnState::CompleteAbort);
        let next = ready(init_producer_id(
            "tx",
            Some(&done),
            60_000,
            900_000,
            6,
            &mut alloc,
        ));
        assert_eq!(next.producer_epoch, 2);
    }

    #[test]
    fn limits_timeouts_and_exhausted_epochs() {
        let mut alloc = ids();
        assert_eq!(
            init_producer_id("tx", None, 900_001, 900_000, 1, &mut alloc),
            Err(E::InvalidTransactionTimeout.code())
        );
        let mut m = ready(init_producer_id("tx", None, 1000, 900_000, 1, &mut alloc));
        m.producer_epoch = MAX_EPOCH;
        let next = ready(init_producer_id(
            "tx",
            Some(&m),
            1000,
            900_000,
            2,
            &mut alloc,
        ));
        assert_eq!(
            (next.producer_id, next.producer_epoch),
            (1002, 0),
            "a fresh producer id"
        );
        let open = add_partitions(Some(&next), 1002, 0, &[tp("a", 0)], 10, FENCED)
            .unwrap()
            .unwrap();
        assert_eq!(expire(&open, 1010), None, "not yet");
        let expired = expire(&open, 1011).expect("past its timeout");
        assert_eq!(
            (expired.state, expired.producer_epoch),
            (TxnState::PrepareAbort, 1)
        );
        assert_eq!(
            add_partitions(Some(&open), 999, 0, &[tp("a", 0)], 10, FENCED),
            Err(E::InvalidProducerIdMapping.code())
        );
    }

    #[test]
    fn a_partition_loads_to_each_ids_latest_metadata() {
        let dir = tempfile::tempdir().expect("dir");
        let log = sluice_log::Log::open(dir.path(), sluice_log::LogConfig::default()).expect("log");
        log.create_topic(TRANSACTION_TOPIC, 1).expect("topic");
        let part = log.partition(TRANSACTION_TOPIC, 0).expect("partition");
        let mut alloc = ids();
        let a = ready(init_producer_id("a", None, 1000, 900_000, 1, &mut alloc));
        let b = ready(init_producer_id("b", None, 1000, 900_000, 1, &mut alloc));
        let a2 = add_partitions(Some(&a), a.producer_id, 0, &[tp("t", 0)], 2, FENCED)
            .unwrap()
            .unwrap();
        let record = |m: &TxnMetadata| {
            (
                log_key(&m.transactional_id).unwrap(),
                Some(log_value(m).unwrap()),
            )
        };
        let tombstone = (log_key("b").unwrap(), None);
        for records in [vec![record(&a), record(&b)], vec![record(&a2), tombstone]] {
            let batch = super::super::offsets::encode_batch(&records, 1).unwrap();
            part.append(&batch, 0).expect("append");
        }
        let loaded = load(&part).expect("load");
        assert_eq!(loaded.len(), 1, "b was removed by its tombstone");
        assert_eq!(loaded.get("a"), Some(&a2));
        let store = TxnStore::new(1);
        assert!(store.slots().begin_load(0, 0));
        store.slots().finish_load(0, 0, Some(loaded));
        assert_eq!(store.get("a"), Some(a2.clone()));
        let done = complete(&a2, 3);
        store.put(0, 1, done.clone());
        assert_eq!(
            store.get("a"),
            Some(a2),
            "a put for another epoch is dropped"
        );
        store.put(0, 0, done.clone());
        assert_eq!(store.get("a"), Some(done));
        assert_eq!(store.all().len(), 1);
    }

    #[test]
    fn records_round_trip_in_kafkas_layout() {
        let m = TxnMetadata {
            transactional_id: "tx".into(),
            producer_id: 7,
            producer_epoch: 3,
            timeout_ms: 60_000,
            state: TxnState::Ongoing,
            partitions: [tp("a", 1), tp("a", 0), tp("b", 2)].into_iter().collect(),
            start_ms: 10,
            last_update_ms: 11,
        };
        let key = log_key("tx").unwrap();
        assert_eq!(&key[..], &[0, 0, 0, 2, b't', b'x']);
        let value = log_value(&m).unwrap();
        // version, pid, epoch, timeout, status, 2 topics: "a" [0, 1], "b" [2], times.
        assert_eq!(
            value.len(),
            2 + 8 + 2 + 4 + 1 + 4 + (3 + 4 + 8) + (3 + 4 + 4) + 8 + 8
        );
        assert_eq!(value[16], 1, "status Ongoing");
        assert_eq!(decode(&key, Some(&value)), Some(("tx".into(), Some(m))));
        assert_eq!(decode(&key, None), Some(("tx".into(), None)));
        assert_eq!(decode(&key, Some(&value[..value.len() - 1])), None);
    }
}
