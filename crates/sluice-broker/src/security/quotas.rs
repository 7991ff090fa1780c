//! Client quotas, as Kafka has them: produce and consume byte rates
//! (KIP-13), set per user, per client id or per (user, client id) with
//! defaults at each level (KIP-55), and the share of a request handler
//! thread a client may use (KIP-124), answered with a throttle time
//! (KIP-219); DescribeClientQuotas and AlterClientQuotas read and change
//! them (KIP-546).
//!
//! A quota is set on an *entity*: a user, a client id, or both, each either
//! named or the default (`<default>`). The quota for a request from user U
//! with client id C is the first of these that sets the key (Kafka's
//! order):
//!
//! 1. `/config/users/U/clients/C`
//! 2. `/config/users/U/clients/<default>`
//! 3. `/config/users/U`
//! 4. `/config/users/<default>/clients/C`
//! 5. `/config/users/<default>/clients/<default>`
//! 6. `/config/users/<default>`
//! 7. `/config/clients/C`
//! 8. `/config/clients/<default>`
//!
//! Each key is resolved on its own: a (user, client) entity that sets only
//! `consumer_byte_rate` leaves `producer_byte_rate` to the levels below.
//!
//! Usage is measured per *budget*, Kafka's metric tags: the user (levels
//! 1–6) and the client id (levels 1, 2, 4, 5, 7, 8) of the request, for
//! the levels the quota came from. So every client id of a user under a
//! user quota shares one budget, while a default user quota gives each user
//! a budget of its own.
//!
//! Rates are Kafka's `Rate` over a `SampledStat`: `window_num` samples of
//! `window_size` (quota.window.num = 11, quota.window.size.seconds = 1); a
//! sample older than `window_num × window_size` no longer counts; the rate
//! divides the samples' sum by the time since the oldest sample, taken as
//! at least `window_num − 1` windows. A record that takes the rate over the
//! quota is still counted, and is answered with Kafka's throttle time
//! (`QuotaUtils.throttleTime`): `(rate − quota) / quota × window`, the time
//! without traffic that brings the rate back to the quota. Like Kafka, the
//! byte-rate throttle is not capped (the window it is computed over is at
//! most `window_num × window_size`), and the request-time throttle is
//! capped at one `window_size` (`ClientRequestQuotaManager`).
//!
//! `client-quotas` in the data directory holds the quotas: one line per
//! entity, rewritten whole through a synced temporary file and a rename
//! (docs/FORMAT.md). With no quota set for a kind of traffic, recording it
//! is one atomic load.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};
use std::time::{Duration, Instant};

use kafka_protocol::ResponseError;

use super::shared::{Kind, Lines, SharedMetadata, diff};

/// The file in the data directory.
pub const FILE: &str = "client-quotas";

/// KIP-546's entity types.
pub const USER: &str = "user";
pub const CLIENT_ID: &str = "client-id";
/// Connection-rate quotas (KIP-612): refused by Sluice.
pub const IP: &str = "ip";

/// KIP-546's filter match types.
pub const MATCH_EXACT: i8 = 0;
pub const MATCH_DEFAULT: i8 = 1;
pub const MATCH_SPECIFIED: i8 = 2;

const INVALID_REQUEST: i16 = ResponseError::InvalidRequest.code();
const UNSUPPORTED_VERSION: i16 = ResponseError::UnsupportedVersion.code();
const UNKNOWN_SERVER_ERROR: i16 = ResponseError::UnknownServerError.code();

/// A refused entity or filter: (Kafka error code, message).
pub type Refusal = (i16, String);

fn invalid(message: String) -> Refusal {
    (INVALID_REQUEST, message)
}

/// How usage is measured (Kafka's `quota.window.num` and
/// `quota.window.size.seconds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaConfig {
    /// Samples kept, the one being filled included.
    pub window_num: u32,
    /// The span of one sample.
    pub window_size: Duration,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        QuotaConfig {
            window_num: 11,
            window_size: Duration::from_secs(1),
        }
    }
}

impl QuotaConfig {
    /// At least one sample of at least a millisecond.
    fn sane(self) -> QuotaConfig {
        QuotaConfig {
            window_num: self.window_num.max(1),
            window_size: self.window_size.max(Duration::from_millis(1)),
        }
    }

    /// How old a sample is when it stops counting.
    fn span(&self) -> Duration {
        self.window_size.saturating_mul(self.window_num)
    }
}

/// The quota keys of user and client-id entities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QuotaKey {
    /// Bytes per second of Produce requests.
    ProducerByteRate,
    /// Bytes per second of Fetch responses.
    ConsumerByteRate,
    /// Percent of one request handler thread's time.
    RequestPercentage,
    /// Partition mutations per second (KIP-599): stored, not enforced.
    ControllerMutationRate,
}

impl QuotaKey {
    pub const ALL: [QuotaKey; 4] = [
        QuotaKey::ProducerByteRate,
        QuotaKey::ConsumerByteRate,
        QuotaKey::RequestPercentage,
        QuotaKey::ControllerMutationRate,
    ];

    pub fn name(self) -> &'static str {
        match self {
            QuotaKey::ProducerByteRate => "producer_byte_rate",
            QuotaKey::ConsumerByteRate => "consumer_byte_rate",
            QuotaKey::RequestPercentage => "request_percentage",
            QuotaKey::ControllerMutationRate => "controller_mutation_rate",
        }
    }

    pub fn from_name(name: &str) -> Option<QuotaKey> {
        QuotaKey::ALL.into_iter().find(|k| k.name() == name)
    }

    fn index(self) -> usize {
        self as usize
    }

    /// Kafka declares the byte rates LONG: whole numbers only.
    fn integral(self) -> bool {
        matches!(
            self,
            QuotaKey::ProducerByteRate | QuotaKey::ConsumerByteRate
        )
    }

    /// Kafka's `validateQuotaKeyValue`, and no NaN or infinity.
    fn check(self, value: f64) -> Result<(), Refusal> {
        let name = self.name();
        if !value.is_finite() {
            return Err(invalid(format!("Quota {name} must be a finite number")));
        }
        if value <= 0.0 {
            return Err(invalid(format!("Quota {name} must be greater than 0")));
        }
        if self.integral() {
            if value > i64::MAX as f64 {
                return Err(invalid(format!(
                    "Proposed value for {name} is too large for a LONG."
                )));
            }
            if (value % 1.0).abs() > 1e-6 {
                return Err(invalid(format!("{name} cannot be a fractional value.")));
            }
        }
        Ok(())
    }
}

/// A quota entity: a user, a client id, or both. For each, `None` is
/// "not part of the entity", `Some(None)` the default (`<default>`) and
/// `Some(Some(name))` a named one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Entity {
    pub user: Option<Option<String>>,
    pub client_id: Option<Option<String>>,
}

impl Entity {
    /// `/config/users/<user>`, or `<default>` for None.
    pub fn user(name: Option<&str>) -> Entity {
        Entity {
            user: Some(name.map(str::to_string)),
            client_id: None,
        }
    }

    /// `/config/clients/<client-id>`, or `<default>` for None.
    pub fn client(name: Option<&str>) -> Entity {
        Entity {
            user: None,
            client_id: Some(name.map(str::to_string)),
        }
    }

    /// This user entity with a client id too.
    pub fn with_client(mut self, name: Option<&str>) -> Entity {
        self.client_id = Some(name.map(str::to_string));
        self
    }

