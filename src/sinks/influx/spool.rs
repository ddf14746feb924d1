//! The durable spool: batches of line protocol that could not be written wait here, one file
//! per batch, and are replayed oldest first.
//!
//! Durability: a batch is written to `<seq>.tmp`, fsynced, renamed to
//! `<seq>-<unix ms>-<lines>.lp`, and the directory is fsynced, before `push` returns. A
//! `kill -9` can therefore lose only what had not reached `push` yet (the batch being
//! filled, at most `batch_max_interval`, and a write in flight); a half-written `.tmp` is
//! deleted on start. Bounds: when the spool exceeds its size or a batch its age, the oldest
//! batches are dropped and their lines counted: never silently, never unbounded.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One spooled batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: PathBuf,
    pub seq: u64,
    pub created_ms: u64,
    pub lines: u64,
    pub bytes: u64,
}

impl Entry {
    fn parse(path: PathBuf, bytes: u64) -> Option<Self> {
        let name = path.file_name()?.to_str()?.strip_suffix(".lp")?;
        let mut parts = name.split('-');
        let seq = parts.next()?.parse().ok()?;
        let created_ms = parts.next()?.parse().ok()?;
        let lines = parts.next()?.parse().ok()?;
        Some(Entry {
            path,
            seq,
            created_ms,
            lines,
            bytes,
        })
    }
}

/// What limits dropped.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    pub batches: u64,
    pub lines: u64,
}

pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    max_age: Duration,
    /// Oldest first.
    entries: std::collections::VecDeque<Entry>,
    next_seq: u64,
    bytes: u64,
    lines: u64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

