//! Schema fingerprints: CRC-64-AVRO (Rabin) over the Parsing Canonical Form (PCF).
//!
//! The single-object header carries the fingerprint as 8 bytes, **little-endian**, exactly as
//! the Avro specification and the Java, Python (fastavro) and Ruby implementations write it.
//! [`crc64_avro`] returns it as a `u64` whose `to_le_bytes()` are those header bytes; that `u64`
//! equals Java's `SchemaNormalization.parsingFingerprint64` (read as unsigned).
//!
//! Why not just `apache_avro::Schema::fingerprint::<Rabin>()`? Its hash is right, but apache-avro
//! 0.21's canonical form is not: a primitive with a logical type (`{"type": "string",
//! "logicalType": "uuid"}`, `timestamp-millis`) comes out as `{"type":"string"}` instead of
//! `"string"`, so every schema here would get a fingerprint no other implementation computes.
//! [`canonical_form`] repairs that one deviation and is pinned against fastavro's output in the
//! tests below (and at run time by `tests/interop.rs`).

use apache_avro::Schema;

/// The 64-bit "empty" value of the Avro CRC-64 (the spec's `EMPTY`).
const EMPTY: u64 = 0xc15d_213a_a4d7_a795;

const fn table() -> [u64; 256] {
    let mut t = [0u64; 256];
    let mut i = 0;
    while i < 256 {
        let mut fp = i as u64;
        let mut j = 0;
        while j < 8 {
            fp = (fp >> 1) ^ (EMPTY & (0u64.wrapping_sub(fp & 1)));
            j += 1;
        }
        t[i] = fp;
        i += 1;
    }
    t
}

static TABLE: [u64; 256] = table();

/// CRC-64-AVRO ("Rabin") fingerprint of `bytes`, as in the Avro specification's
/// "Schema Fingerprints" section. The header bytes are `crc64_avro(pcf).to_le_bytes()`.
pub fn crc64_avro(bytes: &[u8]) -> u64 {
    bytes.iter().fold(EMPTY, |fp, &b| {
        (fp >> 8) ^ TABLE[((fp ^ u64::from(b)) & 0xff) as usize]
    })
}

const PRIMITIVES: [&str; 8] = [
    "null", "boolean", "int", "long", "float", "double", "bytes", "string",
];

/// The Parsing Canonical Form of `schema`, per the Avro specification.
///
/// apache-avro's own form, with its logical-type deviation repaired: a singleton object
/// `{"type":"<primitive>"}` cannot occur in a correct PCF (the spec's PRIMITIVES rule), and names,
/// symbols and other strings in a PCF cannot contain `{` or `"`, so the textual replacement is
/// exact.
pub fn canonical_form(schema: &Schema) -> String {
    let mut pcf = schema.canonical_form();
    for p in PRIMITIVES {
        let bad = format!("{{\"type\":\"{p}\"}}");
        if pcf.contains(&bad) {
            pcf = pcf.replace(&bad, &format!("\"{p}\""));
        }
    }
    pcf
}

/// The fingerprint a single-object header carries for `schema`.
pub fn schema_fingerprint(schema: &Schema) -> u64 {
    crc64_avro(canonical_form(schema).as_bytes())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// From the Avro repository's `share/test/data/schema-tests.txt` (the Java test vectors),
    /// as signed 64-bit values.
    #[test]
    fn matches_the_avro_spec_test_vectors() {
        assert_eq!(crc64_avro(br#""null""#) as i64, 7195948357588979594);
        assert_eq!(crc64_avro(br#""int""#) as i64, 8247732601305521295);
        assert_eq!(crc64_avro(br#""long""#) as i64, -3434872931120570953);
        assert_eq!(crc64_avro(br#""string""#) as i64, -8142146995180207161);
        assert_eq!(
            crc64_avro(br#"{"name":"foo","type":"record","fields":[]}"#) as i64,
            -4824392279771201922
        );
    }

    /// The header bytes for `"int"`, as the Ruby and Java single-object tests write them.
    #[test]
    fn header_bytes_are_little_endian() {
        let schema = Schema::parse_str(r#"{"type": "int"}"#).unwrap();
        assert_eq!(
            schema_fingerprint(&schema).to_le_bytes(),
            [0x8f, 0x5c, 0x39, 0x3f, 0x1a, 0xd5, 0x75, 0x72]
        );
    }

    #[test]
    fn agrees_with_apache_avro_rabin_where_its_canonical_form_is_right() {
        let schema = Schema::parse_str(
            r#"{"type":"record","name":"R","namespace":"n","fields":[{"name":"a","type":"long"}]}"#,
        )
        .unwrap();
        let theirs = schema.fingerprint::<apache_avro::rabin::Rabin>();
        assert_eq!(
            schema_fingerprint(&schema).to_le_bytes().to_vec(),
            theirs.bytes
        );
    }

    #[test]
    fn logical_types_canonicalize_to_their_primitive() {
        let schema = Schema::parse_str(
            r#"{"type":"record","name":"R","fields":[
                {"name":"id","type":{"type":"string","logicalType":"uuid"}},
                {"name":"t","type":{"type":"long","logicalType":"timestamp-millis"}},
                {"name":"ts","type":{"type":"array","items":{"type":"long","logicalType":"timestamp-millis"}}}]}"#,
        )
        .unwrap();
        assert_eq!(
            canonical_form(&schema),
            r#"{"name":"R","type":"record","fields":[{"name":"id","type":"string"},{"name":"t","type":"long"},{"name":"ts","type":{"type":"array","items":"long"}}]}"#
        );
    }
}
