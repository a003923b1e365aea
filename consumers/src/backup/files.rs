//! The backup's files: snapshot chunks and log segments, each compressed and checksummed.
//!
//! A file is an 8-byte magic (`TDGSNAP1` for a chunk of key-value pairs, `TDGLOG01` for a log
//! segment) followed by one LZ4 block (`lz4_flex`: pure Rust, ~1 GB/s per core; the
//! uncompressed size is in the manifest). Its SHA-256 (over the whole file as stored) is in the
//! manifest, checked before anything of it is used. Inside the frame:
//!
//! - chunk: `u32 LE key length, key, u32 LE value length, value`, repeated, in key order;
//! - segment: per record `i64 offset, i64 timestamp (i64::MIN: none), u32 key length
//!   (u32::MAX: none), key, u32 payload length (u32::MAX: none), payload`, in offset order.
//!
//! Files are written to a temporary name, synced and renamed, so a name that exists is whole.

use std::fs;
use std::io::Write;
use std::path::Path;

use sha2::{Digest as _, Sha256};
use tidings_store::KeyValue;

use super::BackupError;
use crate::apply::Record;

/// Magic of a snapshot chunk file.
pub const CHUNK_MAGIC: &[u8; 8] = b"TDGSNAP1";
/// Magic of a log segment file.
pub const SEGMENT_MAGIC: &[u8; 8] = b"TDGLOG01";

/// Hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes of hex (`None`: not hex).
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// What a written file is: its size and checksum.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    /// Bytes on disk.
    pub bytes: u64,
    /// SHA-256 of the file, hex.
    pub sha256: String,
}

/// Compresses `raw` behind `magic` into `path` (atomically: temporary name, fsync, rename).
pub fn write(path: &Path, magic: &[u8; 8], raw: &[u8]) -> Result<Written, BackupError> {
    let io = |e: std::io::Error| BackupError::Io(format!("writing {}: {e}", path.display()));
    // Compressed in place behind the magic: no second buffer to copy from.
    let mut out = vec![0u8; magic.len() + lz4_flex::block::get_maximum_output_size(raw.len())];
    out[..magic.len()].copy_from_slice(magic);
    let n = lz4_flex::block::compress_into(raw, &mut out[magic.len()..])
        .map_err(|e| BackupError::Io(format!("compressing {}: {e}", path.display())))?;
    out.truncate(magic.len() + n);
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp).map_err(io)?;
    f.write_all(&out).map_err(io)?;
    f.sync_data().map_err(io)?;
    fs::rename(&tmp, path).map_err(io)?;
    Ok(Written {
        bytes: out.len() as u64,
        sha256: hex(&Sha256::digest(&out)),
    })
}

/// Reads `path`, checks it against `sha256` and `magic`, and returns its uncompressed body.
/// `raw_bytes` (from the manifest) sizes the output.
pub fn read(
    path: &Path,
    magic: &[u8; 8],
    sha256: &str,
    raw_bytes: u64,
) -> Result<Vec<u8>, BackupError> {
    let data = fs::read(path).map_err(|e| BackupError::Corrupt {
        file: path.display().to_string(),
        why: format!("cannot be read: {e}"),
    })?;
    check(path, &data, sha256)?;
    let body = data
        .strip_prefix(magic.as_slice())
        .ok_or_else(|| BackupError::Corrupt {
            file: path.display().to_string(),
            why: "is not a tidings backup file of this kind (wrong magic)".into(),
        })?;
    lz4_flex::block::decompress(body, raw_bytes as usize).map_err(|e| BackupError::Corrupt {
        file: path.display().to_string(),
        why: format!("does not decompress: {e}"),
    })
}

/// Checks a file's bytes against its manifest checksum.
pub fn check(path: &Path, data: &[u8], sha256: &str) -> Result<(), BackupError> {
    let got = hex(&Sha256::digest(data));
    if got != sha256 {
        return Err(BackupError::Corrupt {
            file: path.display().to_string(),
            why: format!(
                "has checksum {got}, the manifest says {sha256}: the file was altered or damaged"
            ),
        });
    }
    Ok(())
}

/// Checks the file at `path` against its manifest checksum.
pub fn check_file(path: &Path, sha256: &str) -> Result<(), BackupError> {
    let data = fs::read(path).map_err(|e| BackupError::Corrupt {
        file: path.display().to_string(),
        why: format!("cannot be read: {e}"),
    })?;
    check(path, &data, sha256)
}

/// Appends one pair to a chunk body.
pub fn push_pair(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(value);
}

