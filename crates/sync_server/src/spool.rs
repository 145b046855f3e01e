//! The records of a streamed `APPLY MAILBOX`, checked and waiting on disk for the end
//! of their line.
//!
//! A Cyrus client sends a whole mailbox in one `APPLY MAILBOX` line. The decoder hands
//! its RECORD items out in batches ([`csync_protocol::Decoder::stream_records`]); the
//! replica checks each record as it arrives (the dry run of `apply_mailbox`) and
//! writes the ones to apply here. Only when the line is complete, and every record
//! and key passed, are they read back, one at a time, into a single store
//! transaction. So memory holds one batch, not the mailbox.
//!
//! Why a file rather than a store transaction left open while the line arrives: the
//! index has one writer at a time (`BEGIN IMMEDIATE`), and holding it while waiting
//! on the network (up to `sync_timeout`) would stall every other writer: other
//! sessions, `csyncadm`, local deliveries. Cyrus also reads the whole line before it
//! locks the mailbox.
//!
//! The file is private to the connection and unlinked as soon as it is created
//! ([`crate::staging::Staging::spool_file`]), so it disappears with the connection
//! or the process whatever happens; it is never fsynced (the transaction makes the
//! records durable). The format is this module's own: fixed-width little-endian
//! fields and length-prefixed strings, one record after the other.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};

use csync_protocol::Guid;
use csync_protocol::mailbox::{Annotation, Record, SystemFlags};

/// Buffer of the writer and of the reader.
const BUFFER: usize = 64 * 1024;

/// Why the spool could not be written or read back.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("record spool: {0}")]
    Io(#[from] io::Error),
    #[error("record spool: {0} is not valid UTF-8")]
    NotUtf8(&'static str),
}

/// A record the dry run accepted, as the commit needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Planned {
    pub record: Record,
    /// An append whose staged file is linked into the mailbox (otherwise the record's
    /// file, if any, stays as it is).
    pub link: bool,
}

/// The spool being written.
#[derive(Debug)]
pub struct Spool {
    file: BufWriter<File>,
    records: u64,
}

impl Spool {
    /// A spool on an empty file opened for reading and writing.
    pub fn new(file: File) -> Spool {
        Spool {
            file: BufWriter::with_capacity(BUFFER, file),
            records: 0,
        }
    }

    pub fn len(&self) -> u64 {
        self.records
    }

    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    pub fn push(&mut self, planned: &Planned) -> Result<(), SpoolError> {
        let w = &mut self.file;
        let r = &planned.record;
        w.write_all(&[u8::from(planned.link), r.system_flags.bits()])?;
        w.write_all(&r.uid.to_le_bytes())?;
        w.write_all(&r.size.to_le_bytes())?;
        for n in [
            r.modseq,
            r.last_updated,
            r.internaldate,
            r.thrid,
            r.savedate,
            r.createdmodseq,
        ] {
            w.write_all(&n.to_le_bytes())?;
        }
        w.write_all(&r.guid.0)?;
        write_len(w, r.user_flags.len())?;
        for flag in &r.user_flags {
            write_bytes(w, flag.as_bytes())?;
        }
        write_len(w, r.annotations.len())?;
        for a in &r.annotations {
            write_bytes(w, a.entry.as_bytes())?;
            write_bytes(w, a.userid.as_bytes())?;
            w.write_all(&a.modseq.to_le_bytes())?;
            write_bytes(w, &a.value)?;
        }
        self.records += 1;
        Ok(())
    }

    /// Everything written, from the start.
    pub fn into_reader(self) -> Result<SpoolReader, SpoolError> {
        let records = self.records;
        let mut file = self.file.into_inner().map_err(|e| e.into_error())?;
        file.seek(SeekFrom::Start(0))?;
        Ok(SpoolReader {
            file: BufReader::with_capacity(BUFFER, file),
            left: records,
        })
    }
}

fn write_len(w: &mut impl Write, len: usize) -> io::Result<()> {
    let len = u32::try_from(len).map_err(|_| io::Error::other("string too long"))?;
    w.write_all(&len.to_le_bytes())
}

fn write_bytes(w: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    write_len(w, bytes.len())?;
    w.write_all(bytes)
}

/// The spool read back, one record at a time.
#[derive(Debug)]
pub struct SpoolReader {
    file: BufReader<File>,
    left: u64,
}

impl SpoolReader {
    fn array<const N: usize>(&mut self) -> io::Result<[u8; N]> {
        let mut buf = [0; N];
        self.file.read_exact(&mut buf)?;
        Ok(buf)
    }

    fn u32(&mut self) -> io::Result<u32> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> io::Result<u64> {
        self.array().map(u64::from_le_bytes)
    }

    fn bytes(&mut self) -> io::Result<Vec<u8>> {
        let len = self.u32()? as usize;
        let mut buf = vec![0; len];
        self.file.read_exact(&mut buf)?;
        Ok(buf)
    }

    fn text(&mut self, what: &'static str) -> Result<String, SpoolError> {
        String::from_utf8(self.bytes()?).map_err(|_| SpoolError::NotUtf8(what))
    }

    fn read(&mut self) -> Result<Planned, SpoolError> {
        let [link, flags] = self.array()?;
        let uid = self.u32()?;
        let size = self.u32()?;
        let mut n = [0u64; 6];
        for slot in &mut n {
            *slot = self.u64()?;
        }
        let [
            modseq,
            last_updated,
            internaldate,
            thrid,
            savedate,
            createdmodseq,
        ] = n;
        let guid = Guid(self.array()?);
        let user_flags = (0..self.u32()?)
            .map(|_| self.text("a user flag"))
            .collect::<Result<_, _>>()?;
        let annotations = (0..self.u32()?)
            .map(|_| {
                Ok(Annotation {
                    entry: self.text("an annotation entry")?,
                    userid: self.text("an annotation userid")?,
                    modseq: self.u64()?,
                    value: self.bytes()?,
                })
            })
            .collect::<Result<_, SpoolError>>()?;
        Ok(Planned {
            link: link != 0,
            record: Record {
                uid,
                modseq,
                last_updated,
                system_flags: SystemFlags::from_bits(flags),
                user_flags,
                internaldate,
                size,
                guid,
                thrid,
                savedate,
                createdmodseq,
                annotations,
            },
        })
    }
}

impl Iterator for SpoolReader {
    type Item = Result<Planned, SpoolError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        Some(self.read())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_come_back_as_they_went_in() {
        let planned = [
            Planned {
                link: true,
                record: Record {
                    uid: 7,
                    modseq: u64::MAX,
                    last_updated: 1,
                    system_flags: SystemFlags::SEEN | SystemFlags::EXPUNGED,
                    user_flags: vec!["$Junk".into(), "ünï".into(), String::new()],
                    internaldate: 2,
                    size: u32::MAX,
                    guid: Guid([0xab; 20]),
                    thrid: 3,
                    savedate: 4,
                    createdmodseq: 5,
                    annotations: vec![Annotation {
                        entry: "/comment".into(),
                        userid: "john".into(),
                        modseq: 6,
                        value: b"a\0b".to_vec(),
                    }],
                },
            },
            Planned {
                link: false,
                record: Record::default(),
            },
        ];
        let mut spool = Spool::new(tempfile::tempfile().unwrap());
        for p in &planned {
            spool.push(p).unwrap();
        }
        assert_eq!(spool.len(), 2);
        let back: Vec<Planned> = spool
            .into_reader()
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(back, planned);
    }
}
