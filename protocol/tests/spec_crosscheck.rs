//! Cross-checks every one of our definitions (`defs/*.msg`) against Kafka's own JSON message
//! specs: same API key, message kind, valid and flexible versions, and per field the same
//! name, type, versions, nullable versions, tag and tagged versions, flexible override,
//! default, ignorable and map-key flags, recursively, common structs included. Also checks
//! that every client-facing spec file has a definition.
//!
//! The specs are found at `../../shared/kafka-message-specs` relative to this crate, or at
//! `$SLUICE_KAFKA_SPECS`. They are present on every developer machine and in CI; when they
//! are absent the test prints a note and checks nothing.

// Test helpers outside #[test] functions may unwrap: a failure there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../build_support/defs.rs"]
mod defs;

use std::path::{Path, PathBuf};

use defs::{CommonDef, FieldDef, MessageDef, Versions};
use serde_json::Value;

/// ZooKeeper-era inter-broker APIs deliberately left out (see tools/convert_specs.py).
const SKIPPED: &[&str] = &[
    "ControlledShutdownRequest",
    "ControlledShutdownResponse",
    "LeaderAndIsrRequest",
    "LeaderAndIsrResponse",
    "StopReplicaRequest",
    "StopReplicaResponse",
    "UpdateMetadataRequest",
    "UpdateMetadataResponse",
];

fn specs_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("SLUICE_KAFKA_SPECS") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/kafka-message-specs"),
    };
    dir.is_dir().then_some(dir)
}

fn load_ours() -> Vec<MessageDef> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("defs");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|x| x == "msg") {
            let stem = path.file_stem().unwrap().to_str().unwrap().to_string();
            out.push(defs::parse(&stem, &std::fs::read_to_string(&path).unwrap()).unwrap());
        }
    }
    out
}

