//! The write-ahead log of the embedded store.
//!
//! Each batch of changes the writer commits is appended here as one record and made durable
//! with one `fdatasync` before any of it is visible or acknowledged. Every so often the writer
//! writes a snapshot of the whole state and empties the log; after a crash the state is the
//! last snapshot plus the records after it.
//!
//! The file starts with the 8-byte magic `RKWAL001`. A record is
//! `[u32 payload length][u32 CRC-32 of payload][payload]`, little-endian; the payload is
//! `[u32 entry count]` then entries: a transaction is `[u8 0][u64 revision][u32 op count]` and
//! its ops (`[u8 1][u32 key len][key][u32 value len][value]` for a put,
//! `[u8 2][u32 key len][key]` for a delete); a compaction is `[u8 1][u64 revision]`. A record
//! cut short by a crash, or one whose checksum does not match, ends the log: it was never
//! acknowledged, and it is truncated away. A file without the magic is not ours and is left
//! untouched.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::{Error, Op, Result};

/// The log file's name in the store directory.
pub const WAL_FILE: &str = "wal.log";

/// The first bytes of every log file.
const MAGIC: &[u8; 8] = b"RKWAL001";

/// One logged change.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Entry {
    /// A transaction that wrote, with the revision it was committed at.
    Txn {
        /// Its revision.
        revision: i64,
        /// Its writes.
        ops: Vec<Op>,
    },
    /// A compaction at a revision.
    Compact {
        /// The new compaction point.
        revision: i64,
    },
}

/// An entry to append, borrowing the ops.
#[derive(Clone, Copy)]
pub(super) enum EntryRef<'a> {
    /// See [`Entry::Txn`].
    Txn(i64, &'a [Op]),
    /// See [`Entry::Compact`].
    Compact(i64),
}

pub(super) struct Wal {
    file: File,
    path: PathBuf,
    len: u64,
    /// False once a failed append could not be rolled back: the file may end in garbage.
    consistent: bool,
}

