//! Kafka's ACLs: the bindings (`Topic:LITERAL:orders`, `User:alice` may
//! `Read` from host `*`), the filters DescribeAcls and DeleteAcls match them
//! with, the durable store (`acls` in the data directory) and the
//! [`Authorizer`] that answers "may this principal do this to that" with
//! Kafka's `StandardAuthorizer` semantics.
//!
//! File format, one line per binding, sorted:
//! `<resource type> <TAB> <pattern type> <TAB> <resource name> <TAB>
//! <principal> <TAB> <host> <TAB> <operation> <TAB> <permission>`, e.g.
//! `Topic<TAB>LITERAL<TAB>orders<TAB>User:alice<TAB>*<TAB>Read<TAB>Allow`.
//! In the name, principal and host a backslash, tab, newline and carriage
//! return are written `\\`, `\t`, `\n`, `\r`. Every change rewrites the
//! file whole, as `security::credentials` does: `acls.tmp` written and
//! synced, renamed over `acls`, the directory synced.
//!
//! Reads never wait for a writer, nor for each other: the bindings and
//! their index are an immutable snapshot behind an `ArcSwap` (a load is a
//! few atomic operations on the reading thread's own slot, no lock and no
//! shared reference count), which a writer replaces after its file is
//! durable.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, OnceLock};

use arc_swap::{ArcSwap, Guard};

use crate::security::Principal;
use crate::security::shared::{Kind, Lines, SharedMetadata, diff};

/// The file in the data directory.
pub const FILE: &str = "acls";
/// The only name a `Cluster` resource has (Kafka's `kafka-cluster`).
pub const CLUSTER_NAME: &str = "kafka-cluster";
/// A literal resource name matching every resource of its type, and a host
/// matching every address.
pub const WILDCARD: &str = "*";
/// The principal an ACL names to apply to everyone.
pub const WILDCARD_PRINCIPAL: &str = "User:*";

/// `TransactionalId`, `TRANSACTIONAL_ID`, `transactional-id` → `transactionalid`.
fn fold(s: &str) -> String {
    s.chars()
        .filter(|c| !matches!(c, '_' | '-' | ' '))
        .flat_map(char::to_lowercase)
        .collect()
}

/// An enum carried on the wire as Kafka's `i8` code, printed with the name
/// Kafka's tools print, parsed case-insensitively in camel or snake case.
macro_rules! wire_enum {
    ($(#[$meta:meta])* $ty:ident, $what:literal { $($(#[$vmeta:meta])* $variant:ident = $code:literal, $name:literal;)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $ty {
            $($(#[$vmeta])* $variant,)*
        }

        impl $ty {
            /// Every value, in code order.
            pub const VALUES: &'static [$ty] = &[$($ty::$variant,)*];

            /// Kafka's wire code.
            pub fn code(self) -> i8 {
                match self {
                    $($ty::$variant => $code,)*
                }
            }

            /// None for Kafka's UNKNOWN (0) and codes it does not define.
            pub fn from_code(code: i8) -> Option<$ty> {
                match code {
                    $($code => Some($ty::$variant),)*
                    _ => None,
                }
            }

            /// The name Kafka's tools print.
            pub fn name(self) -> &'static str {
                match self {
                    $($ty::$variant => $name,)*
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }

        impl FromStr for $ty {
            type Err = String;

            fn from_str(s: &str) -> Result<$ty, String> {
                let folded = fold(s);
                $ty::VALUES
                    .iter()
                    .copied()
                    .find(|v| fold(v.name()) == folded)
                    .ok_or_else(|| {
                        let names: Vec<&str> = $ty::VALUES.iter().map(|v| v.name()).collect();
                        format!("unknown {} {s:?} (one of {})", $what, names.join(", "))
                    })
            }
        }
    };
}

wire_enum! {
    /// What kind of resource an ACL is for (Kafka's `ResourceType`).
    ResourceType, "resource type" {
        /// Filters only.
        Any = 1, "Any";
        Topic = 2, "Topic";
        Group = 3, "Group";
        Cluster = 4, "Cluster";
        TransactionalId = 5, "TransactionalId";
        DelegationToken = 6, "DelegationToken";
        User = 7, "User";
    }
}

wire_enum! {
    /// How an ACL's resource name is matched (Kafka's `PatternType`).
    PatternType, "pattern type" {
        /// Filters only: any pattern type, the name matched exactly.
        Any = 1, "ANY";
        /// Filters only: the bindings that would apply to the named resource.
        Match = 2, "MATCH";
        /// The name itself, or `*` for every resource of the type.
        Literal = 3, "LITERAL";
        /// Every resource whose name starts with it.
        Prefixed = 4, "PREFIXED";
    }
}

wire_enum! {
    /// What an ACL allows or denies (Kafka's `AclOperation`).
    AclOperation, "operation" {
        /// Filters only.
        Any = 1, "Any";
        All = 2, "All";
        Read = 3, "Read";
        Write = 4, "Write";
        Create = 5, "Create";
        Delete = 6, "Delete";
        Alter = 7, "Alter";
        Describe = 8, "Describe";
        ClusterAction = 9, "ClusterAction";
        DescribeConfigs = 10, "DescribeConfigs";
        AlterConfigs = 11, "AlterConfigs";
        IdempotentWrite = 12, "IdempotentWrite";
        CreateTokens = 13, "CreateTokens";
        DescribeTokens = 14, "DescribeTokens";
    }
}

wire_enum! {
    /// Whether an ACL allows or denies (Kafka's `AclPermissionType`).
    PermissionType, "permission type" {
        /// Filters only.
        Any = 1, "Any";
        Deny = 2, "Deny";
        Allow = 3, "Allow";
    }
}

impl AclOperation {
    /// Whether an ALLOW ACL for `self` also allows `op` (Kafka: READ, WRITE,
    /// DELETE and ALTER imply DESCRIBE; ALTER_CONFIGS implies
    /// DESCRIBE_CONFIGS; ALL implies everything). DENY ACLs imply nothing.
    pub fn allows(self, op: AclOperation) -> bool {
        use AclOperation::*;
        self == All
            || self == op
            || match op {
                Describe => matches!(self, Read | Write | Delete | Alter),
                DescribeConfigs => self == AlterConfigs,
                _ => false,
            }
    }
}

/// One ACL: a resource pattern and an access control entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AclBinding {
    pub resource_type: ResourceType,
    pub resource_name: String,
    pub pattern_type: PatternType,
    /// `TYPE:NAME`: `User:alice`, or `User:*` for everyone.
    pub principal: String,
    /// An IP address, or `*` for every host.
    pub host: String,
    pub operation: AclOperation,
    pub permission: PermissionType,
}

impl AclBinding {
    /// Whether CreateAcls may store it, with Kafka's checks and messages
    /// (the caller answers INVALID_REQUEST with the message): no ANY or
    /// MATCH values, a non-empty name, `kafka-cluster` for the cluster, a
    /// `TYPE:NAME` principal, a host.
    pub fn validate(&self) -> Result<(), String> {
        if self.resource_type == ResourceType::Any {
            return Err(format!("Invalid resourceType {}", self.resource_type));
        }
        if !matches!(
            self.pattern_type,
            PatternType::Literal | PatternType::Prefixed
        ) {
            return Err(format!("Invalid patternType {}", self.pattern_type));
        }
        if self.operation == AclOperation::Any {
            return Err(format!("Invalid operation {}", self.operation));
        }
        if self.permission == PermissionType::Any {
            return Err(format!("Invalid permissionType {}", self.permission));
        }
        if self.resource_name.is_empty() {
            return Err("Resource name should not be empty".into());
        }
        if self.resource_type == ResourceType::Cluster && self.resource_name != CLUSTER_NAME {
            return Err(format!(
                "The only valid name for the CLUSTER resource is {CLUSTER_NAME}"
            ));
        }
        if self.principal.parse::<Principal>().is_err() {
            return Err(format!(
                "Could not parse principal from `{}` (expected TYPE:NAME, e.g. User:alice)",
                self.principal
            ));
        }
        if self.host.is_empty() {
            return Err("Invalid empty host (an IP address, or * for every host)".into());
        }
        Ok(())
    }

    /// The line it is stored as (without the newline).
    fn to_line(&self) -> String {
        format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}",
            self.resource_type,
            self.pattern_type,
            escape(&self.resource_name),
            escape(&self.principal),
            escape(&self.host),
            self.operation,
            self.permission
        )
    }

    fn from_line(line: &str) -> Option<AclBinding> {
        let fields: Vec<&str> = line.split('\t').collect();
        let [rt, pt, name, principal, host, op, perm] = fields[..] else {
            return None;
        };
        let b = AclBinding {
            resource_type: rt.parse().ok()?,
            pattern_type: pt.parse().ok()?,
            resource_name: unescape(name)?,
            principal: unescape(principal)?,
            host: unescape(host)?,
            operation: op.parse().ok()?,
            permission: perm.parse().ok()?,
        };
        b.validate().ok()?;
        Some(b)
    }
}