    /// (entity type, name; None for the default), user first.
    pub fn components(&self) -> Vec<(&'static str, Option<&str>)> {
        let mut out = Vec::with_capacity(2);
        if let Some(u) = &self.user {
            out.push((USER, u.as_deref()));
        }
        if let Some(c) = &self.client_id {
            out.push((CLIENT_ID, c.as_deref()));
        }
        out
    }
}

impl std::fmt::Display for Entity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .components()
            .into_iter()
            .map(|(t, n)| format!("{t}={}", n.unwrap_or("<default>")))
            .collect();
        write!(f, "{}", parts.join(" "))
    }
}

/// One entity's quotas, by `QuotaKey::index`.
type Values = [Option<f64>; 4];

/// One change of AlterClientQuotas, as the request has it.
#[derive(Debug, Clone, PartialEq)]
pub struct Alteration {
    /// (entity type, name; None for the default entity of the type).
    pub entity: Vec<(String, Option<String>)>,
    /// (quota key, value; None removes the key).
    pub ops: Vec<(String, Option<f64>)>,
}

/// One component of a DescribeClientQuotas filter, as the request has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterComponent {
    pub entity_type: String,
    /// `MATCH_EXACT`, `MATCH_DEFAULT` or `MATCH_SPECIFIED`.
    pub match_type: i8,
    /// The name an exact match wants.
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Match {
    /// This name (None: the default).
    Exact(Option<String>),
    /// Any entity with a component of the type, named or default.
    Specified,
}

/// A checked DescribeClientQuotas filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaFilter {
    user: Option<Match>,
    client_id: Option<Match>,
    /// An `ip` component: no Sluice entity has one, so nothing matches.
    ip: bool,
    strict: bool,
}

impl QuotaFilter {
    /// Kafka's checks (`ClientQuotaControlManager.describeClientQuotas`):
    /// an empty or repeated entity type and an exact match without a name
    /// are INVALID_REQUEST, an entity type other than user, client-id and
    /// ip UNSUPPORTED_VERSION, ip with user or client-id INVALID_REQUEST.
    /// A name given with a default or specified match is ignored, as
    /// Kafka's request conversion ignores it.
    pub fn new(components: &[FilterComponent], strict: bool) -> Result<QuotaFilter, Refusal> {
        let mut filter = QuotaFilter {
            user: None,
            client_id: None,
            ip: false,
            strict,
        };
        let mut seen = BTreeSet::new();
        for c in components {
            let t = c.entity_type.as_str();
            if t.is_empty() {
                return Err(invalid("Invalid empty entity type.".into()));
            }
            if !seen.insert(t) {
                return Err(invalid(format!(
                    "Entity type {t} cannot appear more than once in the filter."
                )));
            }
            if ![USER, CLIENT_ID, IP].contains(&t) {
                return Err((UNSUPPORTED_VERSION, format!("Unsupported entity type {t}")));
            }
            let m = match c.match_type {
                MATCH_EXACT => match &c.name {
                    Some(n) => Match::Exact(Some(n.clone())),
                    None => {
                        return Err(invalid(
                            "Request specified MATCH_TYPE_EXACT, but set match string to null."
                                .into(),
                        ));
                    }
                },
                MATCH_DEFAULT => Match::Exact(None),
                MATCH_SPECIFIED => Match::Specified,
                other => return Err(invalid(format!("Unknown match type {other}"))),
            };
            match t {
                USER => filter.user = Some(m),
                CLIENT_ID => filter.client_id = Some(m),
                _ => filter.ip = true,
            }
        }
        if filter.ip && (filter.user.is_some() || filter.client_id.is_some()) {
            return Err(invalid(
                "Invalid entity filter component combination. IP filter component should not \
                 be used with user or clientId filter component."
                    .into(),
            ));
        }
        Ok(filter)
    }

    /// Every entity: no components, not strict.
    pub fn all() -> QuotaFilter {
        QuotaFilter {
            user: None,
            client_id: None,
            ip: false,
            strict: false,
        }
    }

    fn matches(&self, e: &Entity) -> bool {
        if self.ip {
            return false;
        }
        fn one(wanted: &Option<Match>, have: &Option<Option<String>>, strict: bool) -> bool {
            match (wanted, have) {
                (None, None) => true,
                // A component the filter does not name: only strict minds.
                (None, Some(_)) => !strict,
                (Some(_), None) => false,
                (Some(Match::Specified), Some(_)) => true,
                (Some(Match::Exact(name)), Some(have)) => name == have,
            }
        }
        one(&self.user, &e.user, self.strict) && one(&self.client_id, &e.client_id, self.strict)
    }
}

/// The quotas by precedence level, for lookups by `&str` on the request
/// path.
#[derive(Debug, Default)]
struct Index {
    user_client: HashMap<String, HashMap<String, Values>>,
    user_default_client: HashMap<String, Values>,
    user: HashMap<String, Values>,
    default_user_client: HashMap<String, Values>,
    default_user_default_client: Option<Values>,
    default_user: Option<Values>,
    client: HashMap<String, Values>,
    default_client: Option<Values>,
}

impl Index {
    fn build(entities: &BTreeMap<Entity, Values>) -> Index {
        let mut idx = Index::default();
        for (e, v) in entities {
            let v = *v;
            match (&e.user, &e.client_id) {
                (Some(Some(u)), Some(Some(c))) => {
                    idx.user_client
                        .entry(u.clone())
                        .or_default()
                        .insert(c.clone(), v);
                }
                (Some(Some(u)), Some(None)) => {
                    idx.user_default_client.insert(u.clone(), v);
                }
                (Some(Some(u)), None) => {
                    idx.user.insert(u.clone(), v);
                }
                (Some(None), Some(Some(c))) => {
                    idx.default_user_client.insert(c.clone(), v);
                }
                (Some(None), Some(None)) => idx.default_user_default_client = Some(v),
                (Some(None), None) => idx.default_user = Some(v),
                (None, Some(Some(c))) => {
                    idx.client.insert(c.clone(), v);
                }
                (None, Some(None)) => idx.default_client = Some(v),
                (None, None) => {}
            }
        }
        idx
    }

    /// The level (1–8) whose entity sets `key` for (user, client), and the
    /// value.
    fn resolve(&self, key: QuotaKey, user: &str, client: &str) -> Option<(u8, f64)> {
        let k = key.index();
        let get = |v: Option<&Values>| v.and_then(|v| v[k]);
        let levels = [
            get(self.user_client.get(user).and_then(|m| m.get(client))),
            get(self.user_default_client.get(user)),
            get(self.user.get(user)),
            get(self.default_user_client.get(client)),
            get(self.default_user_default_client.as_ref()),
            get(self.default_user.as_ref()),
            get(self.client.get(client)),
            get(self.default_client.as_ref()),
        ];
        levels
            .into_iter()
            .zip(1u8..)
            .find_map(|(v, level)| v.map(|v| (level, v)))
    }
}

/// The entities of a precedence level, for (user, client).
fn level_entity(level: u8, user: &str, client: &str) -> Entity {
    let (u, c) = (Some(user), Some(client));
    match level {
        1 => Entity::user(u).with_client(c),
        2 => Entity::user(u).with_client(None),
        3 => Entity::user(u),
        4 => Entity::user(None).with_client(c),
        5 => Entity::user(None).with_client(None),
        6 => Entity::user(None),
        7 => Entity::client(c),
        _ => Entity::client(None),
    }
}

/// What Kafka meters separately, each against its own key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Meter {
    Produce,
    Fetch,
    Request,
}

