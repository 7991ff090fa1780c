//! The broker's rooms import one way: `net` → `api` → `state` /
//! `coordinator` / `security`, with `metrics`, `config` and `meta_properties` below them
//! all, and nothing importing `net`. This reads the sources and fails on an
//! import that points the wrong way, so a cycle cannot creep back in.

use std::path::{Path, PathBuf};

/// Which top-level modules each module may name as `crate::<module>`.
const ALLOWED: &[(&str, &[&str])] = &[
    (
        "broker",
        &[
            "net",
            "api",
            "state",
            "metrics",
            "config",
            "replication",
            "cluster",
        ],
    ),
    ("net", &["api", "state", "metrics", "config", "security"]),
    (
        "api",
        &[
            "state",
            "coordinator",
            "metrics",
            "config",
            "meta_properties",
            "broker_configs",
            "replication",
            "cluster",
            "security",
        ],
    ),
    (
        "state",
        &[
            "replication",
            "cluster",
            "coordinator",
            "metrics",
            "config",
            "meta_properties",
            "broker_configs",
            "security",
            "security_sync",
        ],
    ),
    ("security_sync", &["cluster", "security"]),
    ("replication", &["cluster", "config", "metrics"]),
    ("cluster", &["config", "metrics"]),
    ("broker_configs", &[]),
    ("coordinator", &[]),
    // SASL/SCRAM and the credentials: pure, below the rooms that use them.
    ("security", &[]),
    ("metrics", &[]),
    // The super users are principals.
    ("config", &["security"]),
    ("meta_properties", &[]),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn imports_point_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut wrong = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&src).expect("under src");
        let module = rel
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .map(|m| m.trim_end_matches(".rs").to_string())
            .expect("module");
        if module == "lib" {
            continue; // the crate root declares every module
        }
        let allowed = ALLOWED
            .iter()
            .find(|(m, _)| *m == module)
            .unwrap_or_else(|| panic!("{} is in no layer: add it to ALLOWED", rel.display()))
            .1;
        let text = std::fs::read_to_string(file).expect("read");
        for (i, line) in text.lines().enumerate() {
            let mut rest = line;
            while let Some(at) = rest.find("crate::") {
                rest = &rest[at + "crate::".len()..];
                let target: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if target != module
                    && !allowed.contains(&target.as_str())
                    && ALLOWED.iter().any(|(m, _)| *m == target)
                {
                    wrong.push(format!(
                        "{}:{}: {module} imports {target}",
                        rel.display(),
                        i + 1
                    ));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports pointing the wrong way:\n{}",
        wrong.join("\n")
    );
}