impl fmt::Display for AclBinding {
    /// `Topic:LITERAL:orders: User:alice has Allow permission for Read from host *`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {} has {} permission for {} from host {}",
            self.resource_type,
            self.pattern_type,
            self.resource_name,
            self.principal,
            self.permission,
            self.operation,
            self.host
        )
    }
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}

fn unescape(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        out.push(match chars.next()? {
            '\\' => '\\',
            't' => '\t',
            'n' => '\n',
            'r' => '\r',
            _ => return None,
        });
    }
    Some(out)
}

/// Which bindings DescribeAcls shows and DeleteAcls removes (Kafka's
/// `AclBindingFilter`): `None` and the `Any` values match anything; the
/// principal and host, when given, match exactly; a resource name matches
/// exactly, except under [`PatternType::Match`], where it matches every
/// binding that applies to the resource of that name (the literal one, the
/// literal `*` and every prefix).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AclBindingFilter {
    pub resource_type: ResourceType,
    pub resource_name: Option<String>,
    pub pattern_type: PatternType,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: AclOperation,
    pub permission: PermissionType,
}

impl AclBindingFilter {
    /// Matches every binding.
    pub fn any() -> AclBindingFilter {
        AclBindingFilter {
            resource_type: ResourceType::Any,
            resource_name: None,
            pattern_type: PatternType::Any,
            principal: None,
            host: None,
            operation: AclOperation::Any,
            permission: PermissionType::Any,
        }
    }

    /// Matches `b` and only `b`.
    pub fn exactly(b: &AclBinding) -> AclBindingFilter {
        AclBindingFilter {
            resource_type: b.resource_type,
            resource_name: Some(b.resource_name.clone()),
            pattern_type: b.pattern_type,
            principal: Some(b.principal.clone()),
            host: Some(b.host.clone()),
            operation: b.operation,
            permission: b.permission,
        }
    }

    pub fn matches(&self, b: &AclBinding) -> bool {
        self.matches_pattern(b) && self.matches_entry(b)
    }

    /// Kafka's `ResourcePatternFilter.matches`.
    fn matches_pattern(&self, b: &AclBinding) -> bool {
        if self.resource_type != ResourceType::Any && self.resource_type != b.resource_type {
            return false;
        }
        if !matches!(self.pattern_type, PatternType::Any | PatternType::Match)
            && self.pattern_type != b.pattern_type
        {
            return false;
        }
        let Some(name) = &self.resource_name else {
            return true;
        };
        if self.pattern_type == PatternType::Any || self.pattern_type == b.pattern_type {
            return *name == b.resource_name;
        }
        match b.pattern_type {
            PatternType::Literal => *name == b.resource_name || b.resource_name == WILDCARD,
            PatternType::Prefixed => name.starts_with(&b.resource_name),
            // Stored bindings are only LITERAL or PREFIXED.
            PatternType::Any | PatternType::Match => false,
        }
    }

    /// Kafka's `AccessControlEntryFilter.matches`.
    fn matches_entry(&self, b: &AclBinding) -> bool {
        self.principal.as_ref().is_none_or(|p| *p == b.principal)
            && self.host.as_ref().is_none_or(|h| *h == b.host)
            && (self.operation == AclOperation::Any || self.operation == b.operation)
            && (self.permission == PermissionType::Any || self.permission == b.permission)
    }
}

/// An ACL's host, parsed once: `*`, an address, or a name (Kafka compares
/// the client's address as text, so a host name never matches).
#[derive(Debug, Clone, Copy)]
enum HostMatch {
    Any,
    Ip(IpAddr),
    Never,
}

/// A binding as the authorizer checks it.
#[derive(Debug)]
struct Entry {
    principal: Principal,
    /// `User:*`.
    everyone: bool,
    host: HostMatch,
    operation: AclOperation,
    permission: PermissionType,
}

impl Entry {
    fn of(b: &AclBinding) -> Entry {
        // Stored bindings are validated: the principal parses.
        let principal = b
            .principal
            .parse::<Principal>()
            .unwrap_or_else(|_| Principal::user(&b.principal));
        let host = if b.host == WILDCARD {
            HostMatch::Any
        } else {
            match b.host.parse::<IpAddr>() {
                Ok(ip) => HostMatch::Ip(ip.to_canonical()),
                Err(_) => HostMatch::Never,
            }
        };
        Entry {
            everyone: principal.kind == Principal::USER && principal.name == WILDCARD,
            principal,
            host,
            operation: b.operation,
            permission: b.permission,
        }
    }

    /// Whether it names this principal (or everyone) and this host (or every
    /// host); `host` is canonical.
    fn applies_to(&self, principal: &Principal, host: IpAddr) -> bool {
        (self.everyone || self.principal == *principal)
            && match self.host {
                HostMatch::Any => true,
                HostMatch::Ip(ip) => ip == host,
                HostMatch::Never => false,
            }
    }

