//! The spool: an append-only log on disk that holds events while Redis cannot take
//! them, in the order they were published.
//!
//! It is a sequence of segment files `spool-<id>.log` (ids grow by one, 16 hex
//! digits so that they sort by name). New records are appended to the last segment;
//! replay reads from a read position (segment id, byte offset) that the writer
//! persists in the state file once Redis has acknowledged what lies before it.
//! A segment that has been read completely is deleted, so the disk holds at most the
//! unreplayed records plus the rest of one segment.
//!
//! Record format (little endian):
//!
//! ```text
//! u32 len | u32 crc32(body) | body[len]
//! body = u64 seq | u8 src_len | src | u16 stream_len | stream | d (the JSON)
//! ```
//!
//! A crash can leave a torn record at the end of the last segment; on open it is
//! detected (short read or checksum mismatch) and cut off. A record is never
//! rewritten, so a torn record can only be the last one.

use std::collections::{HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Largest record accepted when reading back (a corrupt length beyond it means
/// corruption, not a huge event).
const MAX_RECORD: u32 = 16 << 20;
const HEADER: usize = 8;

/// One event ready for Redis: which stream, which source counter, its seq and JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub stream: Arc<str>,
    pub src: Arc<str>,
    pub seq: u64,
    pub d: String,
}

/// A position in the spool: (segment id, byte offset in it). Ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    pub segment: u64,
    pub offset: u64,
}

#[derive(Debug)]
struct Segment {
    id: u64,
    /// Bytes of complete records in it.
    size: u64,
}

/// What [`Spool::open`] found.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Records not yet replayed.
    pub records: u64,
    /// The highest seq per source among them.
    pub last_seq: HashMap<String, u64>,
    /// Bytes cut off a torn or corrupt tail (0 normally).
    pub discarded_bytes: u64,
}

/// The spool directory's segments, the append handle and the read position.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    segments: VecDeque<Segment>,
    /// Next segment id to create.
    next_id: u64,
    /// Append handle of the last segment, if open.
    writer: Option<File>,
    read: Pos,
    segment_max: u64,
    /// Appended since the last `sync`.
    unsynced: bool,
    /// Interned stream and source names for records read back.
    names: HashMap<String, Arc<str>>,
    encode_buf: Vec<u8>,
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("spool-{id:016x}.log"))
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let hex = name.strip_prefix("spool-")?.strip_suffix(".log")?;
    (hex.len() == 16).then(|| u64::from_str_radix(hex, 16).ok())?
}