impl Meter {
    fn key(self) -> QuotaKey {
        match self {
            Meter::Produce => QuotaKey::ProducerByteRate,
            Meter::Fetch => QuotaKey::ConsumerByteRate,
            Meter::Request => QuotaKey::RequestPercentage,
        }
    }

    fn bit(self) -> u8 {
        1 << self.key().index()
    }
}

/// Whose usage a record counts against (Kafka's quota metric tags).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Budget {
    meter: Meter,
    user: Option<String>,
    client_id: Option<String>,
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    start: Instant,
    value: f64,
}

/// Kafka's `Rate` over a `SampledStat` (`WindowedSum`).
#[derive(Debug)]
struct Rate {
    samples: Vec<Sample>,
    current: usize,
    /// The latest record, for dropping budgets nobody uses.
    last: Instant,
}

impl Rate {
    fn new(now: Instant) -> Rate {
        Rate {
            samples: vec![Sample {
                start: now,
                value: 0.0,
            }],
            current: 0,
            last: now,
        }
    }

    /// Adds `value` to the current sample, moving to the next one (the
    /// oldest, reset) when the current one is a window old.
    fn record(&mut self, config: &QuotaConfig, value: f64, now: Instant) {
        self.last = self.last.max(now);
        let complete = self
            .samples
            .get(self.current)
            .is_none_or(|s| now.saturating_duration_since(s.start) >= config.window_size);
        if complete {
            self.current = (self.current + 1) % config.window_num as usize;
            let fresh = Sample {
                start: now,
                value: 0.0,
            };
            match self.samples.get_mut(self.current) {
                Some(s) => *s = fresh,
                None => {
                    self.samples.push(fresh);
                    self.current = self.samples.len() - 1;
                }
            }
        }
        if let Some(s) = self.samples.get_mut(self.current) {
            s.value += value;
        }
    }

    /// The rate per second and the window it was taken over (Kafka's
    /// `Rate.measure` and `Rate.windowSize`).
    fn measure(&mut self, config: &QuotaConfig, now: Instant) -> (f64, Duration) {
        let span = config.span();
        for s in &mut self.samples {
            if now.saturating_duration_since(s.start) >= span {
                *s = Sample {
                    start: now,
                    value: 0.0,
                };
            }
        }
        let total: f64 = self.samples.iter().map(|s| s.value).sum();
        let oldest = self.samples.iter().map(|s| s.start).min().unwrap_or(now);
        let mut window = now.saturating_duration_since(oldest);
        let full = window.as_nanos() / config.window_size.as_nanos();
        let min_full = u128::from(config.window_num - 1);
        if full < min_full {
            let missing = u32::try_from(min_full - full).unwrap_or(u32::MAX);
            window = window.saturating_add(config.window_size.saturating_mul(missing));
        }
        let window = window.max(Duration::from_millis(1));
        (total / window.as_secs_f64(), window)
    }
}

/// Kafka's `QuotaUtils.throttleTime`: `(rate − quota) / quota × window`,
/// rounded to a millisecond; zero within the quota.
fn throttle_time(rate: f64, quota: f64, window: Duration) -> Duration {
    if rate <= quota || quota <= 0.0 {
        return Duration::ZERO;
    }
    let ms = ((rate - quota) / quota * window.as_secs_f64() * 1000.0).round();
    // `as` saturates (and takes NaN to 0); the protocol's field is an i32.
    Duration::from_millis((ms as u64).min(i32::MAX as u64))
}

/// Nanoseconds of handler time as Kafka records them: percent-seconds of
/// one thread, so their rate per second is a percentage.
fn nanos_to_percent(nanos: u64) -> f64 {
    nanos as f64 * 100.0 / 1e9
}

/// Budgets below this many are never swept.
const SWEEP_MIN: usize = 1024;

#[derive(Debug)]
struct Meters {
    rates: HashMap<Budget, Rate>,
    /// Budgets idle for a whole span are dropped when a new one would
    /// take the count to this (they measure as a new one would).
    sweep_at: usize,
}

#[derive(Debug, Default)]
struct Snapshot {
    entities: BTreeMap<Entity, Values>,
    index: Index,
}

/// The client quotas: their settings, durable in `client-quotas` (or
/// only in memory), and the usage measured against them.
#[derive(Debug)]
pub struct Quotas {
    config: QuotaConfig,
    path: Option<PathBuf>,
    /// A bit per `Meter` (by key index), set while some entity sets its
    /// key: with the bit clear, recording is this one load.
    enabled: AtomicU8,
    snapshot: RwLock<Snapshot>,
    meters: Mutex<Meters>,
    /// One AlterClientQuotas at a time (held across the file write, which
    /// the request path never waits for).
    writer: Mutex<()>,
    /// In a cluster: where changes go instead of the file.
    shared: OnceLock<Arc<dyn SharedMetadata>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Quotas {
    /// No quotas, kept only in memory (tests, tools).
    pub fn new(config: QuotaConfig) -> Quotas {
        Quotas::with(config, None, BTreeMap::new())
    }

    /// Reads `dir/client-quotas` (none yet: no quotas). A line that does not
    /// parse refuses the file, naming the line.
    pub fn open(dir: &Path, config: QuotaConfig) -> io::Result<Quotas> {
        let path = dir.join(FILE);
        let entities = match std::fs::read_to_string(&path) {
            Ok(text) => parse_file(&text).map_err(|(n, why)| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: line {n} does not parse: {why}", path.display()),
                )
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e),
        };
        Ok(Quotas::with(config, Some(path), entities))
    }

    fn with(
        config: QuotaConfig,
        path: Option<PathBuf>,
        entities: BTreeMap<Entity, Values>,
    ) -> Quotas {
        let quotas = Quotas {
            config: config.sane(),
            path,
            enabled: AtomicU8::new(0),
            snapshot: RwLock::new(Snapshot::default()),
            meters: Mutex::new(Meters {
                rates: HashMap::new(),
                sweep_at: SWEEP_MIN,
            }),
            writer: Mutex::new(()),
            shared: OnceLock::new(),
        };
        quotas.set(entities);
        quotas
    }

    pub fn config(&self) -> QuotaConfig {
        self.config
    }

    /// Whether some entity sets `key`: one atomic load, for callers that
    /// would rather not read the clock when nothing is metered.
    pub fn any(&self, key: QuotaKey) -> bool {
        self.enabled.load(Ordering::Acquire) & (1 << key.index()) != 0
    }

    /// The quotas as lines by identity (what a cluster shares): an
    /// entity's line, by its entity fields.
    pub fn lines(&self) -> Lines {
        lines_of(
            &self
                .snapshot
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .entities,
        )
    }

    /// From now on changes go to `shared`, and the quotas are what
    /// [`install`](Self::install) gives; the file is left alone.
    pub fn share(&self, shared: Arc<dyn SharedMetadata>) {
        let _ = self.shared.set(shared);
    }

    /// Replaces the quotas with the cluster's. A line that does not parse
    /// is skipped with a warning.
    pub fn install(&self, lines: &Lines) {
        let mut entities = BTreeMap::new();
        for line in lines.values() {
            match parse_line(line) {
                Ok((entity, values)) => {
                    entities.insert(entity, values);
                }
                Err(why) => tracing::warn!("ignoring the client quota {line:?}: {why}"),
            }
        }
        self.set(entities);
    }