    /// Kafka's `StandardAuthorizerData.findResult`: Some(Allow or Deny) if
    /// this entry decides `op` for `principal` at `host`.
    fn verdict(&self, principal: &Principal, host: IpAddr, op: AclOperation) -> Option<bool> {
        if !self.applies_to(principal, host) {
            return None;
        }
        let allow = self.permission == PermissionType::Allow;
        let operation_matches = if allow {
            self.operation.allows(op)
        } else {
            self.operation == AclOperation::All || self.operation == op
        };
        operation_matches.then_some(allow)
    }
}

/// FNV-1a (the `fnv` crate): names and principals are short, and
/// SipHash's setup cost dominated a check (the maps are the
/// administrator's; a client only looks names up in them).
type FnvMap<K, V> = fnv::FnvHashMap<K, V>;

/// The entries of one resource pattern, by whom they name: a check looks
/// at those for everyone and those for its principal only, however many
/// other principals' ACLs the resource has.
#[derive(Debug, Default)]
struct Bucket {
    /// `User:*`.
    everyone: Vec<Entry>,
    by_principal: FnvMap<Principal, Vec<Entry>>,
}

impl Bucket {
    fn push(&mut self, e: Entry) {
        if e.everyone {
            self.everyone.push(e);
        } else {
            self.by_principal
                .entry(e.principal.clone())
                .or_default()
                .push(e);
        }
    }

    /// The entries naming `principal`, or everyone.
    fn naming<'a>(&'a self, principal: &Principal) -> impl Iterator<Item = &'a Entry> {
        self.everyone
            .iter()
            .chain(self.by_principal.get(principal).into_iter().flatten())
    }
}

/// One resource type's bindings, by pattern and name.
#[derive(Debug, Default)]
struct TypeIndex {
    literal: FnvMap<String, Bucket>,
    prefixed: FnvMap<String, Bucket>,
    /// The lengths (bytes) of the prefixed names, ascending, so a lookup
    /// tries only those prefixes of a resource name.
    prefix_lens: Vec<usize>,
}

/// An immutable snapshot: the bindings and their index.
#[derive(Debug, Default)]
struct Snapshot {
    bindings: BTreeSet<AclBinding>,
    by_type: BTreeMap<ResourceType, TypeIndex>,
}

impl Snapshot {
    fn new(bindings: BTreeSet<AclBinding>) -> Snapshot {
        let mut by_type: BTreeMap<ResourceType, TypeIndex> = BTreeMap::new();
        for b in &bindings {
            let t = by_type.entry(b.resource_type).or_default();
            let map = match b.pattern_type {
                PatternType::Prefixed => {
                    t.prefix_lens.push(b.resource_name.len());
                    &mut t.prefixed
                }
                _ => &mut t.literal,
            };
            map.entry(b.resource_name.clone())
                .or_default()
                .push(Entry::of(b));
        }
        for t in by_type.values_mut() {
            t.prefix_lens.sort_unstable();
            t.prefix_lens.dedup();
        }
        Snapshot { bindings, by_type }
    }
}

/// The ACLs of a broker: in memory, and in `acls` in its data directory
/// unless made with [`AclStore::in_memory`].
#[derive(Debug)]
pub struct AclStore {
    path: Option<PathBuf>,
    /// Serialises writers (a read-modify-write of the file).
    writer: Mutex<()>,
    current: ArcSwap<Snapshot>,
    /// In a cluster: where changes go instead of the file.
    shared: OnceLock<Arc<dyn SharedMetadata>>,
}

/// The bindings as shared lines; a binding is its own identity.
fn lines_of(bindings: &BTreeSet<AclBinding>) -> Lines {
    bindings
        .iter()
        .map(|b| {
            let line = b.to_line();
            (line.clone(), line)
        })
        .collect()
}

impl AclStore {
    /// Reads `dir/acls` (none yet: no ACLs). A line that does not parse
    /// refuses the file, naming the line.
    pub fn open(dir: &Path) -> io::Result<AclStore> {
        let path = dir.join(FILE);
        let mut bindings = BTreeSet::new();
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                for (n, line) in text.lines().enumerate() {
                    if line.is_empty() {
                        continue;
                    }
                    let b = AclBinding::from_line(line).ok_or_else(|| {
                        io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("{}: line {} does not parse", path.display(), n + 1),
                        )
                    })?;
                    bindings.insert(b);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(AclStore {
            path: Some(path),
            writer: Mutex::new(()),
            current: ArcSwap::from_pointee(Snapshot::new(bindings)),
            shared: OnceLock::new(),
        })
    }

    /// A store that keeps nothing on disk (tests).
    pub fn in_memory() -> AclStore {
        AclStore {
            path: None,
            writer: Mutex::new(()),
            current: ArcSwap::from_pointee(Snapshot::default()),
            shared: OnceLock::new(),
        }
    }

    fn snapshot(&self) -> Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// The bindings as lines by identity (what a cluster shares).
    pub fn lines(&self) -> Lines {
        lines_of(&self.snapshot().bindings)
    }

    /// From now on changes go to `shared`, and the store holds what
    /// [`install`](Self::install) gives it; the file is left alone.
    pub fn share(&self, shared: Arc<dyn SharedMetadata>) {
        let _ = self.shared.set(shared);
    }

    /// Replaces the bindings with the cluster's. A line that does not parse
    /// is skipped with a warning.
    pub fn install(&self, lines: &Lines) {
        let bindings = lines
            .values()
            .filter_map(|line| {
                let b = AclBinding::from_line(line);
                if b.is_none() {
                    tracing::warn!("ignoring the ACL {line:?}: it does not parse");
                }
                b
            })
            .collect();
        self.current.store(Arc::new(Snapshot::new(bindings)));
    }

