//! The schema registry compiled into this build: every `*.avsc` file, parsed once.
//!
//! Files are named `<kind>.v<N>.avsc` (`activity.v2.avsc`); each is self-contained (named types
//! such as `io.tidings.Producer` are defined inline in every file), so any Avro implementation
//! can load one file alone. The [`Registry`] maps a writer fingerprint to its record kind,
//! version and parsed schema, and knows the latest version of each kind: the one [`encode`]
//! writes and [`decode`] resolves into.
//!
//! Adding a version: drop `<kind>.v<N+1>.avsc` next to the others, add it to [`schema_files`]
//! (a test fails until you do), and make sure the evolution test still passes: every version
//! must read data written by every older one.
//!
//! Non-goals: fetching schemas at run time, or a registry service. A build knows exactly the
//! schemas it was compiled with; an unknown fingerprint is a dead letter, never a guess.
//!
//! [`encode`]: crate::encode()
//! [`decode`]: crate::decode()

use std::sync::OnceLock;

use apache_avro::Schema;
use tidings_core::Event;

use crate::fingerprint::{self, crc64_avro};
use crate::{encode, frame};

/// Largest single allocation apache-avro may make while decoding (its process-wide
/// `max_allocation_bytes` guard, set when the registry is built). Records are at most ~100 kB;
/// decoding also checks every length against the bytes actually present before apache-avro sees
/// them, so this is defence in depth.
pub const MAX_ALLOCATION_BYTES: usize = 1024 * 1024;

/// The kinds of record on the wire, one per [`Event`] variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecordKind {
    /// `io.tidings.Activity`, file stem `activity`.
    Activity,
    /// `io.tidings.Retraction`, file stem `retraction`.
    Retraction,
    /// `io.tidings.Update`, file stem `update`.
    Update,
    /// `io.tidings.GraphChange`, file stem `graph_change`.
    GraphChange,
}

impl RecordKind {
    /// Every kind.
    pub const ALL: [RecordKind; 4] = [
        RecordKind::Activity,
        RecordKind::Retraction,
        RecordKind::Update,
        RecordKind::GraphChange,
    ];

    /// The Avro full name of the record, e.g. `io.tidings.Activity`.
    pub fn full_name(self) -> &'static str {
        match self {
            RecordKind::Activity => "io.tidings.Activity",
            RecordKind::Retraction => "io.tidings.Retraction",
            RecordKind::Update => "io.tidings.Update",
            RecordKind::GraphChange => "io.tidings.GraphChange",
        }
    }

    /// The `.avsc` file stem, e.g. `graph_change`.
    pub fn file_stem(self) -> &'static str {
        match self {
            RecordKind::Activity => "activity",
            RecordKind::Retraction => "retraction",
            RecordKind::Update => "update",
            RecordKind::GraphChange => "graph_change",
        }
    }

    /// The kind of record `event` is written as.
    pub fn of(event: &Event) -> RecordKind {
        match event {
            Event::Activity(_) => RecordKind::Activity,
            Event::Retraction(_) => RecordKind::Retraction,
            Event::Update(_) => RecordKind::Update,
            Event::Graph(_) => RecordKind::GraphChange,
        }
    }

    fn from_stem(stem: &str) -> Option<RecordKind> {
        RecordKind::ALL.into_iter().find(|k| k.file_stem() == stem)
    }

    fn index(self) -> usize {
        self as usize
    }
}

static SCHEMA_FILES: &[(&str, &str)] = &[
    ("activity.v1.avsc", include_str!("../activity.v1.avsc")),
    ("activity.v2.avsc", include_str!("../activity.v2.avsc")),
    ("retraction.v1.avsc", include_str!("../retraction.v1.avsc")),
    ("update.v1.avsc", include_str!("../update.v1.avsc")),
    (
        "graph_change.v1.avsc",
        include_str!("../graph_change.v1.avsc"),
    ),
];

/// Every `.avsc` file compiled into this build: `(file name, JSON text)`.
pub fn schema_files() -> &'static [(&'static str, &'static str)] {
    SCHEMA_FILES
}

/// One version of one record's schema.
#[derive(Debug)]
pub struct SchemaVersion {
    kind: RecordKind,
    version: u32,
    file: &'static str,
    schema: Schema,
    canonical_form: String,
    fingerprint: u64,
    /// A datum reader holding the schema with its names already resolved:
    /// `apache_avro::from_avro_datum` resolves them again on every call, which made decoding
    /// cost ~8 µs per event (replay read at 120k events/s instead of 800k).
    reader: DatumReader,
}