impl Spool {
    /// Open (creating) the spool directory and index what a previous run left.
    pub fn open(dir: &Path, max_bytes: u64, max_age: Duration) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let mut entries = Vec::new();
        for e in fs::read_dir(dir)? {
            let e = e?;
            let path = e.path();
            match path.extension().and_then(|x| x.to_str()) {
                // an interrupted push: its batch never counted as spooled
                Some("tmp") => fs::remove_file(&path)?,
                Some("lp") => {
                    if let Some(entry) = Entry::parse(path, e.metadata()?.len()) {
                        entries.push(entry);
                    }
                }
                _ => {}
            }
        }
        entries.sort_by_key(|e| e.seq);
        let next_seq = entries.last().map_or(1, |e| e.seq + 1);
        let bytes = entries.iter().map(|e| e.bytes).sum();
        let lines = entries.iter().map(|e| e.lines).sum();
        Ok(Self {
            dir: dir.to_path_buf(),
            max_bytes,
            max_age,
            entries: entries.into(),
            next_seq,
            bytes,
            lines,
        })
    }

    /// Store a batch durably (fsync of file and directory) and enforce the bounds.
    pub fn push(&mut self, body: &[u8], lines: u64) -> io::Result<Dropped> {
        let seq = self.next_seq;
        self.next_seq += 1;
        let created_ms = now_ms();
        let tmp = self.dir.join(format!("{seq:020}.tmp"));
        let path = self.dir.join(format!("{seq:020}-{created_ms}-{lines}.lp"));
        {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(body)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, &path)?;
        sync_dir(&self.dir)?;
        let bytes = body.len() as u64;
        self.entries.push_back(Entry {
            path,
            seq,
            created_ms,
            lines,
            bytes,
        });
        self.bytes += bytes;
        self.lines += lines;
        self.enforce()
    }

    /// Drop the oldest batches beyond the size bound and those older than the age bound.
    pub fn enforce(&mut self) -> io::Result<Dropped> {
        let mut dropped = Dropped::default();
        let oldest_allowed = now_ms().saturating_sub(self.max_age.as_millis() as u64);
        while let Some(front) = self.entries.front() {
            // keep the newest batch even if it alone is over the size bound
            let too_big = self.bytes > self.max_bytes && self.entries.len() > 1;
            if !(too_big || front.created_ms < oldest_allowed) {
                break;
            }
            let e = self.entries.pop_front().expect("front exists");
            self.forget(&e)?;
            dropped.batches += 1;
            dropped.lines += e.lines;
        }
        Ok(dropped)
    }

    fn forget(&mut self, e: &Entry) -> io::Result<()> {
        match fs::remove_file(&e.path) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(err),
        }
        self.bytes -= e.bytes;
        self.lines -= e.lines;
        Ok(())
    }

    /// The oldest batch and its contents.
    pub fn oldest(&self) -> io::Result<Option<(Entry, Vec<u8>)>> {
        match self.entries.front() {
            None => Ok(None),
            Some(e) => Ok(Some((e.clone(), fs::read(&e.path)?))),
        }
    }

    /// Remove a batch after it was written (or set aside).
    pub fn remove(&mut self, entry: &Entry) -> io::Result<()> {
        if let Some(i) = self.entries.iter().position(|e| e.seq == entry.seq) {
            let e = self.entries.remove(i).expect("index exists");
            self.forget(&e)?;
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn lines(&self) -> u64 {
        self.lines
    }

    pub fn batches(&self) -> usize {
        self.entries.len()
    }

    /// Age of the oldest batch.
    pub fn oldest_age(&self) -> Duration {
        self.entries.front().map_or(Duration::ZERO, |e| {
            Duration::from_millis(now_ms().saturating_sub(e.created_ms))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contents(s: &Spool) -> Vec<String> {
        s.entries
            .iter()
            .map(|e| String::from_utf8(fs::read(&e.path).unwrap()).unwrap())
            .collect()
    }

    #[test]
    fn batches_survive_reopening_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20, Duration::from_secs(3600)).unwrap();
        assert!(s.is_empty());
        s.push(b"m a=1 1\n", 1).unwrap();
        s.push(b"m a=2 2\nm a=3 3\n", 2).unwrap();
        assert_eq!((s.batches(), s.lines(), s.bytes()), (2, 3, 24));
        drop(s);
        // a crash in the middle of a push leaves a .tmp: it is not a batch
        fs::write(dir.path().join("00000000000000000003.tmp"), b"m a=half").unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20, Duration::from_secs(3600)).unwrap();
        assert_eq!(contents(&s), vec!["m a=1 1\n", "m a=2 2\nm a=3 3\n"]);
        assert!(!dir.path().join("00000000000000000003.tmp").exists());
        let (e, body) = s.oldest().unwrap().unwrap();
        assert_eq!(body, b"m a=1 1\n");
        s.remove(&e).unwrap();
        // sequence numbers keep growing across reopen
        s.push(b"m a=4 4\n", 1).unwrap();
        assert_eq!(contents(&s), vec!["m a=2 2\nm a=3 3\n", "m a=4 4\n"]);
        assert_eq!((s.batches(), s.lines()), (2, 3));
    }

    #[test]
    fn the_size_bound_drops_the_oldest_and_counts_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 20, Duration::from_secs(3600)).unwrap();
        assert_eq!(s.push(b"0123456789", 1).unwrap(), Dropped::default());
        assert_eq!(s.push(b"0123456789", 2).unwrap(), Dropped::default());
        assert_eq!(
            s.push(b"0123456789", 3).unwrap(),
            Dropped {
                batches: 1,
                lines: 1
            }
        );
        assert_eq!((s.batches(), s.lines(), s.bytes()), (2, 5, 20));
        // a single batch larger than the bound is kept (the newest is never dropped)
        assert_eq!(
            s.push(&[b'x'; 50], 4).unwrap(),
            Dropped {
                batches: 2,
                lines: 5
            }
        );
        assert_eq!(s.batches(), 1);
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "dropped files are deleted"
        );
    }

    #[test]
    fn the_age_bound_drops_old_batches() {
        let dir = tempfile::tempdir().unwrap();
        // a batch from a previous run, two hours old
        let old = now_ms() - 2 * 3600 * 1000;
        fs::write(
            dir.path().join(format!("{:020}-{old}-7.lp", 1)),
            b"m a=1 1\n",
        )
        .unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20, Duration::from_secs(3600)).unwrap();
        assert_eq!(s.lines(), 7);
        assert!(s.oldest_age() >= Duration::from_secs(7000));
        assert_eq!(
            s.enforce().unwrap(),
            Dropped {
                batches: 1,
                lines: 7
            }
        );
        assert!(s.is_empty());
    }

    #[test]
    fn unrelated_files_are_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("dead-letter.lp"), b"x").unwrap();
        fs::write(dir.path().join("notes.txt"), b"x").unwrap();
        let s = Spool::open(dir.path(), 1 << 20, Duration::from_secs(3600)).unwrap();
        assert!(s.is_empty());
        assert!(dir.path().join("dead-letter.lp").exists());
    }
}