impl Spool {
    /// Open the spool in `dir`, resuming at `read` (from the state file): delete the
    /// segments before it, check every record after it, cut a torn tail.
    pub fn open(dir: &Path, read: Pos, segment_max: u64) -> io::Result<(Spool, Recovered)> {
        let mut ids: Vec<u64> = fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| parse_segment_name(&e.file_name().to_string_lossy()))
            .collect();
        ids.sort_unstable();
        let mut spool = Spool {
            dir: dir.to_owned(),
            segments: VecDeque::new(),
            next_id: read.segment,
            writer: None,
            read,
            segment_max: segment_max.max(4096),
            unsynced: false,
            names: HashMap::new(),
            encode_buf: Vec::new(),
        };
        let mut recovered = Recovered::default();
        for id in ids {
            if id < read.segment {
                // Completely replayed before the last stop: its deletion was interrupted.
                fs::remove_file(segment_path(dir, id))?;
                continue;
            }
            spool.next_id = spool.next_id.max(id + 1);
            spool.segments.push_back(Segment { id, size: 0 });
        }
        // Where reading starts: the saved position if its segment still exists,
        // else the start of the first later segment.
        match spool.segments.front() {
            Some(first) if first.id == read.segment => {}
            Some(first) => {
                spool.read = Pos {
                    segment: first.id,
                    offset: 0,
                }
            }
            None => {
                spool.read = Pos {
                    segment: spool.next_id,
                    offset: 0,
                }
            }
        }
        let count = spool.segments.len();
        for i in 0..count {
            let id = spool.segments[i].id;
            let start = if id == spool.read.segment {
                spool.read.offset
            } else {
                0
            };
            let last = i + 1 == count;
            let (valid_end, file_len) = scan(&segment_path(dir, id), start, &mut recovered)?;
            if valid_end < file_len {
                recovered.discarded_bytes += file_len - valid_end;
                if last {
                    // A torn append: cut it off so that new records follow valid ones.
                    OpenOptions::new()
                        .write(true)
                        .open(segment_path(dir, id))?
                        .set_len(valid_end)?;
                }
            }
            spool.segments[i].size = valid_end;
            if id == spool.read.segment && spool.read.offset > valid_end {
                spool.read.offset = valid_end;
            }
        }
        Ok((spool, recovered))
    }

    /// Where replay stands.
    pub fn read_pos(&self) -> Pos {
        self.read
    }

    /// The position just after the last record.
    pub fn end_pos(&self) -> Pos {
        match self.segments.back() {
            Some(s) => Pos {
                segment: s.id,
                offset: s.size,
            },
            None => self.read,
        }
    }

    /// True when every record has been replayed.
    pub fn is_empty(&self) -> bool {
        self.read >= self.end_pos()
    }

    /// Bytes of records not yet replayed.
    pub fn live_bytes(&self) -> u64 {
        self.segments
            .iter()
            .map(|s| {
                if s.id == self.read.segment {
                    s.size.saturating_sub(self.read.offset)
                } else {
                    s.size
                }
            })
            .sum()
    }

    /// Append records (one write call), starting a new segment first if the current
    /// one is full. Not synced: see [`sync`](Self::sync).
    pub fn append(&mut self, records: &[Record]) -> io::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut buf = std::mem::take(&mut self.encode_buf);
        buf.clear();
        for r in records {
            encode(r, &mut buf);
        }
        let result = self.append_bytes(&buf);
        self.encode_buf = buf;
        result
    }

    fn append_bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
        let full = self
            .segments
            .back()
            .is_none_or(|s| s.size >= self.segment_max);
        if full || self.writer.is_none() {
            if full {
                self.start_segment()?;
            } else {
                let id = self.segments.back().expect("checked").id;
                self.writer = Some(
                    OpenOptions::new()
                        .append(true)
                        .open(segment_path(&self.dir, id))?,
                );
            }
        }
        let writer = self.writer.as_mut().expect("opened above");
        if let Err(e) = writer.write_all(bytes) {
            // A partial write would leave a torn record in the middle of later ones:
            // cut the segment back to its last complete record.
            let last = self.segments.back().expect("a segment is open");
            let _ = writer.set_len(last.size);
            self.writer = None;
            return Err(e);
        }
        self.segments.back_mut().expect("a segment is open").size += bytes.len() as u64;
        self.unsynced = true;
        Ok(())
    }

    fn start_segment(&mut self) -> io::Result<()> {
        if let Some(w) = self.writer.take()
            && self.unsynced
        {
            w.sync_data()?;
        }
        let id = self.next_id;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(segment_path(&self.dir, id))?;
        self.next_id = id + 1;
        self.segments.push_back(Segment { id, size: 0 });
        self.writer = Some(file);
        Ok(())
    }

    /// fsync what was appended (data only, as the files only grow).
    pub fn sync(&mut self) -> io::Result<()> {
        if self.unsynced {
            if let Some(w) = &self.writer {
                w.sync_data()?;
            }
            self.unsynced = false;
        }
        Ok(())
    }

    /// True when appended data awaits an fsync.
    pub fn unsynced(&self) -> bool {
        self.unsynced
    }

    /// Read up to `max` records from the read position without consuming them;
    /// returns the position after the last one read (give it to
    /// [`commit`](Self::commit) once Redis has them). Skips the rest of a segment
    /// whose records no longer check (disk corruption), so replay never stalls.
    pub fn peek(&mut self, max: usize, out: &mut Vec<Record>) -> io::Result<Pos> {
        let max = out.len() + max;
        let mut pos = self.read;
        let mut index = match self.segments.iter().position(|s| s.id == pos.segment) {
            Some(i) => i,
            None => return Ok(pos),
        };
        while out.len() < max && index < self.segments.len() {
            let segment = &self.segments[index];
            let (id, size) = (segment.id, segment.size);
            if pos.offset < size {
                let mut file = File::open(segment_path(&self.dir, id))?;
                file.seek(SeekFrom::Start(pos.offset))?;
                let mut reader = BufReader::with_capacity(1 << 16, file.take(size - pos.offset));
                while out.len() < max && pos.offset < size {
                    match read_record(&mut reader)? {
                        Some((len, body)) => match self.decode(&body) {
                            Some(record) => {
                                out.push(record);
                                pos.offset += len;
                            }
                            None => {
                                pos.offset = size;
                            }
                        },
                        None => pos.offset = size,
                    }
                }
            }
            if out.len() >= max {
                break;
            }
            // This segment is done: continue with the next one, if any.
            index += 1;
            if let Some(next) = self.segments.get(index) {
                pos = Pos {
                    segment: next.id,
                    offset: 0,
                };
            }
        }
        Ok(pos)
    }

    /// Mark everything before `pos` as replayed: delete the segments that are done
    /// (the current one too once everything is replayed).
    pub fn commit(&mut self, pos: Pos) -> io::Result<()> {
        self.read = pos;
        while let Some(front) = self.segments.front() {
            let done_with_front = front.id < self.read.segment
                || (front.id == self.read.segment && self.read.offset >= front.size);
            if !done_with_front {
                break;
            }
            let id = front.id;
            let is_last = self.segments.len() == 1;
            if is_last {
                // Fully replayed: drop the segment; the next append starts a new one.
                self.writer = None;
                self.unsynced = false;
            }
            fs::remove_file(segment_path(&self.dir, id))?;
            self.segments.pop_front();
            match self.segments.front() {
                Some(next) if self.read.segment <= id => {
                    self.read = Pos {
                        segment: next.id,
                        offset: 0,
                    }
                }
                Some(_) => {}
                None => {
                    self.read = Pos {
                        segment: self.next_id,
                        offset: 0,
                    }
                }
            }
        }
        Ok(())
    }

    fn intern(&mut self, name: &str) -> Arc<str> {
        if let Some(a) = self.names.get(name) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(name);
        self.names.insert(name.to_owned(), a.clone());
        a
    }

    fn decode(&mut self, body: &[u8]) -> Option<Record> {
        let (seq, src, stream, d) = split_body(body)?;
        let src = self.intern(src);
        let stream = self.intern(stream);
        Some(Record {
            stream,
            src,
            seq,
            d: d.to_owned(),
        })
    }
}