/// [`apache_avro::GenericSingleObjectReader`], which is not `Debug`.
struct DatumReader(apache_avro::GenericSingleObjectReader);

impl std::fmt::Debug for DatumReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DatumReader")
    }
}

impl SchemaVersion {
    /// Which record this is a version of.
    pub fn kind(&self) -> RecordKind {
        self.kind
    }
    /// The version number, from the file name.
    pub fn version(&self) -> u32 {
        self.version
    }
    /// The file it was loaded from, e.g. `activity.v2.avsc`.
    pub fn file(&self) -> &'static str {
        self.file
    }
    /// The parsed schema.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }
    /// Its Parsing Canonical Form (what the fingerprint is computed over).
    pub fn canonical_form(&self) -> &str {
        &self.canonical_form
    }
    /// Its CRC-64-AVRO fingerprint; the header carries `fingerprint().to_le_bytes()`.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }
    /// Reads one whole single-object payload (header included) written with this schema.
    pub(crate) fn read(
        &self,
        payload: &[u8],
    ) -> apache_avro::AvroResult<apache_avro::types::Value> {
        let mut input = payload;
        self.reader.0.read_value(&mut input)
    }
}

/// All schema versions of this build. Get it with [`registry`].
#[derive(Debug)]
pub struct Registry {
    /// Sorted by (kind, version).
    versions: Vec<SchemaVersion>,
    /// Index into `versions` of the latest version of each kind, by `RecordKind::index`.
    latest: [usize; 4],
}

impl Registry {
    fn build() -> Registry {
        apache_avro::util::max_allocation_bytes(MAX_ALLOCATION_BYTES);
        let mut versions: Vec<SchemaVersion> =
            SCHEMA_FILES.iter().map(|&(f, j)| load(f, j)).collect();
        versions.sort_by_key(|v| (v.kind, v.version));
        for pair in versions.windows(2) {
            assert!(
                (pair[0].kind, pair[0].version) != (pair[1].kind, pair[1].version),
                "{} and {} define the same version",
                pair[0].file,
                pair[1].file
            );
        }
        for (i, a) in versions.iter().enumerate() {
            for b in &versions[i + 1..] {
                assert!(
                    a.fingerprint != b.fingerprint,
                    "{} and {} have the same canonical form",
                    a.file,
                    b.file
                );
            }
        }
        let latest = RecordKind::ALL.map(|k| {
            versions
                .iter()
                .rposition(|v| v.kind == k)
                .unwrap_or_else(|| panic!("no schema file for {}", k.full_name()))
        });
        Registry { versions, latest }
    }

    /// Every version, sorted by kind then version.
    pub fn versions(&self) -> &[SchemaVersion] {
        &self.versions
    }

    /// Every version of `kind`, oldest first.
    pub fn versions_of(&self, kind: RecordKind) -> impl Iterator<Item = &SchemaVersion> {
        self.versions.iter().filter(move |v| v.kind == kind)
    }

    /// The version whose fingerprint is `fingerprint`, if this build knows it.
    pub fn by_fingerprint(&self, fingerprint: u64) -> Option<&SchemaVersion> {
        self.versions.iter().find(|v| v.fingerprint == fingerprint)
    }

    /// Version `version` of `kind`, if this build has it.
    pub fn get(&self, kind: RecordKind, version: u32) -> Option<&SchemaVersion> {
        self.versions
            .iter()
            .find(|v| v.kind == kind && v.version == version)
    }

    /// The latest version of `kind`: what [`encode`](crate::encode()) writes and what
    /// [`decode`](crate::decode()) resolves every older version into.
    pub fn latest(&self, kind: RecordKind) -> &SchemaVersion {
        &self.versions[self.latest[kind.index()]]
    }
}

/// The single-object header of a schema: magic and our fingerprint (see `fingerprint.rs` for
/// why not apache-avro's own).
struct Header(u64);

impl apache_avro::headers::HeaderBuilder for Header {
    fn build_header(&self) -> Vec<u8> {
        let mut h = crate::MAGIC.to_vec();
        h.extend_from_slice(&self.0.to_le_bytes());
        h
    }
}

