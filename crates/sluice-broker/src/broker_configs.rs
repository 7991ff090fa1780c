//! Dynamic broker configs: the log defaults an operator may change at run
//! time (Kafka's `log.retention.ms`, `log.cleanup.policy`, `message.max.bytes`
//! …: every broker synonym of a topic config), per broker (resource name =
//! this node's id) or as the cluster default (resource name ""), stored in
//! the data directory and applied over the static settings at every start.
//! Precedence, as in Kafka: topic override > per-broker dynamic > cluster
//! default dynamic > static (flags) > Kafka's default.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use std::sync::Mutex;

use sluice_log::topic_config::{self, ConfigError, TOPIC_CONFIGS, TopicConfigDef};
use sluice_log::{LogConfig, TopicOverrides};

/// Broker config name → value.
pub type BrokerOverrides = BTreeMap<String, String>;

/// Which set a dynamic value belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Resource name = this broker's id (DYNAMIC_BROKER_CONFIG).
    Broker,
    /// Resource name "" (DYNAMIC_DEFAULT_BROKER_CONFIG).
    ClusterDefault,
}

impl Scope {
    fn file(self) -> &'static str {
        match self {
            Scope::Broker => "broker-configs.properties",
            Scope::ClusterDefault => "cluster-default-configs.properties",
        }
    }
}

/// The topic config a dynamic broker config sets the default of.
pub fn topic_config_for(broker_name: &str) -> Option<&'static TopicConfigDef> {
    TOPIC_CONFIGS
        .iter()
        .find(|d| d.broker_synonym == broker_name)
}

/// Both dynamic sets, as stored.
#[derive(Debug)]
pub struct DynamicConfigs {
    dir: PathBuf,
    sets: Mutex<(BrokerOverrides, BrokerOverrides)>,
}

impl DynamicConfigs {
    /// Reads both sets from `data_dir` (absent files are empty sets).
    pub fn load(data_dir: &Path) -> io::Result<DynamicConfigs> {
        let read = |scope: Scope| -> io::Result<BrokerOverrides> {
            match topic_config::read_properties(&data_dir.join(scope.file())) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(BTreeMap::new()),
                read => read,
            }
        };
        Ok(DynamicConfigs {
            dir: data_dir.to_path_buf(),
            sets: Mutex::new((read(Scope::Broker)?, read(Scope::ClusterDefault)?)),
        })
    }

    /// One set.
    pub fn get(&self, scope: Scope) -> BrokerOverrides {
        let sets = self.sets.lock().unwrap_or_else(|e| e.into_inner());
        match scope {
            Scope::Broker => sets.0.clone(),
            Scope::ClusterDefault => sets.1.clone(),
        }
    }

    /// Where a broker config's dynamic value comes from, if it has one.
    pub fn source_of(&self, broker_name: &str) -> Option<(Scope, String)> {
        let sets = self.sets.lock().unwrap_or_else(|e| e.into_inner());
        sets.0
            .get(broker_name)
            .map(|v| (Scope::Broker, v.clone()))
            .or_else(|| {
                sets.1
                    .get(broker_name)
                    .map(|v| (Scope::ClusterDefault, v.clone()))
            })
    }

    /// The log defaults: `static_config` with the cluster-default set, then
    /// the per-broker set, applied (each value checked as the topic config
    /// it is the default of).
    pub fn resolve(&self, static_config: &LogConfig) -> Result<LogConfig, ConfigError> {
        let sets = self.sets.lock().unwrap_or_else(|e| e.into_inner());
        resolve_sets(static_config, &sets.0, &sets.1)
    }

    /// The defaults that replacing `scope`'s set with `set` would give,
    /// without changing anything.
    pub fn resolve_with(
        &self,
        static_config: &LogConfig,
        scope: Scope,
        set: &BrokerOverrides,
    ) -> Result<LogConfig, ConfigError> {
        let sets = self.sets.lock().unwrap_or_else(|e| e.into_inner());
        match scope {
            Scope::Broker => resolve_sets(static_config, set, &sets.1),
            Scope::ClusterDefault => resolve_sets(static_config, &sets.0, set),
        }
    }

    /// Replaces `scope`'s set, durably (temporary file, fsync, rename).
    pub fn store(&self, scope: Scope, set: BrokerOverrides) -> io::Result<()> {
        let mut sets = self.sets.lock().unwrap_or_else(|e| e.into_inner());
        topic_config::write_properties(
            &self.dir.join(scope.file()),
            "Dynamic broker configs, written by sluice.",
            &set,
        )?;
        match scope {
            Scope::Broker => sets.0 = set,
            Scope::ClusterDefault => sets.1 = set,
        }
        Ok(())
    }
}

fn as_topic_overrides(set: &BrokerOverrides) -> Result<TopicOverrides, ConfigError> {
    set.iter()
        .map(|(k, v)| {
            topic_config_for(k)
                .map(|def| (def.name.to_string(), v.clone()))
                .ok_or_else(|| ConfigError {
                    name: k.clone(),
                    value: v.clone(),
                    reason: "not a broker config that can be changed at run time".into(),
                })
        })
        .collect()
}

fn resolve_sets(
    static_config: &LogConfig,
    broker: &BrokerOverrides,
    cluster: &BrokerOverrides,
) -> Result<LogConfig, ConfigError> {
    let with_cluster = topic_config::resolve(static_config, &as_topic_overrides(cluster)?)?;
    topic_config::resolve(&with_cluster, &as_topic_overrides(broker)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_broker_wins_over_cluster_default_and_both_survive_a_reload() {
        let dir = tempfile::tempdir().expect("dir");
        let d = DynamicConfigs::load(dir.path()).expect("load");
        let base = LogConfig::default();
        let mut cluster = BrokerOverrides::new();
        cluster.insert("log.retention.ms".into(), "1000".into());
        cluster.insert("message.max.bytes".into(), "2000".into());
        d.store(Scope::ClusterDefault, cluster).expect("store");
        let mut broker = BrokerOverrides::new();
        broker.insert("log.retention.ms".into(), "5000".into());
        d.store(Scope::Broker, broker).expect("store");
        let check = |d: &DynamicConfigs| {
            let c = d.resolve(&base).expect("resolve");
            assert_eq!(c.retention_age, Some(std::time::Duration::from_secs(5)));
            assert_eq!(c.max_batch_bytes, 2000);
            assert_eq!(
                d.source_of("log.retention.ms"),
                Some((Scope::Broker, "5000".into()))
            );
        };
        check(&d);
        check(&DynamicConfigs::load(dir.path()).expect("reload"));
        let mut bad = BrokerOverrides::new();
        bad.insert("log.dirs".into(), "/x".into());
        assert!(d.resolve_with(&base, Scope::Broker, &bad).is_err());
    }
}