    /// How many bindings there are.
    pub fn len(&self) -> usize {
        self.snapshot().bindings.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds bindings, durably: one result per binding, in order, an `Err`
    /// with Kafka's message for one [`AclBinding::validate`] refuses.
    /// Creating a binding that exists succeeds and changes nothing. The
    /// error is the file's: then nothing was added.
    pub fn create(&self, bindings: &[AclBinding]) -> io::Result<Vec<Result<(), String>>> {
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.current.load_full();
        let mut next = old.bindings.clone();
        let results = bindings
            .iter()
            .map(|b| {
                b.validate()?;
                next.insert(b.clone());
                Ok(())
            })
            .collect();
        if next.len() != old.bindings.len() {
            self.commit(&old.bindings, next)?;
        }
        Ok(results)
    }

    /// The bindings `filter` matches, sorted.
    pub fn describe(&self, filter: &AclBindingFilter) -> Vec<AclBinding> {
        self.snapshot()
            .bindings
            .iter()
            .filter(|b| filter.matches(b))
            .cloned()
            .collect()
    }

    /// Removes every binding any of `filters` matches, durably; for each
    /// filter, the bindings it matched (as Kafka: every filter is applied to
    /// the bindings as they were, so one binding may be in several results).
    /// The error is the file's: then nothing was removed.
    pub fn delete(&self, filters: &[AclBindingFilter]) -> io::Result<Vec<Vec<AclBinding>>> {
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.current.load_full();
        let results: Vec<Vec<AclBinding>> = filters
            .iter()
            .map(|f| {
                old.bindings
                    .iter()
                    .filter(|b| f.matches(b))
                    .cloned()
                    .collect()
            })
            .collect();
        let gone: HashSet<&AclBinding> = results.iter().flatten().collect();
        if !gone.is_empty() {
            let next = old
                .bindings
                .iter()
                .filter(|b| !gone.contains(b))
                .cloned()
                .collect();
            self.commit(&old.bindings, next)?;
        }
        Ok(results)
    }

    /// Writes `bindings`, made from `old` (the writer lock held), then
    /// makes them current. In a cluster only the difference from `old` is
    /// written: the store may have installed another broker's change since
    /// `old` was read, and diffing against that would delete it.
    fn commit(&self, old: &BTreeSet<AclBinding>, bindings: BTreeSet<AclBinding>) -> io::Result<()> {
        if let Some(shared) = self.shared.get() {
            let (puts, deletes) = diff(&lines_of(old), &lines_of(&bindings));
            return shared.write(Kind::Acls, puts, deletes);
        }
        if let Some(path) = &self.path {
            write_file(path, &bindings)?;
        }
        self.current.store(Arc::new(Snapshot::new(bindings)));
        Ok(())
    }
}

fn write_file(path: &Path, bindings: &BTreeSet<AclBinding>) -> io::Result<()> {
    let mut text = String::new();
    for b in bindings {
        text.push_str(&b.to_line());
        text.push('\n');
    }
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Kafka's `StandardAuthorizer` over an [`AclStore`]: super users may do
/// anything; otherwise a matching DENY wins, then a matching ALLOW, and a
/// resource no ACL applies to at all is open only with
/// `allow.everyone.if.no.acl.found`.
#[derive(Debug)]
pub struct Authorizer {
    store: AclStore,
    super_users: Vec<Principal>,
    allow_everyone_if_no_acl_found: bool,
}

impl Authorizer {
    pub fn new(
        store: AclStore,
        super_users: Vec<Principal>,
        allow_everyone_if_no_acl_found: bool,
    ) -> Authorizer {
        Authorizer {
            store,
            super_users,
            allow_everyone_if_no_acl_found,
        }
    }

    pub fn store(&self) -> &AclStore {
        &self.store
    }

    pub fn super_users(&self) -> &[Principal] {
        &self.super_users
    }

    pub fn allow_everyone_if_no_acl_found(&self) -> bool {
        self.allow_everyone_if_no_acl_found
    }

    pub fn is_super_user(&self, principal: &Principal) -> bool {
        self.super_users.contains(principal)
    }

    /// Whether `principal`, connected from `host`, may do `op` to the
    /// resource `resource_type`/`resource_name` (see [`Checker::authorize`]).
    pub fn authorize(
        &self,
        principal: &Principal,
        host: IpAddr,
        op: AclOperation,
        resource_type: ResourceType,
        resource_name: &str,
    ) -> bool {
        self.checker(principal, host)
            .authorize(op, resource_type, resource_name)
    }

    /// Whether `principal` may do `op` to at least one resource of
    /// `resource_type` (see [`Checker::authorize_any_of_type`]).
    pub fn authorize_any_of_type(
        &self,
        principal: &Principal,
        host: IpAddr,
        op: AclOperation,
        resource_type: ResourceType,
    ) -> bool {
        self.checker(principal, host)
            .authorize_any_of_type(op, resource_type)
    }

    /// The checks of one principal at one host against the ACLs as they
    /// are now: one snapshot load for as many checks as a request needs
    /// (hold it for a batch, not across an `await`: a long-held load pins
    /// the snapshot and takes one of the thread's fast slots).
    pub fn checker<'a>(&'a self, principal: &'a Principal, host: IpAddr) -> Checker<'a> {
        Checker {
            authorizer: self,
            super_user: self.is_super_user(principal),
            principal,
            host: host.to_canonical(),
            snapshot: self.store.snapshot(),
        }
    }
}

/// [`Authorizer`]'s answers for one principal at one host, over one
/// snapshot of the ACLs.
pub struct Checker<'a> {
    authorizer: &'a Authorizer,
    principal: &'a Principal,
    /// Canonical (an IPv4-mapped IPv6 address as IPv4).
    host: IpAddr,
    super_user: bool,
    snapshot: Guard<Arc<Snapshot>>,
}

impl Checker<'_> {
    pub fn principal(&self) -> &Principal {
        self.principal
    }

    /// Whether the principal may do `op` to the resource
    /// `resource_type`/`resource_name`. The ACLs that apply are the literal
    /// one of that name, the literal `*` and every prefixed one the name
    /// starts with; of those naming the principal (or `User:*`) and the
    /// host (or `*`), a DENY for the operation (or All) refuses, an ALLOW
    /// for it (or one implying it, or All) allows. With none of those the
    /// answer is no, unless no ACL applies to the resource at all and
    /// `allow_everyone_if_no_acl_found`. `Any` as operation or type: no.
    pub fn authorize(
        &self,
        op: AclOperation,
        resource_type: ResourceType,
        resource_name: &str,
    ) -> bool {
        if op == AclOperation::Any || resource_type == ResourceType::Any {
            return false;
        }
        if self.super_user {
            return true;
        }
        let everyone = self.authorizer.allow_everyone_if_no_acl_found;
        let Some(t) = self.snapshot.by_type.get(&resource_type) else {
            return everyone;
        };
        let (principal, host) = (self.principal, self.host);
        // Whether any ACL applies to the resource (for anyone).
        let mut found = false;
        let mut allowed = false;
        // True: a DENY matched, nothing else matters.
        let mut check = |bucket: Option<&Bucket>| -> bool {
            let Some(bucket) = bucket else {
                return false;
            };
            found = true;
            for e in bucket.naming(principal) {
                match e.verdict(principal, host, op) {
                    Some(false) => return true,
                    Some(true) => allowed = true,
                    None => {}
                }
            }
            false
        };
        if check(t.literal.get(resource_name)) {
            return false;
        }
        if resource_name != WILDCARD && check(t.literal.get(WILDCARD)) {
            return false;
        }
        for &len in t
            .prefix_lens
            .iter()
            .take_while(|len| **len <= resource_name.len())
        {
            if let Some(prefix) = resource_name.get(..len)
                && check(t.prefixed.get(prefix))
            {
                return false;
            }
        }
        if allowed {
            true
        } else if found {
            false
        } else {
            everyone
        }
    }

