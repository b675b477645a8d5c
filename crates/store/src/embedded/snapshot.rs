//! Snapshots: the whole multi-version state in one file, so the write-ahead log can be emptied.
//!
//! Layout (little-endian): the magic `RKSNAP01`, `[u64 revision][u64 compacted][u64 key count]`,
//! then per key `[u32 key len][key][u32 version count]` and per version
//! `[u64 revision][u64 create revision][u64 version][u8 1][u32 value len][value]` (a put) or
//! `[u64 revision][u64 0][u64 0][u8 0]` (a tombstone), and finally a CRC-32 of everything
//! before it. A snapshot is written to a temporary file, synced, and renamed over the old one,
//! so a crash leaves either the old or the new snapshot, never half of one.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::Path;
use std::sync::Arc;

use super::state::{State, Version};
use crate::{Error, Result};

/// The snapshot's file name in the store directory.
pub const SNAPSHOT_FILE: &str = "snapshot";
const MAGIC: &[u8; 8] = b"RKSNAP01";

fn io<'p>(action: &'static str, path: &'p Path) -> impl FnOnce(std::io::Error) -> Error + 'p {
    move |source| Error::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// A writer that checksums what passes through it.
struct Crc<W> {
    inner: W,
    hasher: crc32fast::Hasher,
}

impl<W: Write> Write for Crc<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes `state` as the directory's snapshot, atomically. Returns its size in bytes.
pub(super) fn write(dir: &Path, state: &State) -> Result<u64> {
    let path = dir.join(SNAPSHOT_FILE);
    let tmp = dir.join(format!("{SNAPSHOT_FILE}.tmp"));
    let file = File::create(&tmp).map_err(io("create snapshot", &tmp))?;
    let mut w = Crc {
        inner: BufWriter::with_capacity(1 << 20, file),
        hasher: crc32fast::Hasher::new(),
    };
    let result = (|| -> std::io::Result<()> {
        w.write_all(MAGIC)?;
        w.write_all(&(state.revision as u64).to_le_bytes())?;
        w.write_all(&(state.compacted as u64).to_le_bytes())?;
        w.write_all(&(state.keys.len() as u64).to_le_bytes())?;
        for (key, versions) in &state.keys {
            w.write_all(&(key.len() as u32).to_le_bytes())?;
            w.write_all(key)?;
            w.write_all(&(versions.len() as u32).to_le_bytes())?;
            for v in versions {
                w.write_all(&(v.revision as u64).to_le_bytes())?;
                w.write_all(&(v.create_revision as u64).to_le_bytes())?;
                w.write_all(&(v.version as u64).to_le_bytes())?;
                match &v.value {
                    Some(value) => {
                        w.write_all(&[1])?;
                        w.write_all(&(value.len() as u32).to_le_bytes())?;
                        w.write_all(value)?;
                    }
                    None => w.write_all(&[0])?,
                }
            }
        }
        let crc = w.hasher.clone().finalize();
        w.inner.write_all(&crc.to_le_bytes())?;
        let file = w.inner.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()
    })();
    result.map_err(io("write snapshot", &tmp))?;
    std::fs::rename(&tmp, &path).map_err(io("replace snapshot", &path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("sync store dir", dir))?;
    Ok(std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0))
}

/// Reads the directory's snapshot; `None` when there is none yet (a new store).
pub(super) fn read(dir: &Path) -> Result<Option<(State, u64)>> {
    let path = dir.join(SNAPSHOT_FILE);
    let mut file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("open snapshot", &path)(e)),
    };
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(io("read snapshot", &path))?;
    let corrupt = |message: &str| Error::Corrupt {
        path: path.clone(),
        message: message.to_string(),
    };
    if !bytes.starts_with(MAGIC) {
        return Err(corrupt("not an rkube snapshot"));
    }
    if bytes.len() < MAGIC.len() + 28 {
        return Err(corrupt("snapshot too short"));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
        return Err(corrupt("snapshot checksum mismatch"));
    }
    let state = decode(&body[MAGIC.len()..]).ok_or_else(|| corrupt("snapshot is malformed"))?;
    Ok(Some((state, bytes.len() as u64)))
}

fn decode(mut b: &[u8]) -> Option<State> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (b.get(..n)?, b.get(n..)?);
        *b = rest;
        Some(head)
    }
    fn u64(b: &mut &[u8]) -> Option<u64> {
        Some(u64::from_le_bytes(take(b, 8)?.try_into().ok()?))
    }
    fn u32(b: &mut &[u8]) -> Option<usize> {
        Some(u32::from_le_bytes(take(b, 4)?.try_into().ok()?) as usize)
    }
    let revision = u64(&mut b)? as i64;
    let compacted = u64(&mut b)? as i64;
    let nkeys = u64(&mut b)?;
    let mut keys = BTreeMap::new();
    for _ in 0..nkeys {
        let klen = u32(&mut b)?;
        let key = take(&mut b, klen)?.to_vec();
        let nversions = u32(&mut b)?;
        let mut versions = Vec::with_capacity(nversions.min(1024));
        for _ in 0..nversions {
            let rev = u64(&mut b)? as i64;
            let create_revision = u64(&mut b)? as i64;
            let version = u64(&mut b)? as i64;
            let value = match take(&mut b, 1)?[0] {
                1 => {
                    let vlen = u32(&mut b)?;
                    Some(Arc::from(take(&mut b, vlen)?))
                }
                0 => None,
                _ => return None,
            };
            versions.push(Version {
                revision: rev,
                create_revision,
                version,
                value,
            });
        }
        if versions.is_empty() || !versions.windows(2).all(|w| w[0].revision < w[1].revision) {
            return None;
        }
        keys.insert(key, versions);
    }
    if !b.is_empty() {
        return None;
    }
    Some(State::from_parts(keys, revision, compacted))
}
