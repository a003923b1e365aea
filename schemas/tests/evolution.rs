//! Schema evolution: every version of every record reads data written by every older version,
//! and the registry holds every `.avsc` file in the crate.
//!
//! Nothing here names a version: a new `<kind>.vN.avsc` is checked against all of its
//! predecessors as soon as it is added to `schema_files()` (and the second test fails until it is).

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use apache_avro::schema::SchemaKind;
use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::types::Value;
use apache_avro::Schema;
use tidings_schemas::{
    decode, encode_with_version, registry, schema_files, RecordKind, HEADER_LEN,
};

#[test]
fn every_version_reads_every_older_version() {
    let reg = registry();
    for kind in RecordKind::ALL {
        let versions: Vec<_> = reg.versions_of(kind).collect();
        let numbers: Vec<u32> = versions.iter().map(|v| v.version()).collect();
        let expected: Vec<u32> = (1..=versions.len() as u32).collect();
        assert_eq!(
            numbers, expected,
            "{kind:?}: versions are numbered 1, 2, 3… without gaps"
        );
        assert_eq!(reg.latest(kind).version(), *numbers.last().unwrap());

        for (i, reader) in versions.iter().enumerate() {
            for writer in &versions[..=i] {
                let what = format!("{} reading {}", reader.file(), writer.file());
                SchemaCompatibility::can_read(writer.schema(), reader.schema())
                    .unwrap_or_else(|e| panic!("{what}: incompatible: {e}"));
                for e in common::samples(kind) {
                    let bytes = encode_with_version(&e, writer.version()).unwrap();
                    let mut datum = &bytes[HEADER_LEN..];
                    let value = apache_avro::from_avro_datum(
                        writer.schema(),
                        &mut datum,
                        Some(reader.schema()),
                    )
                    .unwrap_or_else(|err| panic!("{what}: {err}"));
                    assert!(datum.is_empty(), "{what}: bytes left over");
                    assert!(value.validate(reader.schema()), "{what}: {value:?}");
                    assert_eq!(
                        field_names(&value),
                        field_names_of(reader.schema()),
                        "{what}"
                    );
                }
            }
        }
        // The codec resolves every version into the latest one.
        for writer in &versions {
            for e in common::samples(kind) {
                let bytes = encode_with_version(&e, writer.version()).unwrap();
                assert_eq!(decode(&bytes), Ok(common::project(&e, writer.version())));
            }
        }
    }
}

fn field_names(value: &Value) -> Vec<String> {
    match value {
        Value::Record(fields) => fields.iter().map(|(n, _)| n.clone()).collect(),
        other => panic!("not a record: {other:?}"),
    }
}

fn field_names_of(schema: &Schema) -> Vec<String> {
    match schema {
        Schema::Record(r) => r.fields.iter().map(|f| f.name.clone()).collect(),
        other => panic!("not a record: {other:?}"),
    }
}

/// This crate's directory as cargo gives it to the running test: test binaries may come from a
/// build cache shared with another checkout, where the compile-time path names that checkout.
fn manifest_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
}

#[test]
fn registry_holds_every_avsc_file_in_the_crate() {
    let dir = manifest_dir();
    let mut on_disk = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|x| x == "avsc") {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            on_disk.insert(name, std::fs::read_to_string(&path).unwrap());
        }
    }
    let compiled: BTreeMap<String, String> = schema_files()
        .iter()
        .map(|(n, j)| (n.to_string(), j.to_string()))
        .collect();
    assert_eq!(
        on_disk.keys().collect::<Vec<_>>(),
        compiled.keys().collect::<Vec<_>>(),
        "every .avsc in {dir} must be listed in SCHEMA_FILES (src/registry.rs), and only those"
    );
    assert_eq!(on_disk, compiled);
    let mut files: Vec<&str> = registry().versions().iter().map(|v| v.file()).collect();
    files.sort();
    assert_eq!(
        files,
        compiled.keys().map(String::as_str).collect::<Vec<_>>()
    );
}

/// Every named type and every field says what it is for.
#[test]
fn every_record_enum_and_field_has_a_doc() {
    fn walk(schema: &Schema, file: &str) {
        match schema {
            Schema::Record(r) => {
                assert!(
                    r.doc.as_deref().is_some_and(|d| !d.is_empty()),
                    "{file}: {} has no doc",
                    r.name
                );
                for f in &r.fields {
                    assert!(
                        f.doc.as_deref().is_some_and(|d| !d.is_empty()),
                        "{file}: field {} has no doc",
                        f.name
                    );
                    walk(&f.schema, file);
                }
            }
            Schema::Enum(e) => assert!(e.doc.is_some(), "{file}: {} has no doc", e.name),
            Schema::Array(a) => walk(&a.items, file),
            Schema::Map(m) => walk(&m.types, file),
            Schema::Union(u) => u.variants().iter().for_each(|v| walk(v, file)),
            _ => {}
        }
    }
    for v in registry().versions() {
        walk(v.schema(), v.file());
        assert_eq!(SchemaKind::from(v.schema()), SchemaKind::Record);
    }
}