    fn set(&self, entities: BTreeMap<Entity, Values>) {
        let mut bits = 0u8;
        for v in entities.values() {
            for k in QuotaKey::ALL {
                if v[k.index()].is_some() {
                    bits |= 1 << k.index();
                }
            }
        }
        let index = Index::build(&entities);
        *self.snapshot.write().unwrap_or_else(|e| e.into_inner()) = Snapshot { entities, index };
        self.enabled.store(bits, Ordering::Release);
    }

    /// The quota on `key` for a request from `user` (the principal's name)
    /// with `client_id`, and the entity that sets it; None: unlimited.
    pub fn quota_for(&self, key: QuotaKey, user: &str, client_id: &str) -> Option<(Entity, f64)> {
        let snapshot = self.snapshot.read().unwrap_or_else(|e| e.into_inner());
        snapshot
            .index
            .resolve(key, user, client_id)
            .map(|(level, v)| (level_entity(level, user, client_id), v))
    }

    /// Records a Produce request's bytes; the throttle time (zero within
    /// the quota or without one).
    pub fn record_produce(
        &self,
        user: &str,
        client_id: &str,
        bytes: u64,
        now: Instant,
    ) -> Duration {
        self.record(Meter::Produce, user, client_id, bytes as f64, now, true)
    }

    /// Records a Fetch response's bytes; the throttle time.
    pub fn record_fetch(&self, user: &str, client_id: &str, bytes: u64, now: Instant) -> Duration {
        self.record(Meter::Fetch, user, client_id, bytes as f64, now, true)
    }

    /// Takes back a throttled Fetch's bytes: Kafka answers a throttled
    /// Fetch without records, so they do not count
    /// (`unrecordQuotaSensor`).
    pub fn unrecord_fetch(&self, user: &str, client_id: &str, bytes: u64, now: Instant) {
        self.record(Meter::Fetch, user, client_id, -(bytes as f64), now, false);
    }

    /// Records the time spent handling a request; the throttle time,
    /// at most one window (Kafka's `ClientRequestQuotaManager`).
    pub fn record_request_time(
        &self,
        user: &str,
        client_id: &str,
        nanos: u64,
        now: Instant,
    ) -> Duration {
        let value = nanos_to_percent(nanos);
        self.record(Meter::Request, user, client_id, value, now, true)
            .min(self.config.window_size)
    }

    /// The most a Fetch response may hold without being throttled whatever
    /// came before it (Kafka's `getMaxValueInQuotaWindow`: the quota over
    /// `window_num − 1` windows); None without a consumer quota.
    pub fn fetch_max_bytes(&self, user: &str, client_id: &str) -> Option<u64> {
        if self.enabled.load(Ordering::Acquire) & Meter::Fetch.bit() == 0 {
            return None;
        }
        let (_, quota) = self.quota_for(QuotaKey::ConsumerByteRate, user, client_id)?;
        let windows = f64::from(self.config.window_num - 1) * self.config.window_size.as_secs_f64();
        Some((quota * windows) as u64)
    }

    fn record(
        &self,
        meter: Meter,
        user: &str,
        client_id: &str,
        value: f64,
        now: Instant,
        check: bool,
    ) -> Duration {
        if self.enabled.load(Ordering::Acquire) & meter.bit() == 0 {
            return Duration::ZERO;
        }
        let Some((level, quota)) = self
            .snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .index
            .resolve(meter.key(), user, client_id)
        else {
            return Duration::ZERO;
        };
        let budget = Budget {
            meter,
            user: (level <= 6).then(|| user.to_string()),
            client_id: matches!(level, 1 | 2 | 4 | 5 | 7 | 8).then(|| client_id.to_string()),
        };
        let config = self.config;
        let mut meters = lock(&self.meters);
        if !meters.rates.contains_key(&budget) && meters.rates.len() >= meters.sweep_at {
            let span = config.span();
            meters
                .rates
                .retain(|_, r| now.saturating_duration_since(r.last) < span);
            meters.sweep_at = (meters.rates.len() * 2).max(SWEEP_MIN);
        }
        let rate = meters.rates.entry(budget).or_insert_with(|| Rate::new(now));
        rate.record(&config, value, now);
        if !check {
            return Duration::ZERO;
        }
        let (observed, window) = rate.measure(&config, now);
        throttle_time(observed, quota, window)
    }

    /// The budgets being measured (tests).
    #[cfg(test)]
    fn budgets(&self) -> usize {
        lock(&self.meters).rates.len()
    }

    /// The entities the filter matches, with their quotas by key name.
    pub fn describe(&self, filter: &QuotaFilter) -> Vec<(Entity, Vec<(String, f64)>)> {
        let snapshot = self.snapshot.read().unwrap_or_else(|e| e.into_inner());
        snapshot
            .entities
            .iter()
            .filter(|(e, _)| filter.matches(e))
            .map(|(e, v)| {
                let values = QuotaKey::ALL
                    .into_iter()
                    .filter_map(|k| v[k.index()].map(|x| (k.name().to_string(), x)))
                    .collect();
                (e.clone(), values)
            })
            .collect()
    }

    /// Applies AlterClientQuotas' entries, each on its own (one refused
    /// entry leaves the others), and writes the file once; with
    /// `validate_only`, only checks them. An entity must have a user or a
    /// client-id component, or both, each once, and no empty name; `ip`
    /// entities are refused (INVALID_REQUEST: Sluice has no connection-rate
    /// quotas), as are other types, a key given twice, an entity given
    /// twice, an unknown key and a value Kafka refuses (not above 0, a
    /// fraction for a byte rate). Removing a key the entity does not have
    /// does nothing, as in Kafka (which does not check removed keys).
    pub fn alter(&self, entries: &[Alteration], validate_only: bool) -> Vec<Result<(), Refusal>> {
        let _writer = lock(&self.writer);
        let current = self
            .snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .entities
            .clone();
        let mut next = current.clone();
        let mut seen = BTreeSet::new();
        let mut results = Vec::with_capacity(entries.len());
        for entry in entries {
            let result = entity_of(&entry.entity).and_then(|entity| {
                if !seen.insert(entity.clone()) {
                    return Err(invalid(format!("Ignoring duplicate entity {entity}")));
                }
                let ops = checked_ops(&entry.ops, &entity)?;
                let mut values = next.get(&entity).copied().unwrap_or_default();
                for (key, value) in ops {
                    values[key.index()] = value;
                }
                if values.iter().all(Option::is_none) {
                    next.remove(&entity);
                } else {
                    next.insert(entity, values);
                }
                Ok(())
            });
            results.push(result);
        }
        if validate_only || next == current {
            return results;
        }
        let written = match self.shared.get() {
            Some(shared) => {
                let (puts, deletes) = diff(&lines_of(&current), &lines_of(&next));
                shared.write(Kind::Quotas, puts, deletes)
            }
            None => Ok(()),
        };
        if let Err(e) = written {
            tracing::error!("writing the client quotas to the cluster: {e}");
            let why = format!("writing the client quotas to the cluster: {e}");
            return results
                .into_iter()
                .map(|r| r.and_then(|()| Err((UNKNOWN_SERVER_ERROR, why.clone()))))
                .collect();
        }
        if self.shared.get().is_some() {
            return results;
        }
        if let Some(path) = &self.path
            && let Err(e) = write_file(path, &next)
        {
            tracing::error!("writing {}: {e}", path.display());
            let why = format!("writing {FILE}: {e}");
            return results
                .into_iter()
                .map(|r| r.and_then(|()| Err((UNKNOWN_SERVER_ERROR, why.clone()))))
                .collect();
        }
        self.set(next);
        results
    }
}

