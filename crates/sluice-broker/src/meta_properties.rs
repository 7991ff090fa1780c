//! `meta.properties`: a data directory's identity, in Kafka's file and format.
//!
//! Kafka writes `meta.properties` into every log directory when it is first
//! formatted: a Java properties file holding `version`, `cluster.id` and
//! `node.id`. Sluice does the same the first time a broker opens a data
//! directory (including one written before this file existed), and reads it
//! at every start after, so a deployment keeps one cluster id for its life
//! and two deployments never share one. A file that exists but cannot be
//! read, or lacks a field, stops the broker: silently minting a new
//! identity for a directory that had one would hide a damaged disk.
//! docs/FORMAT.md has the bytes.

use std::io;
use std::path::Path;

use base64::Engine as _;

pub const FILE: &str = "meta.properties";

/// What `meta.properties` holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaProperties {
    /// Kafka's Uuid text form: 16 random bytes as URL-safe base64 without
    /// padding (22 characters).
    pub cluster_id: String,
    pub node_id: i32,
}

fn invalid(path: &Path, why: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{}: {why}", path.display()),
    )
}

impl MetaProperties {
    /// A fresh identity for a new data directory. Like Kafka's
    /// `Uuid.randomUuid`, an id whose text starts with `-` is drawn again:
    /// command-line tools would read it as an option.
    pub fn generate(node_id: i32) -> MetaProperties {
        loop {
            let id = uuid::Uuid::new_v4();
            let text = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id.as_bytes());
            if !text.starts_with('-') {
                return MetaProperties {
                    cluster_id: text,
                    node_id,
                };
            }
        }
    }

    /// Reads `<dir>/meta.properties`, or writes a new one if there is none.
    /// A stored `node.id` other than `node_id` is refused, as Kafka refuses it.
    pub fn load_or_create(dir: &Path, node_id: i32) -> io::Result<MetaProperties> {
        let path = dir.join(FILE);
        let meta = match std::fs::read_to_string(&path) {
            Ok(text) => MetaProperties::parse(&text).map_err(|why| invalid(&path, why))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let meta = MetaProperties::generate(node_id);
                meta.write(dir)?;
                tracing::info!(cluster_id = %meta.cluster_id, node_id, "wrote {}", path.display());
                return Ok(meta);
            }
            Err(e) => return Err(e),
        };
        if meta.node_id != node_id {
            return Err(invalid(
                &path,
                format!(
                    "stored node.id {} does not match this broker's node id {node_id}",
                    meta.node_id
                ),
            ));
        }
        Ok(meta)
    }

    /// Parses the properties text: `key=value` lines, `#` or `!` comments.
    pub fn parse(text: &str) -> Result<MetaProperties, String> {
        let mut version = None;
        let mut cluster_id = None;
        let mut node_id = None;
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
                continue;
            }
            let Some((key, value)) = line.split_once(['=', ':']) else {
                return Err(format!("line {line:?} is not key=value"));
            };
            match key.trim() {
                "version" => version = Some(value.trim().to_string()),
                "cluster.id" => cluster_id = Some(value.trim().to_string()),
                "node.id" | "broker.id" => {
                    node_id = Some(
                        value
                            .trim()
                            .parse::<i32>()
                            .map_err(|_| format!("node.id {value:?} is not a number"))?,
                    )
                }
                _ => {} // directory.id and future fields
            }
        }
        match version.as_deref() {
            Some("0" | "1") => {}
            Some(v) => return Err(format!("unsupported version {v}")),
            None => return Err("no version".into()),
        }
        let cluster_id = cluster_id
            .filter(|c| !c.is_empty())
            .ok_or("no cluster.id")?;
        let node_id = node_id.ok_or("no node.id")?;
        Ok(MetaProperties {
            cluster_id,
            node_id,
        })
    }

    /// The file's text.
    pub fn render(&self) -> String {
        format!(
            "#\n#Written by sluice. Do not edit: this is the data directory's identity.\nversion=1\ncluster.id={}\nnode.id={}\n",
            self.cluster_id, self.node_id
        )
    }

    /// Writes the file durably: a temporary file, fsync, rename, fsync of
    /// the directory.
    fn write(&self, dir: &Path) -> io::Result<()> {
        let path = dir.join(FILE);
        let tmp = dir.join(format!("{FILE}.tmp"));
        std::fs::write(&tmp, self.render())?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(dir)?.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_directory_gets_an_id_that_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let first = MetaProperties::load_or_create(dir.path(), 0).unwrap();
        assert_eq!(first.cluster_id.len(), 22);
        assert_eq!(
            MetaProperties::load_or_create(dir.path(), 0).unwrap(),
            first
        );
        let other = tempfile::tempdir().unwrap();
        let second = MetaProperties::load_or_create(other.path(), 0).unwrap();
        assert_ne!(first.cluster_id, second.cluster_id);
    }

    #[test]
    fn reads_kafkas_own_file_and_refuses_damage() {
        let kafka = "#\n#Mon Dec 01 10:00:00 UTC 2026\nnode.id=0\ndirectory.id=abc\nversion=1\ncluster.id=MkU3OEVBNTcwNTJENDM2Qk\n";
        let meta = MetaProperties::parse(kafka).unwrap();
        assert_eq!(meta.cluster_id, "MkU3OEVBNTcwNTJENDM2Qk");
        assert_eq!(meta.node_id, 0);
        assert!(MetaProperties::parse("version=1\nnode.id=0\n").is_err());
        assert!(MetaProperties::parse("version=7\ncluster.id=x\nnode.id=0\n").is_err());
        assert!(MetaProperties::parse("garbage\n").is_err());
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), "version=1\nnode.id=0\n").unwrap();
        assert!(MetaProperties::load_or_create(dir.path(), 0).is_err());
        std::fs::write(
            dir.path().join(FILE),
            "version=1\ncluster.id=x\nnode.id=3\n",
        )
        .unwrap();
        assert!(MetaProperties::load_or_create(dir.path(), 0).is_err());
    }

    #[test]
    fn generated_ids_never_start_with_a_dash() {
        // About 1 in 64 raw draws would.
        for _ in 0..2000 {
            assert!(!MetaProperties::generate(0).cluster_id.starts_with('-'));
        }
    }

    #[test]
    fn rendered_text_parses_back() {
        let meta = MetaProperties::generate(0);
        assert_eq!(MetaProperties::parse(&meta.render()).unwrap(), meta);
    }
}