fn encode(r: &Record, buf: &mut Vec<u8>) {
    let body_len = 8 + 1 + r.src.len() + 2 + r.stream.len() + r.d.len();
    let start = buf.len();
    buf.extend_from_slice(&(body_len as u32).to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    let body_start = buf.len();
    buf.extend_from_slice(&r.seq.to_le_bytes());
    buf.push(r.src.len() as u8);
    buf.extend_from_slice(r.src.as_bytes());
    buf.extend_from_slice(&(r.stream.len() as u16).to_le_bytes());
    buf.extend_from_slice(r.stream.as_bytes());
    buf.extend_from_slice(r.d.as_bytes());
    let crc = crc32(&buf[body_start..]);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

fn split_body(body: &[u8]) -> Option<(u64, &str, &str, &str)> {
    let seq = u64::from_le_bytes(body.get(..8)?.try_into().ok()?);
    let src_len = *body.get(8)? as usize;
    let src = std::str::from_utf8(body.get(9..9 + src_len)?).ok()?;
    let at = 9 + src_len;
    let stream_len = u16::from_le_bytes(body.get(at..at + 2)?.try_into().ok()?) as usize;
    let stream = std::str::from_utf8(body.get(at + 2..at + 2 + stream_len)?).ok()?;
    let d = std::str::from_utf8(body.get(at + 2 + stream_len..)?).ok()?;
    Some((seq, src, stream, d))
}

/// Read one record: `Ok(Some((bytes consumed, body)))`, `Ok(None)` at a clean end,
/// a torn record or a checksum mismatch.
fn read_record(reader: &mut impl Read) -> io::Result<Option<(u64, Vec<u8>)>> {
    let mut header = [0u8; HEADER];
    if !read_full(reader, &mut header)? {
        return Ok(None);
    }
    let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes"));
    let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
    if len > MAX_RECORD {
        return Ok(None);
    }
    let mut body = vec![0u8; len as usize];
    if !read_full(reader, &mut body)? || crc32(&body) != crc || split_body(&body).is_none() {
        return Ok(None);
    }
    Ok(Some((HEADER as u64 + u64::from(len), body)))
}

/// Fill `buf` completely: `Ok(false)` if the input ends first.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => return Ok(false),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Check the records of a segment from `start`: returns (end of the last valid
/// record, file length) and notes the highest seq per source.
fn scan(path: &Path, start: u64, found: &mut Recovered) -> io::Result<(u64, u64)> {
    let mut file = File::open(path)?;
    let file_len = file.metadata()?.len();
    if start >= file_len {
        return Ok((start.min(file_len), file_len));
    }
    file.seek(SeekFrom::Start(start))?;
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let mut at = start;
    while let Some((len, body)) = read_record(&mut reader)? {
        let (seq, src, _, _) = split_body(&body).expect("checked by read_record");
        let last = found.last_seq.entry(src.to_owned()).or_default();
        *last = (*last).max(seq);
        found.records += 1;
        at += len;
    }
    Ok((at, file_len))
}

/// CRC-32 (IEEE 802.3, as zlib's), table-driven.
pub fn crc32(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, slot) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *slot = c;
        }
        t
    });
    let mut crc = !0u32;
    for &b in data {
        crc = table[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "tc-spool-{name}-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn rec(seq: u64) -> Record {
        Record {
            stream: Arc::from("tc:events"),
            src: Arc::from("mt5"),
            seq,
            d: format!("{{\"seq\":{seq}}}"),
        }
    }

    #[test]
    fn crc_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn records_come_back_in_order_across_segments_and_reopen() {
        let dir = tmp("order");
        let (mut spool, found) = Spool::open(&dir, Pos::default(), 4096).unwrap();
        assert_eq!(found.records, 0);
        for chunk in (1..=300u64).collect::<Vec<_>>().chunks(7) {
            let batch: Vec<Record> = chunk.iter().map(|&s| rec(s)).collect();
            spool.append(&batch).unwrap();
        }
        assert!(spool.segments.len() > 1, "small segments roll over");
        let mut got = Vec::new();
        let pos = spool.peek(100, &mut got).unwrap();
        spool.commit(pos).unwrap();
        assert_eq!(
            got.iter().map(|r| r.seq).collect::<Vec<_>>(),
            (1..=100).collect::<Vec<_>>()
        );

        // Reopen at the committed position: the rest, nothing twice.
        drop(spool);
        let (mut spool, found) = Spool::open(&dir, pos, 4096).unwrap();
        assert_eq!(found.records, 200);
        assert_eq!(found.last_seq["mt5"], 300);
        let mut rest = Vec::new();
        loop {
            let before = rest.len();
            let pos = spool.peek(64, &mut rest).unwrap();
            spool.commit(pos).unwrap();
            if rest.len() == before {
                break;
            }
        }
        assert_eq!(
            rest.iter().map(|r| r.seq).collect::<Vec<_>>(),
            (101..=300).collect::<Vec<_>>()
        );
        assert!(spool.is_empty());
        assert_eq!(spool.live_bytes(), 0);
        assert_eq!(
            fs::read_dir(&dir).unwrap().count(),
            0,
            "replayed segments are deleted"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_torn_tail_is_cut_off_and_appends_continue_after_it() {
        let dir = tmp("torn");
        let (mut spool, _) = Spool::open(&dir, Pos::default(), 1 << 20).unwrap();
        spool.append(&[rec(1), rec(2)]).unwrap();
        let end = spool.end_pos();
        drop(spool);
        // Half a record, as a crash in the middle of a write would leave.
        let path = segment_path(&dir, end.segment);
        let mut torn = Vec::new();
        encode(&rec(3), &mut torn);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&torn[..torn.len() / 2]).unwrap();
        drop(f);

        let (mut spool, found) = Spool::open(&dir, Pos::default(), 1 << 20).unwrap();
        assert_eq!(found.records, 2);
        assert!(found.discarded_bytes > 0);
        spool.append(&[rec(4)]).unwrap();
        let mut got = Vec::new();
        spool.peek(10, &mut got).unwrap();
        assert_eq!(got.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2, 4]);
        fs::remove_dir_all(&dir).unwrap();
    }
}