fn io_error<'p>(action: &'static str, path: &'p Path) -> impl FnOnce(std::io::Error) -> Error + 'p {
    move |source| Error::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

impl Wal {
    /// Opens (or creates) the log in `dir` and returns the entries it holds. A torn or
    /// damaged tail is cut off; a file that is not a log is refused untouched.
    pub(super) fn open(dir: &Path) -> Result<(Self, Vec<Entry>)> {
        let path = dir.join(WAL_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io_error("open write-ahead log", &path))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(io_error("read write-ahead log", &path))?;
        if bytes.len() < MAGIC.len() {
            // New, or a crash while the magic was written.
            if !MAGIC.starts_with(&bytes) {
                return Err(not_a_log(&path));
            }
            file.set_len(0)
                .and_then(|()| file.write_all(MAGIC))
                .and_then(|()| file.sync_data())
                .map_err(io_error("initialise write-ahead log", &path))?;
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
            bytes = MAGIC.to_vec();
        } else if !bytes.starts_with(MAGIC) {
            return Err(not_a_log(&path));
        }
        let (txns, good) = decode_records(&bytes[MAGIC.len()..]);
        let good = good + MAGIC.len();
        if good < bytes.len() {
            tracing::warn!(
                path = %path.display(),
                discarded_bytes = bytes.len() - good,
                "write-ahead log ends in an incomplete record (a crash during a write); it was never acknowledged and is discarded"
            );
            file.set_len(good as u64)
                .and_then(|()| file.sync_data())
                .map_err(io_error("truncate write-ahead log", &path))?;
        }
        Ok((
            Self {
                file,
                path,
                len: good as u64,
                consistent: true,
            },
            txns,
        ))
    }

    /// Bytes in the log.
    pub(super) fn len(&self) -> u64 {
        self.len
    }

    /// Appends one record holding `entries` and waits until it is on disk. On failure the log
    /// is cut back to where it was, so a later append does not follow garbage.
    pub(super) fn append(&mut self, entries: &[EntryRef<'_>]) -> Result<()> {
        let record = encode_record(entries);
        let result = self
            .file
            .write_all(&record)
            .and_then(|()| self.file.sync_data());
        match result {
            Ok(()) => {
                self.len += record.len() as u64;
                Ok(())
            }
            Err(err) => {
                // If even this fails the caller stops taking writes (see `is_consistent`).
                if self.file.set_len(self.len).is_err() {
                    self.consistent = false;
                }
                Err(io_error("append to write-ahead log", &self.path)(err))
            }
        }
    }

    /// Empties the log once a snapshot made its contents durable elsewhere.
    pub(super) fn reset(&mut self) -> Result<()> {
        self.file
            .set_len(MAGIC.len() as u64)
            .and_then(|()| self.file.sync_data())
            .map_err(io_error("truncate write-ahead log", &self.path))?;
        self.len = MAGIC.len() as u64;
        Ok(())
    }

    /// Whether the log still ends with a whole record (false after a failed append that could
    /// not be undone).
    pub(super) fn is_consistent(&self) -> bool {
        self.consistent
    }

    /// Whether the log holds no entries.
    pub(super) fn is_empty(&self) -> bool {
        self.len <= MAGIC.len() as u64
    }
}

fn not_a_log(path: &Path) -> Error {
    Error::Corrupt {
        path: path.to_path_buf(),
        message: "not an rkube write-ahead log".into(),
    }
}

fn put_u32(out: &mut Vec<u8>, v: usize) {
    out.extend_from_slice(&(v as u32).to_le_bytes());
}

fn encode_record(entries: &[EntryRef<'_>]) -> Vec<u8> {
    let mut out = vec![0u8; 8]; // length and checksum, filled in below
    put_u32(&mut out, entries.len());
    for entry in entries {
        let (revision, ops) = match *entry {
            EntryRef::Compact(revision) => {
                out.push(1);
                out.extend_from_slice(&(revision as u64).to_le_bytes());
                continue;
            }
            EntryRef::Txn(revision, ops) => (revision, ops),
        };
        out.push(0);
        out.extend_from_slice(&(revision as u64).to_le_bytes());
        put_u32(&mut out, ops.len());
        for op in ops {
            match op {
                Op::Put { key, value } => {
                    out.push(1);
                    put_u32(&mut out, key.len());
                    out.extend_from_slice(key);
                    put_u32(&mut out, value.len());
                    out.extend_from_slice(value);
                }
                Op::Delete { key } => {
                    out.push(2);
                    put_u32(&mut out, key.len());
                    out.extend_from_slice(key);
                }
            }
        }
    }
    let payload_len = out.len() - 8;
    let crc = crc32fast::hash(&out[8..]);
    out[0..4].copy_from_slice(&(payload_len as u32).to_le_bytes());
    out[4..8].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes every complete, intact record; returns them and the length of the good prefix.
fn decode_records(bytes: &[u8]) -> (Vec<Entry>, usize) {
    let mut txns = Vec::new();
    let mut pos = 0;
    while bytes.len() - pos >= 8 {
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().expect("4 bytes"));
        let Some(payload) = bytes.get(pos + 8..pos + 8 + len) else {
            break;
        };
        if crc32fast::hash(payload) != crc {
            break;
        }
        let Some(decoded) = decode_payload(payload) else {
            break;
        };
        txns.extend(decoded);
        pos += 8 + len;
    }
    (txns, pos)
}

/// A little cursor over a payload; every read is bounds-checked.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = rest;
        Some(head)
    }
    fn u32(&mut self) -> Option<usize> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?) as usize)
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
}