/// Parses one schema file. A bad file is a build defect that every test catches, hence the
/// panics with the file's name.
fn load(file: &'static str, json: &str) -> SchemaVersion {
    let (kind, version) = file
        .strip_suffix(".avsc")
        .and_then(|s| s.rsplit_once(".v"))
        .and_then(|(stem, v)| Some((RecordKind::from_stem(stem)?, v.parse::<u32>().ok()?)))
        .unwrap_or_else(|| panic!("{file}: expected a name like activity.v2.avsc"));
    let schema = Schema::parse_str(json)
        .unwrap_or_else(|e| panic!("{file} is not a valid Avro schema: {e}"));
    match &schema {
        Schema::Record(r) if r.name.fullname(None) == kind.full_name() => {}
        _ => panic!("{file}: expected record {}", kind.full_name()),
    }
    if let Err(e) = frame::check_supported(&schema) {
        panic!("{file}: {e}");
    }
    if let Err(e) = encode::check_writable(kind, &schema) {
        panic!("{file}: {e}");
    }
    let canonical_form = fingerprint::canonical_form(&schema);
    let fingerprint = crc64_avro(canonical_form.as_bytes());
    let reader = apache_avro::GenericSingleObjectReader::new_with_header_builder(
        schema.clone(),
        Header(fingerprint),
    )
    .map(DatumReader)
    .unwrap_or_else(|e| panic!("{file}: cannot resolve the schema's names: {e}"));
    SchemaVersion {
        kind,
        version,
        file,
        schema,
        canonical_form,
        fingerprint,
        reader,
    }
}

/// The registry of this build, parsed on first use.
pub fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Registry::build)
}

/// The fingerprint of version `version` of `kind`, if this build has that version.
pub fn fingerprint_of(kind: RecordKind, version: u32) -> Option<u64> {
    registry().get(kind, version).map(|v| v.fingerprint)
}

/// The latest version number of `kind` in this build.
pub fn latest_version(kind: RecordKind) -> u32 {
    registry().latest(kind).version
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Computed independently with Python: `fastavro.schema.fingerprint(
    /// to_parsing_canonical_form(parse_schema(json)), "CRC-64-AVRO")`, which prints the header
    /// bytes in order (little-endian).
    #[test]
    fn fingerprints_match_fastavro() {
        let expected = [
            (RecordKind::Activity, 1, "e25fc1fe2a13c36a"),
            (RecordKind::Activity, 2, "335441cb2f5984dd"),
            (RecordKind::Retraction, 1, "1d186e3f5c4e7d99"),
            (RecordKind::Update, 1, "837ce6d323984c2b"),
            (RecordKind::GraphChange, 1, "f84e7c4120633726"),
        ];
        for (kind, version, hex) in expected {
            let fp = fingerprint_of(kind, version).expect("version exists");
            let got: String = fp
                .to_le_bytes()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(got, hex, "{kind:?} v{version}");
        }
    }

    #[test]
    fn canonical_form_matches_fastavro() {
        let v2 = registry().get(RecordKind::Activity, 2).expect("v2");
        assert_eq!(
            v2.canonical_form(),
            r#"{"name":"io.tidings.Activity","type":"record","fields":[{"name":"id","type":"string"},{"name":"actor","type":"long"},{"name":"verb","type":"string"},{"name":"object","type":"string"},{"name":"target","type":["null","string"]},{"name":"time_ms","type":"long"},{"name":"to","type":{"type":"array","items":"long"}},{"name":"text","type":"string"},{"name":"attributes","type":{"type":"map","values":"string"}},{"name":"producer","type":{"name":"io.tidings.Producer","type":"record","fields":[{"name":"name","type":"string"},{"name":"version","type":"string"}]}}]}"#
        );
    }

    #[test]
    fn latest_versions() {
        assert_eq!(latest_version(RecordKind::Activity), 2);
        assert_eq!(latest_version(RecordKind::Retraction), 1);
        assert_eq!(latest_version(RecordKind::Update), 1);
        assert_eq!(latest_version(RecordKind::GraphChange), 1);
        assert_eq!(fingerprint_of(RecordKind::Activity, 3), None);
    }

    #[test]
    fn allocation_guard_is_set() {
        let _ = registry();
        assert_eq!(
            apache_avro::util::max_allocation_bytes(usize::MAX),
            MAX_ALLOCATION_BYTES
        );
    }
}