    /// Whether the principal may do `op` to at least one resource of
    /// `resource_type` (Kafka's `Authorizer.authorizeByResourceType`: e.g.
    /// an idempotent producer needs IdempotentWrite on the cluster or Write
    /// on some topic). Implied operations do not count here, as in Kafka;
    /// an ALLOW counts unless a DENY covers everything it names (the same
    /// literal name, a prefix of it, or `*`).
    pub fn authorize_any_of_type(&self, op: AclOperation, resource_type: ResourceType) -> bool {
        if op == AclOperation::Any || resource_type == ResourceType::Any {
            return false;
        }
        // As Kafka: a made-up name answers for super users, and for no ACLs
        // at all with allow_everyone_if_no_acl_found.
        if self.authorize(op, resource_type, "hardcode") {
            return true;
        }
        let Some(t) = self.snapshot.by_type.get(&resource_type) else {
            return false;
        };
        let (principal, host) = (self.principal, self.host);
        let relevant = |e: &Entry| {
            e.applies_to(principal, host) && (e.operation == op || e.operation == AclOperation::All)
        };
        let mut deny_literal: HashSet<&str> = HashSet::new();
        let mut deny_prefixed: HashSet<&str> = HashSet::new();
        let mut allow_literal: Vec<&str> = Vec::new();
        let mut allow_prefixed: Vec<&str> = Vec::new();
        let mut allow_wildcard = false;
        for (prefixed, map) in [(false, &t.literal), (true, &t.prefixed)] {
            for (name, bucket) in map {
                for e in bucket.naming(principal).filter(|e| relevant(e)) {
                    let deny = e.permission == PermissionType::Deny;
                    match (prefixed, deny) {
                        (false, true) if name == WILDCARD => return false,
                        (false, true) => {
                            deny_literal.insert(name);
                        }
                        (true, true) => {
                            deny_prefixed.insert(name);
                        }
                        (false, false) if name == WILDCARD => allow_wildcard = true,
                        (false, false) => allow_literal.push(name),
                        (true, false) => allow_prefixed.push(name),
                    }
                }
            }
        }
        if allow_wildcard {
            return true;
        }
        let dominated = |name: &str| {
            (1..=name.len())
                .filter_map(|len| name.get(..len))
                .any(|prefix| deny_prefixed.contains(prefix))
        };
        allow_literal
            .iter()
            .any(|n| !deny_literal.contains(n) && !dominated(n))
            || allow_prefixed.iter().any(|n| !dominated(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(
        rt: ResourceType,
        pt: PatternType,
        name: &str,
        principal: &str,
        host: &str,
        op: AclOperation,
        perm: PermissionType,
    ) -> AclBinding {
        AclBinding {
            resource_type: rt,
            resource_name: name.into(),
            pattern_type: pt,
            principal: principal.into(),
            host: host.into(),
            operation: op,
            permission: perm,
        }
    }

    fn topic(
        pt: PatternType,
        name: &str,
        who: &str,
        op: AclOperation,
        perm: PermissionType,
    ) -> AclBinding {
        acl(ResourceType::Topic, pt, name, who, "*", op, perm)
    }

    use AclOperation as Op;
    use PatternType::{Literal, Prefixed};
    use PermissionType::{Allow, Deny};
    use ResourceType::Topic;

    fn local() -> IpAddr {
        "127.0.0.1".parse().unwrap()
    }

    fn authorizer(acls: &[AclBinding]) -> Authorizer {
        authorizer_with(acls, false)
    }

    fn authorizer_with(acls: &[AclBinding], everyone: bool) -> Authorizer {
        let store = AclStore::in_memory();
        for r in store.create(acls).unwrap() {
            r.unwrap();
        }
        Authorizer::new(store, vec![Principal::user("admin")], everyone)
    }

    fn may(a: &Authorizer, who: &str, op: Op, name: &str) -> bool {
        a.authorize(&Principal::user(who), local(), op, Topic, name)
    }

    #[test]
    fn codes_and_names_are_kafkas() {
        assert_eq!(ResourceType::TransactionalId.code(), 5);
        assert_eq!(ResourceType::from_code(7), Some(ResourceType::User));
        assert_eq!(ResourceType::from_code(0), None, "UNKNOWN");
        assert_eq!(ResourceType::from_code(8), None);
        assert_eq!(PatternType::Prefixed.code(), 4);
        assert_eq!(PatternType::from_code(2), Some(PatternType::Match));
        assert_eq!(Op::IdempotentWrite.code(), 12);
        assert_eq!(Op::from_code(14), Some(Op::DescribeTokens));
        assert_eq!(Op::from_code(15), None);
        assert_eq!(PermissionType::Allow.code(), 3);
        for v in Op::VALUES {
            assert_eq!(Op::from_code(v.code()), Some(*v));
            assert_eq!(v.name().parse::<Op>(), Ok(*v));
        }
        assert_eq!(
            "TRANSACTIONAL_ID".parse(),
            Ok(ResourceType::TransactionalId)
        );
        assert_eq!(
            "transactional-id".parse(),
            Ok(ResourceType::TransactionalId)
        );
        assert_eq!("transactionalId".parse(), Ok(ResourceType::TransactionalId));
        assert_eq!("describe_configs".parse(), Ok(Op::DescribeConfigs));
        assert_eq!("CLUSTER_ACTION".parse(), Ok(Op::ClusterAction));
        assert_eq!("prefixed".parse(), Ok(Prefixed));
        assert_eq!("ALLOW".parse(), Ok(Allow));
        let e = "Reed".parse::<Op>().unwrap_err();
        assert!(e.contains("Read") && e.contains("IdempotentWrite"), "{e}");
        assert_eq!(Op::ClusterAction.to_string(), "ClusterAction");
        assert_eq!(Literal.to_string(), "LITERAL");
        let b = topic(Literal, "orders", "User:alice", Op::Read, Allow);
        assert_eq!(
            b.to_string(),
            "Topic:LITERAL:orders: User:alice has Allow permission for Read from host *"
        );
    }

    #[test]
    fn create_validates_as_kafka_does() {
        let good = topic(Literal, "t", "User:alice", Op::Read, Allow);
        assert_eq!(good.validate(), Ok(()));
        let refused = |b: AclBinding, want: &str| {
            let e = b.validate().unwrap_err();
            assert!(e.contains(want), "{e:?} should say {want:?}");
        };
        refused(
            AclBinding {
                resource_type: ResourceType::Any,
                ..good.clone()
            },
            "Invalid resourceType",
        );
        for pt in [PatternType::Any, PatternType::Match] {
            refused(
                AclBinding {
                    pattern_type: pt,
                    ..good.clone()
                },
                "Invalid patternType",
            );
        }
        refused(
            AclBinding {
                operation: Op::Any,
                ..good.clone()
            },
            "Invalid operation",
        );
        refused(
            AclBinding {
                permission: PermissionType::Any,
                ..good.clone()
            },
            "Invalid permissionType",
        );
        refused(
            AclBinding {
                resource_name: String::new(),
                ..good.clone()
            },
            "should not be empty",
        );
        refused(
            acl(
                ResourceType::Cluster,
                Literal,
                "other",
                "User:a",
                "*",
                Op::Alter,
                Allow,
            ),
            "kafka-cluster",
        );
        assert_eq!(
            acl(
                ResourceType::Cluster,
                Literal,
                CLUSTER_NAME,
                "User:a",
                "*",
                Op::Alter,
                Allow
            )
            .validate(),
            Ok(())
        );
        refused(
            AclBinding {
                principal: "alice".into(),
                ..good.clone()
            },
            "Could not parse principal",
        );
        refused(
            AclBinding {
                host: String::new(),
                ..good.clone()
            },
            "host",
        );
        // The store answers per binding and keeps the good ones.
        let store = AclStore::in_memory();
        let results = store
            .create(&[
                good.clone(),
                AclBinding {
                    principal: "alice".into(),
                    ..good.clone()
                },
                good.clone(),
            ])
            .unwrap();
        assert!(results[0].is_ok() && results[1].is_err() && results[2].is_ok());
        assert_eq!(
            store.len(),
            1,
            "creating an existing binding changes nothing"
        );
    }

    #[test]
    fn deny_beats_allow_and_no_match_is_no() {
        let a = authorizer(&[
            topic(Literal, "t", "User:alice", Op::Read, Allow),
            topic(Literal, "t", "User:*", Op::Read, Allow),
            topic(Literal, "t", "User:bob", Op::Read, Deny),
        ]);
        assert!(may(&a, "alice", Op::Read, "t"));
        assert!(
            !may(&a, "bob", Op::Read, "t"),
            "bob's DENY beats User:*'s ALLOW"
        );
        assert!(may(&a, "carol", Op::Read, "t"), "User:* is everyone");
        assert!(!may(&a, "alice", Op::Write, "t"), "no ALLOW for Write");
        assert!(
            !may(&a, "alice", Op::Read, "u"),
            "no ACL on u, and not open"
        );
        // A DENY through a wildcard or prefix beats a literal ALLOW.
        let a = authorizer(&[
            topic(Literal, "t", "User:alice", Op::Read, Allow),
            topic(Prefixed, "t", "User:alice", Op::All, Deny),
        ]);
        assert!(!may(&a, "alice", Op::Read, "t"));
        let a = authorizer(&[
            topic(Literal, "t", "User:alice", Op::Read, Allow),
            topic(Literal, "*", "User:*", Op::Read, Deny),
        ]);
        assert!(!may(&a, "alice", Op::Read, "t"));
    }

    #[test]
    fn literal_wildcard_and_prefixed_patterns() {
        let a = authorizer(&[
            topic(Literal, "orders", "User:lit", Op::Read, Allow),
            topic(Literal, "*", "User:wild", Op::Read, Allow),
            topic(Prefixed, "ord", "User:pre", Op::Read, Allow),
            topic(Prefixed, "orders-eu", "User:long", Op::Read, Allow),
            topic(Prefixed, "ü", "User:uni", Op::Read, Allow),
        ]);
        assert!(may(&a, "lit", Op::Read, "orders"));
        assert!(
            !may(&a, "lit", Op::Read, "orders-eu"),
            "a literal is not a prefix"
        );
        assert!(!may(&a, "lit", Op::Read, "order"));
        assert!(may(&a, "wild", Op::Read, "orders"));
        assert!(may(&a, "wild", Op::Read, "anything"));
        assert!(may(&a, "wild", Op::Read, "*"));
        assert!(may(&a, "pre", Op::Read, "ord"), "a prefix matches itself");
        assert!(may(&a, "pre", Op::Read, "orders-eu-1"));
        assert!(!may(&a, "pre", Op::Read, "or"));
        assert!(!may(&a, "pre", Op::Read, "xord"));
        assert!(may(&a, "long", Op::Read, "orders-eu"));
        assert!(!may(&a, "long", Op::Read, "orders-us"));
        assert!(
            may(&a, "uni", Op::Read, "über"),
            "prefixes cut at characters"
        );
        assert!(!may(&a, "uni", Op::Read, "u"));
        // A literal "*" in a name is not a wildcard for prefixed ACLs.
        let a = authorizer(&[topic(Prefixed, "*", "User:star", Op::Read, Allow)]);
        assert!(!may(&a, "star", Op::Read, "orders"));
        assert!(may(&a, "star", Op::Read, "*orders"));
        // Another resource type's ACLs do not apply.
        let a = authorizer(&[acl(
            ResourceType::Group,
            Literal,
            "orders",
            "User:g",
            "*",
            Op::Read,
            Allow,
        )]);
        assert!(!may(&a, "g", Op::Read, "orders"));
        assert!(a.authorize(
            &Principal::user("g"),
            local(),
            Op::Read,
            ResourceType::Group,
            "orders"
        ));
    }

    #[test]
    fn allows_imply_describe_but_denies_imply_nothing() {
        let a = authorizer(&[
            topic(Literal, "r", "User:u", Op::Read, Allow),
            topic(Literal, "w", "User:u", Op::Write, Allow),
            topic(Literal, "d", "User:u", Op::Delete, Allow),
            topic(Literal, "a", "User:u", Op::Alter, Allow),
            topic(Literal, "c", "User:u", Op::Create, Allow),
            topic(Literal, "ac", "User:u", Op::AlterConfigs, Allow),
            topic(Literal, "all", "User:u", Op::All, Allow),
        ]);
        for name in ["r", "w", "d", "a", "all"] {
            assert!(may(&a, "u", Op::Describe, name), "{name}");
        }
        assert!(
            !may(&a, "u", Op::Describe, "c"),
            "Create does not imply Describe"
        );
        assert!(!may(&a, "u", Op::Describe, "ac"));
        assert!(may(&a, "u", Op::DescribeConfigs, "ac"));
        assert!(!may(&a, "u", Op::DescribeConfigs, "a"));
        assert!(!may(&a, "u", Op::Write, "r"), "Read does not imply Write");
        for op in [
            Op::Read,
            Op::Write,
            Op::Delete,
            Op::AlterConfigs,
            Op::ClusterAction,
        ] {
            assert!(may(&a, "u", op, "all"), "{op}");
        }
        // A DENY of Read leaves an allowed Describe alone; a DENY of All does not.
        let a = authorizer(&[
            topic(Literal, "t", "User:u", Op::Describe, Allow),
            topic(Literal, "t", "User:u", Op::Read, Deny),
        ]);
        assert!(may(&a, "u", Op::Describe, "t"));
        assert!(!may(&a, "u", Op::Read, "t"));
        let a = authorizer(&[
            topic(Literal, "t", "User:u", Op::Describe, Allow),
            topic(Literal, "t", "User:u", Op::All, Deny),
        ]);
        assert!(!may(&a, "u", Op::Describe, "t"));
    }

    #[test]
    fn super_users_pass_everything() {
        let a = authorizer(&[topic(Literal, "*", "User:*", Op::All, Deny)]);
        let admin = Principal::user("admin");
        assert!(a.authorize(&admin, local(), Op::Write, Topic, "t"));
        assert!(a.authorize(
            &admin,
            local(),
            Op::Alter,
            ResourceType::Cluster,
            CLUSTER_NAME
        ));
        assert!(!may(&a, "alice", Op::Write, "t"));
        assert!(!a.authorize(&Principal::user("ADMIN"), local(), Op::Write, Topic, "t"));
        assert!(a.is_super_user(&admin));
    }

    #[test]
    fn no_acl_found_is_open_only_when_configured() {
        let acls = [topic(Literal, "guarded", "User:alice", Op::Read, Allow)];
        let closed = authorizer_with(&acls, false);
        let open = authorizer_with(&acls, true);
        assert!(!may(&closed, "bob", Op::Read, "free"));
        assert!(may(&open, "bob", Op::Read, "free"), "no ACL names it");
        assert!(
            !may(&open, "bob", Op::Read, "guarded"),
            "an ACL for someone else means the resource is guarded"
        );
        assert!(!may(&open, "bob", Op::Write, "guarded"));
        assert!(may(&open, "alice", Op::Read, "guarded"));
        // No ACLs at all, of any type.
        let empty = authorizer_with(&[], true);
        assert!(may(&empty, "bob", Op::Read, "t"));
        let empty = authorizer_with(&[], false);
        assert!(!may(&empty, "bob", Op::Read, "t"));
        // A prefixed or wildcard ACL for someone else guards it too.
        let open = authorizer_with(
            &[topic(Prefixed, "fr", "User:alice", Op::Read, Allow)],
            true,
        );
        assert!(!may(&open, "bob", Op::Read, "free"));
        assert!(may(&open, "bob", Op::Read, "other"));
    }

    #[test]
    fn hosts_match_exactly_or_by_star() {
        let a = authorizer(&[
            acl(Topic, Literal, "t", "User:u", "10.0.0.1", Op::Read, Allow),
            acl(Topic, Literal, "t", "User:u", "::1", Op::Write, Allow),
            acl(
                Topic,
                Literal,
                "t",
                "User:u",
                "localhost",
                Op::Delete,
                Allow,
            ),
            acl(Topic, Literal, "t", "User:u", "10.0.0.9", Op::All, Deny),
        ]);
        let u = Principal::user("u");
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(a.authorize(&u, ip("10.0.0.1"), Op::Read, Topic, "t"));
        assert!(
            a.authorize(&u, ip("::ffff:10.0.0.1"), Op::Read, Topic, "t"),
            "an IPv4-mapped address is its IPv4 address"
        );
        assert!(!a.authorize(&u, ip("10.0.0.2"), Op::Read, Topic, "t"));
        assert!(a.authorize(&u, ip("0:0:0:0:0:0:0:1"), Op::Write, Topic, "t"));
        assert!(
            !a.authorize(&u, ip("127.0.0.1"), Op::Delete, Topic, "t"),
            "names never match"
        );
        assert!(!a.authorize(&u, ip("10.0.0.9"), Op::Read, Topic, "t"));
    }

    #[test]
    fn any_of_type_follows_kafkas_authorize_by_resource_type() {
        let who = Principal::user("p");
        let any = |a: &Authorizer, op: Op| a.authorize_any_of_type(&who, local(), op, Topic);
        assert!(!any(&authorizer(&[]), Op::Write));
        assert!(any(&authorizer_with(&[], true), Op::Write));
        assert!(authorizer(&[]).authorize_any_of_type(
            &Principal::user("admin"),
            local(),
            Op::Write,
            Topic
        ));
        let a = authorizer(&[topic(Literal, "t", "User:p", Op::Write, Allow)]);
        assert!(any(&a, Op::Write));
        assert!(!any(&a, Op::Read));
        assert!(!any(&a, Op::Describe), "implied operations do not count");
        let a = authorizer(&[topic(Prefixed, "x-", "User:*", Op::All, Allow)]);
        assert!(any(&a, Op::Write));
        // A DENY covering the allowed name.
        let a = authorizer(&[
            topic(Literal, "t", "User:p", Op::Write, Allow),
            topic(Literal, "t", "User:p", Op::Write, Deny),
        ]);
        assert!(!any(&a, Op::Write));
        let a = authorizer(&[
            topic(Prefixed, "team-a", "User:p", Op::Write, Allow),
            topic(Prefixed, "team", "User:p", Op::All, Deny),
        ]);
        assert!(!any(&a, Op::Write));
        let a = authorizer(&[
            topic(Prefixed, "team", "User:p", Op::Write, Allow),
            topic(Prefixed, "team-a", "User:p", Op::Write, Deny),
        ]);
        assert!(
            any(&a, Op::Write),
            "a deny on part of the prefix leaves the rest"
        );
        let a = authorizer(&[
            topic(Literal, "t", "User:p", Op::Write, Allow),
            topic(Literal, "*", "User:*", Op::Write, Deny),
        ]);
        assert!(!any(&a, Op::Write));
        let a = authorizer(&[
            topic(Literal, "*", "User:p", Op::Write, Allow),
            topic(Literal, "t", "User:p", Op::Write, Deny),
        ]);
        assert!(any(&a, Op::Write));
        // Someone else's ACLs, or another host's, do not count.
        let a = authorizer(&[
            topic(Literal, "t", "User:q", Op::Write, Allow),
            acl(Topic, Literal, "u", "User:p", "10.1.1.1", Op::Write, Allow),
        ]);
        assert!(!any(&a, Op::Write));
    }

    #[test]
    fn filters_match_as_describe_and_delete_acls_do() {
        let lit = topic(Literal, "orders", "User:alice", Op::Read, Allow);
        let wild = topic(Literal, "*", "User:bob", Op::Write, Deny);
        let pre = topic(Prefixed, "ord", "User:alice", Op::Describe, Allow);
        let other = topic(Prefixed, "pay", "User:alice", Op::Read, Allow);
        let group = acl(
            ResourceType::Group,
            Literal,
            "orders",
            "User:alice",
            "10.0.0.1",
            Op::Read,
            Allow,
        );
        let all = [&lit, &wild, &pre, &other, &group];
        let matched = |f: &AclBindingFilter| -> Vec<&AclBinding> {
            all.iter().copied().filter(|b| f.matches(b)).collect()
        };
        assert_eq!(matched(&AclBindingFilter::any()).len(), 5);
        let f = AclBindingFilter {
            resource_type: Topic,
            resource_name: Some("orders".into()),
            pattern_type: PatternType::Match,
            ..AclBindingFilter::any()
        };
        assert_eq!(
            matched(&f),
            vec![&lit, &wild, &pre],
            "what applies to topic orders"
        );
        let f = AclBindingFilter {
            pattern_type: PatternType::Any,
            ..f
        };
        assert_eq!(
            matched(&f),
            vec![&lit],
            "ANY: the name exactly, any pattern type"
        );
        let f = AclBindingFilter {
            resource_name: Some("ord".into()),
            ..f
        };
        assert_eq!(matched(&f), vec![&pre]);
        let f = AclBindingFilter {
            resource_name: Some("ord".into()),
            pattern_type: Literal,
            ..f
        };
        assert!(matched(&f).is_empty(), "LITERAL: only literal bindings");
        let f = AclBindingFilter {
            pattern_type: Prefixed,
            resource_name: None,
            ..AclBindingFilter::any()
        };
        assert_eq!(matched(&f), vec![&pre, &other]);
        let f = AclBindingFilter {
            principal: Some("User:alice".into()),
            operation: Op::Read,
            ..AclBindingFilter::any()
        };
        assert_eq!(matched(&f), vec![&lit, &other, &group]);
        let f = AclBindingFilter {
            host: Some("10.0.0.1".into()),
            ..AclBindingFilter::any()
        };
        assert_eq!(matched(&f), vec![&group]);
        let f = AclBindingFilter {
            permission: Deny,
            ..AclBindingFilter::any()
        };
        assert_eq!(matched(&f), vec![&wild]);
        let f = AclBindingFilter {
            resource_type: ResourceType::Group,
            resource_name: Some("orders".into()),
            pattern_type: PatternType::Match,
            ..AclBindingFilter::any()
        };
        assert_eq!(matched(&f), vec![&group]);
        assert_eq!(matched(&AclBindingFilter::exactly(&pre)), vec![&pre]);
        // The filter's ops match exactly: All is not Any.
        let f = AclBindingFilter {
            operation: Op::All,
            ..AclBindingFilter::any()
        };
        assert!(matched(&f).is_empty());
    }

    #[test]
    fn delete_applies_every_filter_to_the_acls_as_they_were() {
        let a = topic(Literal, "t", "User:alice", Op::Read, Allow);
        let b = topic(Literal, "t", "User:bob", Op::Read, Allow);
        let c = topic(Prefixed, "t", "User:alice", Op::Write, Allow);
        let store = AclStore::in_memory();
        store.create(&[a.clone(), b.clone(), c.clone()]).unwrap();
        let by_alice = AclBindingFilter {
            principal: Some("User:alice".into()),
            ..AclBindingFilter::any()
        };
        let literal_t = AclBindingFilter {
            resource_type: Topic,
            resource_name: Some("t".into()),
            pattern_type: Literal,
            ..AclBindingFilter::any()
        };
        let nothing = AclBindingFilter {
            resource_name: Some("zzz".into()),
            ..AclBindingFilter::any()
        };
        let results = store.delete(&[by_alice, literal_t, nothing]).unwrap();
        assert_eq!(results[0], vec![a.clone(), c.clone()]);
        assert_eq!(results[1], vec![a.clone(), b.clone()]);
        assert!(results[2].is_empty());
        assert!(store.is_empty());
        let results = store.delete(&[AclBindingFilter::any()]).unwrap();
        assert!(results[0].is_empty());
        // Gone from the index too.
        let auth = Authorizer::new(store, vec![], false);
        assert!(!auth.authorize(&Principal::user("alice"), local(), Op::Read, Topic, "t"));
    }

    #[test]
    fn acls_survive_a_reopen_and_the_index_follows_changes() {
        let dir = tempfile::tempdir().unwrap();
        let store = AclStore::open(dir.path()).unwrap();
        assert!(store.is_empty());
        let odd = acl(
            ResourceType::Group,
            Prefixed,
            "we\tird\\name\nx",
            "User:CN=a,O=b",
            "::1",
            Op::Describe,
            Deny,
        );
        let plain = topic(Literal, "orders", "User:alice", Op::Read, Allow);
        let cluster = acl(
            ResourceType::Cluster,
            Literal,
            CLUSTER_NAME,
            "User:ops",
            "*",
            Op::Alter,
            Allow,
        );
        store
            .create(&[plain.clone(), odd.clone(), cluster.clone()])
            .unwrap();
        let text = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(
            text.contains("Topic\tLITERAL\torders\tUser:alice\t*\tRead\tAllow\n"),
            "{text}"
        );
        assert!(text.contains("we\\tird\\\\name\\nx"), "{text}");
        let again = AclStore::open(dir.path()).unwrap();
        assert_eq!(
            again.describe(&AclBindingFilter::any()),
            vec![plain.clone(), odd.clone(), cluster.clone()]
        );
        again.delete(&[AclBindingFilter::exactly(&odd)]).unwrap();
        let auth = Authorizer::new(AclStore::open(dir.path()).unwrap(), vec![], false);
        assert_eq!(auth.store().len(), 2);
        assert!(auth.authorize(
            &Principal::user("alice"),
            local(),
            Op::Read,
            Topic,
            "orders"
        ));
        assert!(auth.authorize(
            &Principal::user("ops"),
            local(),
            Op::Describe,
            ResourceType::Cluster,
            CLUSTER_NAME
        ));
        assert!(!dir.path().join("acls.tmp").exists());
        // The in-memory index follows the store's own changes.
        auth.store()
            .create(&[topic(Literal, "orders", "User:alice", Op::Read, Deny)])
            .unwrap();
        assert!(!auth.authorize(
            &Principal::user("alice"),
            local(),
            Op::Read,
            Topic,
            "orders"
        ));
    }

    #[test]
    fn a_damaged_file_is_refused_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        for bad in [
            "Topic\tLITERAL\tt\tUser:a\t*\tRead\n",
            "Topic\tLITERAL\tt\tUser:a\t*\tReed\tAllow\n",
            "Topic\tMATCH\tt\tUser:a\t*\tRead\tAllow\n",
            "Topic\tLITERAL\tt\tUser:a\t*\tRead\tAny\n",
            "Topic\tLITERAL\tt\tnobody\t*\tRead\tAllow\n",
            "Cluster\tLITERAL\tt\tUser:a\t*\tAlter\tAllow\n",
            "Topic\tLITERAL\tbad\\q\tUser:a\t*\tRead\tAllow\n",
            "Topic\tLITERAL\tt\tUser:a\t*\tRead\tAllow\textra\n",
        ] {
            let text = format!("Topic\tLITERAL\tok\tUser:a\t*\tRead\tAllow\n\n{bad}");
            std::fs::write(dir.path().join(FILE), text).unwrap();
            let err = AclStore::open(dir.path()).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData);
            assert!(err.to_string().contains("line 3"), "{bad:?}: {err}");
        }
    }
}