fn decode_payload(payload: &[u8]) -> Option<Vec<Entry>> {
    let mut c = Cursor(payload);
    let count = c.u32()?;
    let mut txns = Vec::with_capacity(count.min(4096));
    for _ in 0..count {
        let tag = c.u8()?;
        let revision = c.u64()? as i64;
        match tag {
            0 => {}
            1 => {
                txns.push(Entry::Compact { revision });
                continue;
            }
            _ => return None,
        }
        let nops = c.u32()?;
        let mut ops = Vec::with_capacity(nops.min(1024));
        for _ in 0..nops {
            let kind = c.u8()?;
            let klen = c.u32()?;
            let key = c.take(klen)?.to_vec();
            ops.push(match kind {
                1 => {
                    let vlen = c.u32()?;
                    Op::Put {
                        key,
                        value: c.take(vlen)?.to_vec(),
                    }
                }
                2 => Op::Delete { key },
                _ => return None,
            });
        }
        txns.push(Entry::Txn { revision, ops });
    }
    c.0.is_empty().then_some(txns)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn revisions(entries: &[Entry]) -> Vec<i64> {
        entries
            .iter()
            .map(|e| match e {
                Entry::Txn { revision, .. } => *revision,
                Entry::Compact { revision } => -revision,
            })
            .collect()
    }

    #[test]
    fn records_round_trip_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, entries) = Wal::open(dir.path()).unwrap();
        assert!(entries.is_empty() && wal.is_empty());
        let b = [Op::delete("/a"), Op::put("/b", vec![7; 300])];
        wal.append(&[
            EntryRef::Txn(2, &[Op::put("/a", b"1".to_vec())]),
            EntryRef::Txn(3, &b),
        ])
        .unwrap();
        wal.append(&[EntryRef::Compact(3), EntryRef::Txn(4, &[])])
            .unwrap();
        let len = wal.len();
        drop(wal);
        let (wal, entries) = Wal::open(dir.path()).unwrap();
        assert_eq!(wal.len(), len);
        assert_eq!(revisions(&entries), vec![2, 3, -3, 4]);
        assert_eq!(
            entries[1],
            Entry::Txn {
                revision: 3,
                ops: b.to_vec()
            }
        );
    }

    #[test]
    fn torn_or_damaged_tail_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path()).unwrap();
        wal.append(&[EntryRef::Txn(2, &[Op::put("/a", b"1".to_vec())])])
            .unwrap();
        let good = wal.len();
        wal.append(&[EntryRef::Txn(3, &[Op::put("/b", b"2".to_vec())])])
            .unwrap();
        drop(wal);
        let path = dir.path().join(WAL_FILE);

        // Cut the second record short: only the first survives, and the file is truncated.
        let full = std::fs::read(&path).unwrap();
        std::fs::write(&path, &full[..full.len() - 5]).unwrap();
        let (wal, entries) = Wal::open(dir.path()).unwrap();
        assert_eq!(revisions(&entries), vec![2]);
        assert_eq!(wal.len(), good);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), good);
        drop(wal);

        // Flip a byte of the remaining record's payload: the checksum rejects it.
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let (_, entries) = Wal::open(dir.path()).unwrap();
        assert!(entries.is_empty());
    }

    #[test]
    fn garbage_payload_with_valid_crc_is_rejected() {
        let payload = [9u8, 9, 9];
        let mut bytes = (payload.len() as u32).to_le_bytes().to_vec();
        bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        bytes.extend_from_slice(&payload);
        let (entries, good) = decode_records(&bytes);
        assert!(entries.is_empty());
        assert_eq!(good, 0);
    }

    #[test]
    fn a_file_that_is_not_a_log_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(WAL_FILE);
        std::fs::write(&path, b"hello world, not a log").unwrap();
        assert!(matches!(Wal::open(dir.path()), Err(Error::Corrupt { .. })));
        assert_eq!(std::fs::read(&path).unwrap(), b"hello world, not a log");
        // A torn magic (crash while creating the log) is fine.
        std::fs::write(&path, &MAGIC[..3]).unwrap();
        let (wal, entries) = Wal::open(dir.path()).unwrap();
        assert!(entries.is_empty() && wal.is_empty());
    }

    #[test]
    fn reset_empties_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path()).unwrap();
        wal.append(&[EntryRef::Txn(2, &[Op::delete("/x")])])
            .unwrap();
        assert!(!wal.is_empty());
        wal.reset().unwrap();
        assert!(wal.is_empty());
        drop(wal);
        let (_, entries) = Wal::open(dir.path()).unwrap();
        assert!(entries.is_empty());
    }
}