/// An AlterClientQuotas entity (Kafka's `validateEntity` and
/// `configKeysForEntityType`).
fn entity_of(components: &[(String, Option<String>)]) -> Result<Entity, Refusal> {
    if components.is_empty() {
        return Err(invalid("Invalid empty client quota entity".into()));
    }
    let mut entity = Entity::default();
    let mut ip = false;
    for (t, name) in components {
        let duplicate = || {
            invalid(format!(
                "Invalid client quota entity, duplicate entity entry {t}"
            ))
        };
        match t.as_str() {
            USER if entity.user.is_some() => return Err(duplicate()),
            USER => entity.user = Some(name.clone()),
            CLIENT_ID if entity.client_id.is_some() => return Err(duplicate()),
            CLIENT_ID => entity.client_id = Some(name.clone()),
            IP if ip => return Err(duplicate()),
            IP => ip = true,
            other => {
                return Err(invalid(format!(
                    "Unhandled client quota entity type: {other}"
                )));
            }
        }
        if name.as_deref() == Some("") {
            return Err(invalid(format!("Empty {t} not supported")));
        }
    }
    if ip {
        if entity.user.is_some() || entity.client_id.is_some() {
            return Err(invalid(
                "Invalid quota entity combination, IP entity should not be combined with User \
                 or ClientId"
                    .into(),
            ));
        }
        return Err(invalid(
            "ip quotas (connection_creation_rate) are not supported by this broker".into(),
        ));
    }
    Ok(entity)
}

/// An entry's ops as (key, new value or None to remove); a key named twice,
/// an unknown key or a refused value refuses the entry.
fn checked_ops(
    ops: &[(String, Option<f64>)],
    entity: &Entity,
) -> Result<Vec<(QuotaKey, Option<f64>)>, Refusal> {
    let mut named = BTreeSet::new();
    let mut out = Vec::with_capacity(ops.len());
    for (key, value) in ops {
        if !named.insert(key.as_str()) {
            return Err(invalid(format!(
                "Duplicate quota key {key} not updating quota for this entity {entity}"
            )));
        }
        let known = QuotaKey::from_name(key);
        match (known, value) {
            // Kafka removes without checking the key.
            (None, None) => {}
            (Some(k), None) => out.push((k, None)),
            (None, Some(_)) => return Err(invalid(format!("Invalid configuration key {key}"))),
            (Some(k), Some(v)) => {
                k.check(*v)?;
                out.push((k, Some(*v)));
            }
        }
    }
    Ok(out)
}

// The file: one line per entity, sorted,
// `user=<name> client-id=<name> <key>=<value> …`, `<default>` for a default
// name and names percent-encoded.

const DEFAULT_NAME: &str = "<default>";

/// Whether `b` is written as itself in a name.
fn plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~@:+,/!$&'()*;".contains(&b)
}