fn load_spec(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    // The spec files carry `//` licence comments, which JSON does not allow.
    let stripped: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    serde_json::from_str(&stripped).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn versions(v: Option<&Value>) -> Versions {
    match v.and_then(Value::as_str) {
        Some(s) => Versions::parse(s).unwrap(),
        None => Versions::NONE,
    }
}

/// Kafka's default as our definitions spell it (hex and capitalised booleans normalised).
fn spec_default(f: &Value) -> Option<String> {
    let d = f.get("default")?;
    let ty = f["type"].as_str().unwrap_or_default();
    Some(match d {
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) if s == "null" => "null".into(),
        Value::String(s) if ty == "bool" => s.to_lowercase(),
        Value::String(s) if ty == "string" && s.is_empty() => "\"\"".into(),
        Value::String(s) if s.to_lowercase().starts_with("0x") => {
            i64::from_str_radix(&s[2..], 16).unwrap().to_string()
        }
        Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

fn compare_fields(ctx: &str, ours: &[FieldDef], spec: &[Value], errors: &mut Vec<String>) {
    if ours.len() != spec.len() {
        errors.push(format!(
            "{ctx}: {} fields in ours, {} in the spec",
            ours.len(),
            spec.len()
        ));
    }
    for (o, s) in ours.iter().zip(spec) {
        let name = s["name"].as_str().unwrap_or_default();
        let here = format!("{ctx}.{name}");
        let mut check = |what: &str, a: String, b: String| {
            if a != b {
                errors.push(format!("{here}: {what}: ours {a}, spec {b}"));
            }
        };
        check("name", o.name.clone(), name.to_string());
        check(
            "type",
            o.ty.clone(),
            s["type"].as_str().unwrap_or_default().to_string(),
        );
        check(
            "versions",
            o.versions.to_string(),
            versions(s.get("versions")).to_string(),
        );
        check(
            "nullable versions",
            o.nullable.to_string(),
            versions(s.get("nullableVersions")).to_string(),
        );
        check(
            "tag",
            format!("{:?}", o.tag),
            format!(
                "{:?}",
                s.get("tag")
                    .and_then(|t| t.as_u64().or_else(|| t.as_str()?.parse().ok()))
                    .map(|t| t as u32)
            ),
        );
        check(
            "tagged versions",
            o.tagged.to_string(),
            versions(s.get("taggedVersions")).to_string(),
        );
        check(
            "flexible override",
            format!("{:?}", o.flexible.map(|v| v.to_string())),
            format!(
                "{:?}",
                s.get("flexibleVersions")
                    .map(|v| versions(Some(v)).to_string())
            ),
        );
        check(
            "default",
            format!("{:?}", o.default),
            format!("{:?}", spec_default(s)),
        );
        check(
            "ignorable",
            o.ignorable.to_string(),
            s.get("ignorable")
                .and_then(Value::as_bool)
                .unwrap_or(false)
                .to_string(),
        );
        check(
            "map key",
            o.map_key.to_string(),
            s.get("mapKey")
                .and_then(Value::as_bool)
                .unwrap_or(false)
                .to_string(),
        );
        let sub = s
            .get("fields")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        compare_fields(&here, &o.fields, &sub, errors);
    }
}

fn compare_commons(ctx: &str, ours: &[CommonDef], spec: &[Value], errors: &mut Vec<String>) {
    if ours.len() != spec.len() {
        errors.push(format!(
            "{ctx}: {} common structs in ours, {} in the spec",
            ours.len(),
            spec.len()
        ));
    }
    for (o, s) in ours.iter().zip(spec) {
        let name = s["name"].as_str().unwrap_or_default();
        if o.name != name {
            errors.push(format!("{ctx}: common struct {} vs {name}", o.name));
        }
        if o.versions != versions(s.get("versions")) {
            errors.push(format!("{ctx}.{name}: common struct versions differ"));
        }
        let sub = s
            .get("fields")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        compare_fields(&format!("{ctx}.{name}"), &o.fields, &sub, errors);
    }
}

#[test]
fn definitions_match_kafka_specs() {
    let Some(dir) = specs_dir() else {
        println!(
            "NOTE: Kafka message specs not found (set SLUICE_KAFKA_SPECS); cross-check skipped"
        );
        return;
    };
    let ours = load_ours();
    let mut errors = Vec::new();
    let mut checked = 0;
    let mut spec_names = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let spec = load_spec(&path);
        let name = spec["name"].as_str().unwrap().to_string();
        spec_names.push(name.clone());
        if SKIPPED.contains(&name.as_str()) {
            continue;
        }
        let Some(o) = ours.iter().find(|m| m.name == name) else {
            errors.push(format!("{name}: no definition in defs/"));
            continue;
        };
        checked += 1;
        if o.kind != spec["type"].as_str().unwrap_or_default() {
            errors.push(format!("{name}: kind {} vs {}", o.kind, spec["type"]));
        }
        if o.api_key.map(i64::from) != spec.get("apiKey").and_then(Value::as_i64) {
            errors.push(format!(
                "{name}: api key {:?} vs {:?}",
                o.api_key,
                spec.get("apiKey")
            ));
        }
        if o.versions != versions(spec.get("validVersions")) {
            errors.push(format!(
                "{name}: valid versions {} vs {}",
                o.versions,
                versions(spec.get("validVersions"))
            ));
        }
        if o.flexible != versions(spec.get("flexibleVersions")) {
            errors.push(format!(
                "{name}: flexible versions {} vs {}",
                o.flexible,
                versions(spec.get("flexibleVersions"))
            ));
        }
        if o.unstable_latest
            != spec
                .get("latestVersionUnstable")
                .and_then(Value::as_bool)
                .unwrap_or(false)
        {
            errors.push(format!("{name}: latestVersionUnstable differs"));
        }
        let fields = spec
            .get("fields")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        compare_fields(&name, &o.fields, &fields, &mut errors);
        let commons = spec
            .get("commonStructs")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        compare_commons(&name, &o.commons, &commons, &mut errors);
    }
    for o in &ours {
        if !spec_names.contains(&o.name) {
            errors.push(format!(
                "{}: defined in defs/ but absent from the specs",
                o.name
            ));
        }
    }
    assert!(
        errors.is_empty(),
        "{} mismatches:\n{}",
        errors.len(),
        errors.join("\n")
    );
    println!("{checked} definitions match Kafka's specs");
    assert!(checked >= 170, "only {checked} definitions checked");
}

/// The APIs the brief requires, by Kafka API key, must all be present with their versions.
#[test]
fn required_apis_are_defined() {
    use sluice_protocol::ApiKey;
    let required = [
        0, 1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 28,
        29, 30, 31, 32, 33, 35, 36, 37, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 60, 61, 65, 66, 68,
        69,
    ];
    for key in required {
        let api = ApiKey::from_i16(key).unwrap_or_else(|| panic!("api key {key} missing"));
        assert_eq!(api as i16, key);
        assert!(api.info().max_version >= api.info().min_version);
    }
}
