//! The state file: the `seq` counters and the spool's read position, kept across
//! restarts of the host process.
//!
//! Two slots, `state.0` and `state.1`, are written alternately, each with a
//! generation number and a checksum, so that a crash in the middle of a write leaves
//! the other slot intact: on open the valid slot with the higher generation wins.
//!
//! Per source the file holds `next` (the next seq to assign, exact after a clean
//! close) and `reserved` (an upper bound on every seq ever assigned, fsynced before a
//! seq beyond it is used). After a crash the writer resumes at the highest of `next`,
//! the spool's last seq + 1 and Redis's high-water mark + 1; when Redis cannot be
//! asked, at `reserved` + 1, which may skip numbers but never reuses one (a reused
//! seq would make tradecast drop the new event as a duplicate).
//!
//! Layout (little endian): `"TCPS" | u32 version | u64 generation | u8 clean |
//! u64 read_segment | u64 read_offset | u8 n | n × (u8 len, src, u64 next,
//! u64 reserved) | u32 crc32(all before)`.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::spool::{Pos, crc32};

const MAGIC: &[u8; 4] = b"TCPS";
const VERSION: u32 = 1;

/// One source's counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counter {
    pub src: String,
    /// Next seq to assign (≥ 1).
    pub next: u64,
    /// Every seq ever assigned is ≤ this (persisted with fsync before exceeding it).
    pub reserved: u64,
}

/// The persisted state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct State {
    pub generation: u64,
    /// True after a clean close: `next` is exact.
    pub clean: bool,
    pub read: Pos,
    pub counters: Vec<Counter>,
}

impl State {
    /// The counter of `src`, created at 1 if the file did not know it.
    pub fn counter(&mut self, src: &str) -> &mut Counter {
        if let Some(i) = self.counters.iter().position(|c| c.src == src) {
            return &mut self.counters[i];
        }
        self.counters.push(Counter {
            src: src.to_owned(),
            next: 1,
            reserved: 0,
        });
        self.counters.last_mut().expect("just pushed")
    }

    fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(64);
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&VERSION.to_le_bytes());
        b.extend_from_slice(&self.generation.to_le_bytes());
        b.push(u8::from(self.clean));
        b.extend_from_slice(&self.read.segment.to_le_bytes());
        b.extend_from_slice(&self.read.offset.to_le_bytes());
        let counters: Vec<&Counter> = self.counters.iter().take(255).collect();
        b.push(counters.len() as u8);
        for c in counters {
            let src = &c.src.as_bytes()[..c.src.len().min(255)];
            b.push(src.len() as u8);
            b.extend_from_slice(src);
            b.extend_from_slice(&c.next.to_le_bytes());
            b.extend_from_slice(&c.reserved.to_le_bytes());
        }
        let crc = crc32(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    fn decode(b: &[u8]) -> Option<State> {
        let mut r = Reader { b, at: 0 };
        if r.take(4)? != MAGIC || r.u32()? != VERSION {
            return None;
        }
        let generation = r.u64()?;
        let clean = r.u8()? != 0;
        let read = Pos {
            segment: r.u64()?,
            offset: r.u64()?,
        };
        let n = r.u8()?;
        let mut counters = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let len = r.u8()? as usize;
            let src = std::str::from_utf8(r.take(len)?).ok()?.to_owned();
            counters.push(Counter {
                src,
                next: r.u64()?,
                reserved: r.u64()?,
            });
        }
        let end = r.at;
        let crc = r.u32()?;
        (crc32(&b[..end]) == crc).then_some(State {
            generation,
            clean,
            read,
            counters,
        })
    }
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.at..self.at + n)?;
        self.at += n;
        Some(s)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

/// The two slot files.
#[derive(Debug)]
pub struct StateFile {
    slots: [File; 2],
}

impl StateFile {
    /// Open (creating) `state.0` and `state.1` in `dir` and load the newest valid
    /// state (a default one, generation 0, when there is none).
    pub fn open(dir: &Path) -> io::Result<(StateFile, State)> {
        let open = |name: &str| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(dir.join(name))
        };
        let mut slots = [open("state.0")?, open("state.1")?];
        let mut best: Option<State> = None;
        for slot in &mut slots {
            let mut bytes = Vec::new();
            slot.seek(SeekFrom::Start(0))?;
            slot.read_to_end(&mut bytes)?;
            if let Some(s) = State::decode(&bytes)
                && best.as_ref().is_none_or(|b| s.generation > b.generation)
            {
                best = Some(s);
            }
        }
        Ok((StateFile { slots }, best.unwrap_or_default()))
    }

    /// Write `state` with the next generation into the older slot; fsync if `sync`.
    pub fn save(&mut self, state: &mut State, sync: bool) -> io::Result<()> {
        state.generation += 1;
        let bytes = state.encode();
        let slot = &mut self.slots[(state.generation % 2) as usize];
        slot.seek(SeekFrom::Start(0))?;
        slot.write_all(&bytes)?;
        if sync {
            slot.sync_data()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_valid_slot_wins() {
        let dir = std::env::temp_dir().join(format!("tc-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (mut file, mut state) = StateFile::open(&dir).unwrap();
        assert_eq!(state, State::default());
        state.counter("mt5").next = 42;
        state.read = Pos {
            segment: 3,
            offset: 99,
        };
        file.save(&mut state, true).unwrap();
        state.counter("mt5").next = 43;
        file.save(&mut state, false).unwrap();
        drop(file);
        let (_, loaded) = StateFile::open(&dir).unwrap();
        assert_eq!(loaded, state);

        // Corrupt the newest slot: the previous generation comes back.
        let newest = dir.join(format!("state.{}", state.generation % 2));
        let mut bytes = std::fs::read(&newest).unwrap();
        bytes[20] ^= 0xff;
        std::fs::write(&newest, bytes).unwrap();
        let (_, loaded) = StateFile::open(&dir).unwrap();
        assert_eq!(loaded.generation, state.generation - 1);
        assert_eq!(loaded.counters[0].next, 42);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