fn encode_name(name: &Option<String>) -> String {
    let Some(name) = name else {
        return DEFAULT_NAME.to_string();
    };
    let mut out = String::with_capacity(name.len());
    for &b in name.as_bytes() {
        if plain(b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn decode_name(text: &str) -> Result<Option<String>, String> {
    if text == DEFAULT_NAME {
        return Ok(None);
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad escape in {text:?}"))?;
            out.push(hex);
            i += 3;
        } else if plain(b) {
            out.push(b);
            i += 1;
        } else {
            return Err(format!("{text:?} holds a character names are escaped for"));
        }
    }
    if out.is_empty() {
        return Err("an empty name".into());
    }
    String::from_utf8(out)
        .map(Some)
        .map_err(|_| format!("{text:?} is not UTF-8"))
}

/// An entity's fields in a line (its identity among the shared lines).
fn entity_fields(e: &Entity) -> Vec<String> {
    let mut fields = Vec::new();
    if let Some(u) = &e.user {
        fields.push(format!("{USER}={}", encode_name(u)));
    }
    if let Some(c) = &e.client_id {
        fields.push(format!("{CLIENT_ID}={}", encode_name(c)));
    }
    fields
}

fn entity_line(e: &Entity, v: &Values) -> String {
    let mut fields = entity_fields(e);
    for k in QuotaKey::ALL {
        if let Some(x) = v[k.index()] {
            // Rust's shortest form that reads back as the same f64.
            fields.push(format!("{}={x}", k.name()));
        }
    }
    fields.join(" ")
}

fn lines_of(entities: &BTreeMap<Entity, Values>) -> Lines {
    entities
        .iter()
        .map(|(e, v)| (entity_fields(e).join(" "), entity_line(e, v)))
        .collect()
}

fn file_text(entities: &BTreeMap<Entity, Values>) -> String {
    let mut text = String::from(
        "# Client quotas, written by sluice (DescribeClientQuotas / AlterClientQuotas).\n",
    );
    for (e, v) in entities {
        text.push_str(&entity_line(e, v));
        text.push('\n');
    }
    text
}

/// The entities of a file; a bad line as (its number, why).
fn parse_file(text: &str) -> Result<BTreeMap<Entity, Values>, (usize, String)> {
    let mut entities = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (entity, values) = parse_line(line).map_err(|why| (n + 1, why))?;
        if entities.insert(entity, values).is_some() {
            return Err((n + 1, "an entity given twice".into()));
        }
    }
    Ok(entities)
}

fn parse_line(line: &str) -> Result<(Entity, Values), String> {
    let mut entity = Entity::default();
    let mut values: Values = [None; 4];
    for field in line.split(' ') {
        let (name, value) = field
            .split_once('=')
            .ok_or_else(|| format!("{field:?} is not NAME=VALUE"))?;
        match name {
            USER if entity.user.is_none() => entity.user = Some(decode_name(value)?),
            CLIENT_ID if entity.client_id.is_none() => {
                entity.client_id = Some(decode_name(value)?);
            }
            _ => {
                let key = QuotaKey::from_name(name)
                    .ok_or_else(|| format!("{name:?} is not a quota key or entity type"))?;
                if values[key.index()].is_some() {
                    return Err(format!("{name} given twice"));
                }
                let x: f64 = value
                    .parse()
                    .map_err(|_| format!("{value:?} is not a number"))?;
                key.check(x).map_err(|(_, why)| why)?;
                values[key.index()] = Some(x);
            }
        }
    }
    if entity.user.is_none() && entity.client_id.is_none() {
        return Err("no user or client-id".into());
    }
    if values.iter().all(Option::is_none) {
        return Err("no quota".into());
    }
    Ok((entity, values))
}

/// Rewrites the file whole: a synced temporary file renamed over it, then
/// the directory synced.
fn write_file(path: &Path, entities: &BTreeMap<Entity, Values>) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(file_text(entities).as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(entity: &[(&str, Option<&str>)], ops: &[(&str, Option<f64>)]) -> Alteration {
        Alteration {
            entity: entity
                .iter()
                .map(|(t, n)| (t.to_string(), n.map(str::to_string)))
                .collect(),
            ops: ops.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        }
    }

    fn ok(q: &Quotas, entries: &[Alteration]) {
        for r in q.alter(entries, false) {
            r.expect("altered");
        }
    }

    const PRODUCE: &str = "producer_byte_rate";
    const FETCH: &str = "consumer_byte_rate";
    const REQUEST: &str = "request_percentage";

    fn quotas() -> Quotas {
        Quotas::new(QuotaConfig::default())
    }

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn each_of_the_eight_levels_takes_precedence_over_those_below_it() {
        let q = quotas();
        let levels: [&[(&str, Option<&str>)]; 8] = [
            &[(USER, Some("alice")), (CLIENT_ID, Some("app"))],
            &[(USER, Some("alice")), (CLIENT_ID, None)],
            &[(USER, Some("alice"))],
            &[(USER, None), (CLIENT_ID, Some("app"))],
            &[(USER, None), (CLIENT_ID, None)],
            &[(USER, None)],
            &[(CLIENT_ID, Some("app"))],
            &[(CLIENT_ID, None)],
        ];
        for (i, entity) in levels.iter().enumerate() {
            ok(
                &q,
                &[set(entity, &[(PRODUCE, Some(1000.0 * (i + 1) as f64))])],
            );
        }
        let expected = [
            Entity::user(Some("alice")).with_client(Some("app")),
            Entity::user(Some("alice")).with_client(None),
            Entity::user(Some("alice")),
            Entity::user(None).with_client(Some("app")),
            Entity::user(None).with_client(None),
            Entity::user(None),
            Entity::client(Some("app")),
            Entity::client(None),
        ];
        for (i, entity) in levels.iter().enumerate() {
            let (got, value) = q
                .quota_for(QuotaKey::ProducerByteRate, "alice", "app")
                .expect("a quota");
            assert_eq!(got, expected[i], "level {}", i + 1);
            assert_eq!(value, 1000.0 * (i + 1) as f64);
            // Other users and clients fall through the named levels.
            if i == 0 {
                let (other, _) = q
                    .quota_for(QuotaKey::ProducerByteRate, "bob", "other")
                    .expect("a default");
                assert_eq!(other, Entity::user(None).with_client(None));
            }
            ok(&q, &[set(entity, &[(PRODUCE, None)])]);
        }
        assert_eq!(
            q.quota_for(QuotaKey::ProducerByteRate, "alice", "app"),
            None
        );
        assert!(q.describe(&QuotaFilter::all()).is_empty());
    }

    #[test]
    fn each_key_is_resolved_on_its_own() {
        let q = quotas();
        ok(
            &q,
            &[
                set(
                    &[(USER, Some("alice")), (CLIENT_ID, Some("app"))],
                    &[(FETCH, Some(10.0))],
                ),
                set(
                    &[(CLIENT_ID, None)],
                    &[(PRODUCE, Some(20.0)), (REQUEST, Some(5.0))],
                ),
            ],
        );
        let produce = q.quota_for(QuotaKey::ProducerByteRate, "alice", "app");
        assert_eq!(produce, Some((Entity::client(None), 20.0)));
        let fetch = q.quota_for(QuotaKey::ConsumerByteRate, "alice", "app");
        assert_eq!(
            fetch,
            Some((Entity::user(Some("alice")).with_client(Some("app")), 10.0))
        );
        assert_eq!(q.quota_for(QuotaKey::ConsumerByteRate, "alice", "x"), None);
    }

    #[test]
    fn nothing_configured_is_never_throttled_and_measures_nothing() {
        let q = quotas();
        let t0 = Instant::now();
        assert_eq!(q.record_produce("a", "c", u64::MAX, t0), Duration::ZERO);
        assert_eq!(q.record_fetch("a", "c", u64::MAX, t0), Duration::ZERO);
        assert_eq!(
            q.record_request_time("a", "c", u64::MAX, t0),
            Duration::ZERO
        );
        assert_eq!(q.budgets(), 0);
        assert!(QuotaKey::ALL.into_iter().all(|k| !q.any(k)));
        // A consumer quota does not meter producers.
        ok(&q, &[set(&[(USER, None)], &[(FETCH, Some(1.0))])]);
        assert!(q.any(QuotaKey::ConsumerByteRate) && !q.any(QuotaKey::ProducerByteRate));
        assert_eq!(q.record_produce("a", "c", 1 << 40, t0), Duration::ZERO);
        assert_eq!(q.budgets(), 0);
        assert_eq!(q.fetch_max_bytes("a", "c"), Some(10));
    }

    #[test]
    fn throttle_time_is_kafkas_formula_over_the_window() {
        let q = quotas();
        ok(
            &q,
            &[set(&[(USER, Some("alice"))], &[(PRODUCE, Some(1000.0))])],
        );
        let t0 = Instant::now();
        // First record: the window is taken as 10 whole windows (10 s);
        // 5000 B / 10 s = 500 B/s, within 1000.
        assert_eq!(q.record_produce("alice", "c", 5000, t0), Duration::ZERO);
        // 12000 B / 10 s = 1200 B/s: (1200 - 1000) / 1000 × 10 s = 2 s.
        assert_eq!(
            q.record_produce("alice", "c", 7000, at(t0, 0)),
            Duration::from_millis(2000)
        );
        // At 10.5 s the window is 10.5 s (more than 10 whole windows):
        // 12000 + 1650 = 13650 B / 10.5 s = 1300 B/s →
        // 0.3 × 10.5 s = 3.15 s.
        assert_eq!(
            q.record_produce("alice", "c", 1650, at(t0, 10_500)),
            Duration::from_millis(3150)
        );
        // At 11 s the first sample (12000 B) has rolled off; what is left,
        // 1650 + 1000 B, over 0.5 s since the oldest sample plus 10 windows
        // is 252 B/s.
        assert_eq!(
            q.record_produce("alice", "c", 1000, at(t0, 11_000)),
            Duration::ZERO
        );
        // 2650 + 9850 = 12500 B; oldest sample from 10.5 s, so the window is
        // 0.5 s + 10 windows = 10.5 s: 1190.476 B/s →
        // 0.190476 × 10500 ms = 2000 ms.
        assert_eq!(
            q.record_produce("alice", "c", 9850, at(t0, 11_000)),
            Duration::from_millis(2000)
        );
        // Long after, nothing counts any more.
        assert_eq!(
            q.record_produce("alice", "c", 1000, at(t0, 60_000)),
            Duration::ZERO
        );
    }

    #[test]
    fn a_small_window_configuration_is_measured_with_its_own_windows() {
        let q = Quotas::new(QuotaConfig {
            window_num: 3,
            window_size: Duration::from_millis(500),
        });
        ok(&q, &[set(&[(CLIENT_ID, None)], &[(FETCH, Some(100.0))])]);
        let t0 = Instant::now();
        // 300 B over the minimum 2 × 0.5 s: 300 B/s → 2 × 1 s = 2 s.
        assert_eq!(
            q.record_fetch("u", "c", 300, t0),
            Duration::from_millis(2000)
        );
        // 1.5 s later the sample has rolled off.
        assert_eq!(q.record_fetch("u", "c", 50, at(t0, 1500)), Duration::ZERO);
        // Taking back bytes (a throttled fetch) makes room again.
        assert_eq!(
            q.record_fetch("u", "c", 250, at(t0, 1500)),
            Duration::from_millis(2000)
        );
        q.unrecord_fetch("u", "c", 250, at(t0, 1500));
        assert_eq!(q.record_fetch("u", "c", 0, at(t0, 1500)), Duration::ZERO);
        assert_eq!(q.fetch_max_bytes("u", "c"), Some(100));
    }

    #[test]
    fn a_user_quota_is_one_budget_for_all_its_clients_and_a_default_one_per_user() {
        let q = quotas();
        ok(
            &q,
            &[
                set(&[(USER, Some("alice"))], &[(PRODUCE, Some(1000.0))]),
                set(&[(USER, None)], &[(PRODUCE, Some(1000.0))]),
            ],
        );
        let t0 = Instant::now();
        assert_eq!(q.record_produce("alice", "a", 6000, t0), Duration::ZERO);
        // Another client id of alice's shares the 1000 B/s.
        assert_eq!(
            q.record_produce("alice", "b", 6000, t0),
            Duration::from_millis(2000)
        );
        // bob and carol come under the default user quota, each with a
        // budget of their own.
        assert_eq!(q.record_produce("bob", "a", 6000, t0), Duration::ZERO);
        assert_eq!(q.record_produce("carol", "a", 6000, t0), Duration::ZERO);
        assert_eq!(
            q.record_produce("bob", "b", 6000, t0),
            Duration::from_millis(2000)
        );
        assert_eq!(q.budgets(), 3);
    }

    #[test]
    fn client_quotas_are_per_client_id_and_user_client_quotas_per_pair() {
        let q = quotas();
        ok(
            &q,
            &[
                set(&[(CLIENT_ID, None)], &[(PRODUCE, Some(1000.0))]),
                set(&[(USER, None), (CLIENT_ID, None)], &[(FETCH, Some(1000.0))]),
            ],
        );
        let t0 = Instant::now();
        // The client-id budget is shared by every user of the client id.
        assert_eq!(q.record_produce("u1", "app", 6000, t0), Duration::ZERO);
        assert!(q.record_produce("u2", "app", 6000, t0) > Duration::ZERO);
        // The (user, client) budget is not.
        assert_eq!(q.record_fetch("u1", "app", 6000, t0), Duration::ZERO);
        assert_eq!(q.record_fetch("u2", "app", 6000, t0), Duration::ZERO);
        assert!(q.record_fetch("u2", "app", 6000, t0) > Duration::ZERO);
    }

    #[test]
    fn request_time_is_a_percentage_of_one_thread_capped_at_one_window() {
        let q = quotas();
        ok(
            &q,
            &[set(&[(USER, Some("alice"))], &[(REQUEST, Some(10.0))])],
        );
        let t0 = Instant::now();
        // 1 s of handler time over 10 s is 10 %: within.
        assert_eq!(
            q.record_request_time("alice", "c", 1_000_000_000, t0),
            Duration::ZERO
        );
        // 1.05 s: 10.5 % → 0.05 × 10 s = 500 ms.
        assert_eq!(
            q.record_request_time("alice", "c", 50_000_000, t0),
            Duration::from_millis(500)
        );
        // 1.5 s: 15 % → 5 s, capped at the 1 s window.
        assert_eq!(
            q.record_request_time("alice", "c", 450_000_000, t0),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn idle_budgets_are_dropped_once_they_are_many() {
        let q = quotas();
        ok(&q, &[set(&[(CLIENT_ID, None)], &[(PRODUCE, Some(1000.0))])]);
        let t0 = Instant::now();
        for i in 0..SWEEP_MIN {
            q.record_produce("u", &format!("c{i}"), 1, t0);
        }
        assert_eq!(q.budgets(), SWEEP_MIN);
        q.record_produce("u", "c0", 1, at(t0, 5_000));
        // A new budget 12 s on: all but c0 (used 7 s ago) have gone.
        q.record_produce("u", "new", 1, at(t0, 12_000));
        assert_eq!(q.budgets(), 2);
    }

    fn describe(q: &Quotas, components: &[(&str, i8, Option<&str>)], strict: bool) -> Vec<String> {
        let components: Vec<FilterComponent> = components
            .iter()
            .map(|(t, m, n)| FilterComponent {
                entity_type: t.to_string(),
                match_type: *m,
                name: n.map(str::to_string),
            })
            .collect();
        let filter = QuotaFilter::new(&components, strict).expect("filter");
        q.describe(&filter)
            .into_iter()
            .map(|(e, _)| e.to_string())
            .collect()
    }

    #[test]
    fn describe_filters_as_kip_546_says() {
        let q = quotas();
        let one = [(PRODUCE, Some(1.0))];
        ok(
            &q,
            &[
                set(&[(USER, Some("alice"))], &one),
                set(&[(USER, None)], &one),
                set(&[(USER, Some("alice")), (CLIENT_ID, Some("app"))], &one),
                set(&[(USER, None), (CLIENT_ID, None)], &one),
                set(&[(CLIENT_ID, Some("app"))], &one),
                set(&[(CLIENT_ID, None)], &one),
            ],
        );
        let all = describe(&q, &[], false);
        assert_eq!(all.len(), 6);
        assert!(describe(&q, &[], true).is_empty());
        assert_eq!(
            describe(&q, &[(USER, MATCH_EXACT, Some("alice"))], false),
            ["user=alice", "user=alice client-id=app"]
        );
        assert_eq!(
            describe(&q, &[(USER, MATCH_EXACT, Some("alice"))], true),
            ["user=alice"]
        );
        assert_eq!(
            describe(&q, &[(USER, MATCH_DEFAULT, None)], false),
            ["user=<default>", "user=<default> client-id=<default>"]
        );
        // Specified: any entity with a user, named or default.
        assert_eq!(
            describe(&q, &[(USER, MATCH_SPECIFIED, None)], true),
            ["user=<default>", "user=alice"]
        );
        assert_eq!(
            describe(&q, &[(CLIENT_ID, MATCH_SPECIFIED, None)], false).len(),
            4
        );
        assert_eq!(
            describe(
                &q,
                &[
                    (USER, MATCH_SPECIFIED, None),
                    (CLIENT_ID, MATCH_DEFAULT, None)
                ],
                true
            ),
            ["user=<default> client-id=<default>"]
        );
        assert_eq!(
            describe(&q, &[(CLIENT_ID, MATCH_EXACT, Some("app"))], true),
            ["client-id=app"]
        );
        assert!(describe(&q, &[("ip", MATCH_SPECIFIED, None)], false).is_empty());
        // Refused filters.
        let refused = |c: &[(&str, i8, Option<&str>)]| {
            let c: Vec<FilterComponent> = c
                .iter()
                .map(|(t, m, n)| FilterComponent {
                    entity_type: t.to_string(),
                    match_type: *m,
                    name: n.map(str::to_string),
                })
                .collect();
            QuotaFilter::new(&c, false).expect_err("refused").0
        };
        assert_eq!(refused(&[(USER, MATCH_EXACT, None)]), INVALID_REQUEST);
        assert_eq!(refused(&[("", MATCH_DEFAULT, None)]), INVALID_REQUEST);
        assert_eq!(
            refused(&[(USER, MATCH_DEFAULT, None), (USER, MATCH_SPECIFIED, None)]),
            INVALID_REQUEST
        );
        assert_eq!(
            refused(&[("topic", MATCH_DEFAULT, None)]),
            UNSUPPORTED_VERSION
        );
        assert_eq!(refused(&[(USER, 7, None)]), INVALID_REQUEST);
        assert_eq!(
            refused(&[(IP, MATCH_DEFAULT, None), (USER, MATCH_DEFAULT, None)]),
            INVALID_REQUEST
        );
    }

    #[test]
    fn alter_refuses_what_kafka_refuses_entry_by_entry() {
        let q = quotas();
        let code =
            |entity: &[(&str, Option<&str>)], ops: &[(&str, Option<f64>)]| -> Result<(), i16> {
                q.alter(&[set(entity, ops)], false)
                    .remove(0)
                    .map_err(|(c, _)| c)
            };
        let alice: &[(&str, Option<&str>)] = &[(USER, Some("alice"))];
        assert_eq!(code(alice, &[("bogus", Some(1.0))]), Err(INVALID_REQUEST));
        assert_eq!(code(alice, &[(PRODUCE, Some(0.0))]), Err(INVALID_REQUEST));
        assert_eq!(code(alice, &[(PRODUCE, Some(-5.0))]), Err(INVALID_REQUEST));
        assert_eq!(code(alice, &[(PRODUCE, Some(1.5))]), Err(INVALID_REQUEST));
        assert_eq!(
            code(alice, &[(REQUEST, Some(f64::NAN))]),
            Err(INVALID_REQUEST)
        );
        assert_eq!(
            code(alice, &[(REQUEST, Some(f64::INFINITY))]),
            Err(INVALID_REQUEST)
        );
        assert_eq!(
            code(alice, &[(PRODUCE, Some(1.0)), (PRODUCE, None)]),
            Err(INVALID_REQUEST)
        );
        assert_eq!(code(&[], &[(PRODUCE, Some(1.0))]), Err(INVALID_REQUEST));
        assert_eq!(
            code(&[(USER, Some(""))], &[(PRODUCE, Some(1.0))]),
            Err(INVALID_REQUEST)
        );
        assert_eq!(
            code(&[(USER, None), (USER, Some("a"))], &[(PRODUCE, Some(1.0))]),
            Err(INVALID_REQUEST)
        );
        assert_eq!(
            code(&[(IP, None)], &[(PRODUCE, Some(1.0))]),
            Err(INVALID_REQUEST)
        );
        assert_eq!(
            code(&[("group", None)], &[(PRODUCE, Some(1.0))]),
            Err(INVALID_REQUEST)
        );
        assert!(q.describe(&QuotaFilter::all()).is_empty());
        // Fractions are fine for a percentage and the mutation rate; removing
        // a key never set (even an unknown one) does nothing.
        assert_eq!(
            code(
                alice,
                &[
                    (REQUEST, Some(12.5)),
                    ("controller_mutation_rate", Some(0.5)),
                    (FETCH, None),
                    ("bogus", None)
                ]
            ),
            Ok(())
        );
        // One refused entry leaves the others; an entity twice is refused.
        let results = q.alter(
            &[
                set(&[(CLIENT_ID, None)], &[(PRODUCE, Some(100.0))]),
                set(&[(CLIENT_ID, Some("x"))], &[(PRODUCE, Some(-1.0))]),
                set(&[(CLIENT_ID, None)], &[(FETCH, Some(100.0))]),
            ],
            false,
        );
        assert!(results[0].is_ok() && results[1].is_err());
        assert_eq!(results[2].as_ref().map_err(|e| e.0), Err(INVALID_REQUEST));
        let described = q.describe(&QuotaFilter::all());
        assert_eq!(
            described,
            vec![
                (Entity::client(None), vec![(PRODUCE.to_string(), 100.0)]),
                (
                    Entity::user(Some("alice")),
                    vec![
                        ("request_percentage".to_string(), 12.5),
                        ("controller_mutation_rate".to_string(), 0.5)
                    ]
                ),
            ]
        );
        // validate_only checks and changes nothing.
        let results = q.alter(&[set(alice, &[(REQUEST, None)])], true);
        assert!(results[0].is_ok());
        assert_eq!(q.describe(&QuotaFilter::all()), described);
        // Removing the last key removes the entity.
        ok(
            &q,
            &[set(
                alice,
                &[(REQUEST, None), ("controller_mutation_rate", None)],
            )],
        );
        assert_eq!(q.describe(&QuotaFilter::all()).len(), 1);
    }

    #[test]
    fn quotas_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let q = Quotas::open(dir.path(), QuotaConfig::default()).unwrap();
        ok(
            &q,
            &[
                set(
                    &[(USER, Some("CN=client,O=Sluice"))],
                    &[(PRODUCE, Some(1048576.0))],
                ),
                set(
                    &[(USER, Some("<default>")), (CLIENT_ID, None)],
                    &[(FETCH, Some(2e9)), (REQUEST, Some(0.1))],
                ),
                set(
                    &[(CLIENT_ID, Some("tab\there é"))],
                    &[(REQUEST, Some(33.25))],
                ),
                set(&[(USER, None)], &[("controller_mutation_rate", Some(7.0))]),
            ],
        );
        let text = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert!(
            text.contains("user=CN%3Dclient,O%3DSluice producer_byte_rate=1048576\n"),
            "{text}"
        );
        assert!(
            text.contains("user=%3Cdefault%3E client-id=<default> consumer_byte_rate=2000000000 request_percentage=0.1\n"),
            "{text}"
        );
        assert!(
            text.contains("client-id=tab%09here%20%C3%A9 request_percentage=33.25\n"),
            "{text}"
        );
        let again = Quotas::open(dir.path(), QuotaConfig::default()).unwrap();
        assert_eq!(
            again.describe(&QuotaFilter::all()),
            q.describe(&QuotaFilter::all())
        );
        assert_eq!(again.describe(&QuotaFilter::all()).len(), 4);
        // A literal "<default>" user is not the default user.
        assert_eq!(
            again.quota_for(QuotaKey::ConsumerByteRate, "<default>", "any"),
            Some((Entity::user(Some("<default>")).with_client(None), 2e9))
        );
        assert_eq!(
            again.quota_for(QuotaKey::ConsumerByteRate, "bob", "any"),
            None
        );
        assert!(!dir.path().join("client-quotas.tmp").exists());
        // Enforced after the reopen.
        let t0 = Instant::now();
        assert!(again.record_produce("CN=client,O=Sluice", "c", 20 << 20, t0) > Duration::ZERO);
    }

    #[test]
    fn a_damaged_file_is_refused_with_its_line() {
        for bad in [
            "user=alice producer_byte_rate=abc\n",
            "user=alice\n",
            "producer_byte_rate=5\n",
            "user=alice bogus=5\n",
            "user=alice producer_byte_rate=-5\n",
            "user=al%ZZice producer_byte_rate=5\n",
            "user=al ice producer_byte_rate=5\n",
            "user=alice producer_byte_rate=5 producer_byte_rate=6\n",
            "user=alice user=bob producer_byte_rate=5\n",
        ] {
            let dir = tempfile::tempdir().unwrap();
            let text = format!("# header\nclient-id=ok request_percentage=5\n{bad}");
            std::fs::write(dir.path().join(FILE), text).unwrap();
            let err = Quotas::open(dir.path(), QuotaConfig::default()).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData);
            assert!(err.to_string().contains("line 3"), "{bad}: {err}");
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(FILE),
            "user=a producer_byte_rate=5\nuser=a consumer_byte_rate=5\n",
        )
        .unwrap();
        let err = Quotas::open(dir.path(), QuotaConfig::default()).unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
    }

    #[test]
    fn a_failed_write_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let q = Quotas::open(&dir.path().join("missing"), QuotaConfig::default()).unwrap();
        let results = q.alter(&[set(&[(USER, None)], &[(PRODUCE, Some(1.0))])], false);
        assert_eq!(
            results[0].as_ref().map_err(|e| e.0),
            Err(UNKNOWN_SERVER_ERROR)
        );
        assert!(q.describe(&QuotaFilter::all()).is_empty());
        assert_eq!(
            q.record_produce("u", "c", 1 << 30, Instant::now()),
            Duration::ZERO
        );
    }
}