struct Cursor<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let s = self.data.get(self.at..end)?;
        self.at = end;
        Some(s)
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn opt_bytes(&mut self) -> Option<Option<Vec<u8>>> {
        match self.u32()? {
            u32::MAX => Some(None),
            n => Some(Some(self.take(n as usize)?.to_vec())),
        }
    }

    fn done(&self) -> bool {
        self.at >= self.data.len()
    }
}

fn malformed(path: &Path) -> BackupError {
    BackupError::Corrupt {
        file: path.display().to_string(),
        why: "is truncated or malformed inside (its checksum matched: written by another version?)"
            .into(),
    }
}

/// Decodes a chunk body (`path` names it in errors).
pub fn pairs(path: &Path, raw: &[u8]) -> Result<Vec<KeyValue>, BackupError> {
    let mut c = Cursor { data: raw, at: 0 };
    let mut out = Vec::new();
    while !c.done() {
        let pair = (|| {
            let kn = c.u32()? as usize;
            let k = c.take(kn)?.to_vec();
            let vn = c.u32()? as usize;
            let v = c.take(vn)?.to_vec();
            Some((k, v))
        })();
        out.push(pair.ok_or_else(|| malformed(path))?);
    }
    Ok(out)
}

fn push_opt(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        Some(b) => {
            out.extend_from_slice(&(b.len() as u32).to_le_bytes());
            out.extend_from_slice(b);
        }
        None => out.extend_from_slice(&u32::MAX.to_le_bytes()),
    }
}

/// Appends one record to a segment body.
pub fn push_record(out: &mut Vec<u8>, r: &Record) {
    out.extend_from_slice(&r.offset.to_le_bytes());
    out.extend_from_slice(&r.timestamp_ms.unwrap_or(i64::MIN).to_le_bytes());
    push_opt(out, r.key.as_deref());
    push_opt(out, r.payload.as_deref());
}

/// Decodes a segment body of `topic`/`partition`.
pub fn records(
    path: &Path,
    raw: &[u8],
    topic: &str,
    partition: i32,
) -> Result<Vec<Record>, BackupError> {
    let mut c = Cursor { data: raw, at: 0 };
    let mut out = Vec::new();
    while !c.done() {
        let r = (|| {
            let offset = c.i64()?;
            let ts = c.i64()?;
            let key = c.opt_bytes()?;
            let payload = c.opt_bytes()?;
            Some(Record {
                topic: topic.to_string(),
                partition,
                offset,
                key,
                payload,
                timestamp_ms: (ts != i64::MIN).then_some(ts),
            })
        })();
        out.push(r.ok_or_else(|| malformed(path))?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_round_trip_and_a_flipped_byte_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut raw = Vec::new();
        push_pair(&mut raw, b"k1", b"v1");
        push_pair(&mut raw, b"k2", &[7u8; 300]);
        let path = dir.path().join("c.tdsnap");
        let w = write(&path, CHUNK_MAGIC, &raw).expect("write");
        let back = read(&path, CHUNK_MAGIC, &w.sha256, raw.len() as u64).expect("read");
        assert_eq!(
            pairs(&path, &back).expect("pairs"),
            vec![
                (b"k1".to_vec(), b"v1".to_vec()),
                (b"k2".to_vec(), vec![7u8; 300])
            ]
        );
        let e = read(&path, SEGMENT_MAGIC, &w.sha256, raw.len() as u64).unwrap_err();
        assert!(e.to_string().contains("wrong magic"), "{e}");

        let mut data = fs::read(&path).expect("read");
        let last = data.len() - 1;
        data[last] ^= 0x01;
        fs::write(&path, &data).expect("write");
        let e = read(&path, CHUNK_MAGIC, &w.sha256, raw.len() as u64).unwrap_err();
        assert!(
            e.to_string().contains("c.tdsnap") && e.to_string().contains("checksum"),
            "{e}"
        );

        let rec = Record {
            topic: "t".into(),
            partition: 3,
            offset: 42,
            key: None,
            payload: Some(b"p".to_vec()),
            timestamp_ms: Some(7),
        };
        let mut raw = Vec::new();
        push_record(&mut raw, &rec);
        push_record(
            &mut raw,
            &Record {
                key: Some(b"9".to_vec()),
                payload: None,
                timestamp_ms: None,
                offset: 43,
                ..rec.clone()
            },
        );
        let got = records(&path, &raw, "t", 3).expect("records");
        assert_eq!(got[0], rec);
        assert_eq!(
            (got[1].offset, got[1].timestamp_ms, got[1].payload.clone()),
            (43, None, None)
        );
        assert!(records(&path, &raw[..raw.len() - 1], "t", 3).is_err());
        assert_eq!(unhex(&hex(b"\x00\xffab")), Some(b"\x00\xffab".to_vec()));
        assert_eq!(unhex("0g"), None);
    }
}
