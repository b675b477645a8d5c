//! The write-ahead log of the embedded store.
//!
//! Each batch of transactions the writer commits is appended here as one record and made
//! durable with one `fdatasync` before the batch is acknowledged; the redb tables are then
//! committed without an fsync of their own. Every so often the writer makes a durable redb
//! commit (a *checkpoint*) and empties the log. After a crash, redb comes back at its last
//! checkpoint and the records after it are replayed.
//!
//! A record is `[u32 payload length][u32 CRC-32 of payload][payload]`, little-endian; the
//! payload is `[u32 txn count]` then, per transaction, `[u64 revision][u32 op count]` and its
//! ops: `[u8 1][u32 key len][key][u32 value len][value]` for a put, `[u8 2][u32 key len][key]`
//! for a delete. A record cut short by a crash, or one whose checksum does not match, ends the
//! log: it was never acknowledged, and it is truncated away.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::{Error, Op, Result};

/// The log file's name in the store directory.
pub(super) const WAL_FILE: &str = "wal.log";

/// One logged transaction: the revision it was committed at and its writes.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct LoggedTxn {
    pub(super) revision: i64,
    pub(super) ops: Vec<Op>,
}

pub(super) struct Wal {
    file: File,
    path: PathBuf,
    len: u64,
}

fn io_error<'p>(action: &'static str, path: &'p Path) -> impl FnOnce(std::io::Error) -> Error + 'p {
    move |source| Error::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

impl Wal {
    /// Opens (or creates) the log in `dir` and returns the transactions it holds. A torn or
    /// damaged tail is cut off.
    pub(super) fn open(dir: &Path) -> Result<(Self, Vec<LoggedTxn>)> {
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
        let (txns, good) = decode_records(&bytes);
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
            },
            txns,
        ))
    }

    /// Bytes in the log.
    pub(super) fn len(&self) -> u64 {
        self.len
    }

    /// Appends one record holding `txns` and waits until it is on disk. On failure the log is
    /// cut back to where it was, so a later append does not follow garbage.
    pub(super) fn append<'a>(
        &mut self,
        txns: impl ExactSizeIterator<Item = (i64, &'a [Op])>,
    ) -> Result<()> {
        let record = encode_record(txns);
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
                // Best effort: if even this fails the caller stops taking writes.
                self.file
                    .set_len(self.len)
                    .map_err(io_error("roll back write-ahead log", &self.path))?;
                Err(io_error("append to write-ahead log", &self.path)(err))
            }
        }
    }

    /// Empties the log once a checkpoint made its contents durable elsewhere.
    pub(super) fn reset(&mut self) -> Result<()> {
        self.file
            .set_len(0)
            .and_then(|()| self.file.sync_data())
            .map_err(io_error("truncate write-ahead log", &self.path))?;
        self.len = 0;
        Ok(())
    }
}

fn put_u32(out: &mut Vec<u8>, v: usize) {
    out.extend_from_slice(&(v as u32).to_le_bytes());
}

fn encode_record<'a>(txns: impl ExactSizeIterator<Item = (i64, &'a [Op])>) -> Vec<u8> {
    let mut out = vec![0u8; 8]; // length and checksum, filled in below
    put_u32(&mut out, txns.len());
    for (revision, ops) in txns {
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
fn decode_records(bytes: &[u8]) -> (Vec<LoggedTxn>, usize) {
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

fn decode_payload(payload: &[u8]) -> Option<Vec<LoggedTxn>> {
    let mut c = Cursor(payload);
    let count = c.u32()?;
    let mut txns = Vec::with_capacity(count.min(4096));
    for _ in 0..count {
        let revision = c.u64()? as i64;
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
        txns.push(LoggedTxn { revision, ops });
    }
    c.0.is_empty().then_some(txns)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<(i64, Vec<Op>)> {
        vec![
            (2, vec![Op::put("/a", b"1".to_vec())]),
            (3, vec![Op::delete("/a"), Op::put("/b", vec![7; 300])]),
        ]
    }

    #[test]
    fn records_round_trip_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, txns) = Wal::open(dir.path()).unwrap();
        assert!(txns.is_empty());
        let batch = sample();
        wal.append(batch.iter().map(|(r, ops)| (*r, ops.as_slice())))
            .unwrap();
        wal.append([(4, &[Op::put("/c", vec![])][..])].into_iter())
            .unwrap();
        let len = wal.len();
        drop(wal);
        let (wal, txns) = Wal::open(dir.path()).unwrap();
        assert_eq!(wal.len(), len);
        let revs: Vec<i64> = txns.iter().map(|t| t.revision).collect();
        assert_eq!(revs, vec![2, 3, 4]);
        assert_eq!(txns[1].ops, batch[1].1);
    }

    #[test]
    fn torn_or_damaged_tail_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path()).unwrap();
        wal.append([(2, &[Op::put("/a", b"1".to_vec())][..])].into_iter())
            .unwrap();
        let good = wal.len();
        wal.append([(3, &[Op::put("/b", b"2".to_vec())][..])].into_iter())
            .unwrap();
        drop(wal);
        let path = dir.path().join(WAL_FILE);

        // Cut the second record in half: only the first survives, and the file is truncated.
        let full = std::fs::read(&path).unwrap();
        std::fs::write(&path, &full[..full.len() - 5]).unwrap();
        let (wal, txns) = Wal::open(dir.path()).unwrap();
        assert_eq!(txns.len(), 1);
        assert_eq!(wal.len(), good);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), good);
        drop(wal);

        // Flip a byte of the remaining record's payload: the checksum rejects it.
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let (_, txns) = Wal::open(dir.path()).unwrap();
        assert!(txns.is_empty());
    }

    #[test]
    fn garbage_payload_with_valid_crc_is_rejected() {
        let payload = [9u8, 9, 9];
        let mut bytes = (payload.len() as u32).to_le_bytes().to_vec();
        bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        bytes.extend_from_slice(&payload);
        let (txns, good) = decode_records(&bytes);
        assert!(txns.is_empty());
        assert_eq!(good, 0);
    }

    #[test]
    fn reset_empties_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path()).unwrap();
        wal.append([(2, &[Op::delete("/x")][..])].into_iter())
            .unwrap();
        wal.reset().unwrap();
        assert_eq!(wal.len(), 0);
        drop(wal);
        let (_, txns) = Wal::open(dir.path()).unwrap();
        assert!(txns.is_empty());
    }
}
