//! The ingester's write-ahead log.
//!
//! A directory of numbered segment files `<seq as 16 hex digits>.wal`. Each starts with an
//! 8-byte magic and the segment's creation time (u64 LE milliseconds), then records of
//! `u32 LE length | u32 LE CRC-32 of payload | payload` where the payload is an encoded
//! `ingester.v1.WriteRequest`.
//!
//! One thread owns the open segment. It takes every append queued while it was busy, writes
//! them, syncs once (group commit), applies them to the head, and only then acknowledges them;
//! so an acknowledged write is on disk and visible, and every record of a segment is in that
//! segment's head generation before the segment is sealed.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use profusion_proto::ingester::v1::WriteRequest;
use prost::Message;
use tokio::sync::{mpsc, oneshot};

use crate::error::{IngestError, Result};
use crate::frame_text::FrameText;

/// A queued append: the request, the strings its frames left behind, and its acknowledgement.
type Append = (WriteRequest, Arc<FrameText>, oneshot::Sender<Result<()>>);

const MAGIC: &[u8; 8] = b"PFWAL\0\0\x01";
const HEADER_LEN: u64 = 16;
/// Records larger than this are treated as corruption when reading.
const MAX_RECORD: u32 = 512 * 1024 * 1024;
/// Most appends written under one sync.
const MAX_BATCH: usize = 1024;

pub(crate) fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:016x}.wal"))
}

/// Sequence numbers of the segments in `dir`, ascending.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<u64>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io("listing the WAL directory"))? {
        let entry = entry.map_err(io("listing the WAL directory"))?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".wal")) else {
            continue;
        };
        if let Ok(seq) = u64::from_str_radix(stem, 16) {
            out.push(seq);
        }
    }
    out.sort_unstable();
    Ok(out)
}

fn io(what: &'static str) -> impl Fn(std::io::Error) -> IngestError {
    move |e| IngestError::internal(format!("{what}: {e}"))
}

/// What reading one segment found.
#[derive(Debug)]
pub(crate) struct SegmentContents {
    pub created_millis: i64,
    pub records: Vec<WriteRequest>,
    /// Set when the segment ends in a torn or corrupt record; what follows it was skipped.
    pub damage: Option<String>,
}

/// Reads every intact record of a segment, stopping at the first torn or corrupt one.
pub(crate) fn read_segment(path: &Path) -> Result<SegmentContents> {
    let file = File::open(path).map_err(io("opening a WAL segment"))?;
    let len = file
        .metadata()
        .map_err(io("reading WAL segment size"))?
        .len();
    let mut r = BufReader::new(file);
    let mut header = [0u8; HEADER_LEN as usize];
    if len < HEADER_LEN || r.read_exact(&mut header).is_err() || &header[..8] != MAGIC {
        return Ok(SegmentContents {
            created_millis: 0,
            records: Vec::new(),
            damage: Some("segment header is missing or invalid".into()),
        });
    }
    let created_millis = i64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
    let mut records = Vec::new();
    let mut offset = HEADER_LEN;
    let damage = loop {
        if offset == len {
            break None;
        }
        let mut head = [0u8; 8];
        if r.read_exact(&mut head).is_err() {
            break Some(format!("torn record header at byte {offset}"));
        }
        let size = u32::from_le_bytes(head[..4].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(head[4..].try_into().expect("4 bytes"));
        if size > MAX_RECORD || offset + 8 + u64::from(size) > len {
            break Some(format!("torn record of {size} bytes at byte {offset}"));
        }
        let mut payload = vec![0u8; size as usize];
        if r.read_exact(&mut payload).is_err() {
            break Some(format!("torn record at byte {offset}"));
        }
        if crc32fast::hash(&payload) != crc {
            break Some(format!("checksum mismatch in record at byte {offset}"));
        }
        match WriteRequest::decode(payload.as_slice()) {
            Ok(req) => records.push(req),
            Err(e) => break Some(format!("undecodable record at byte {offset}: {e}")),
        }
        offset += 8 + u64::from(size);
    };
    Ok(SegmentContents {
        created_millis,
        records,
        damage,
    })
}

/// Deletes segments up to and including `seq`.
pub(crate) fn remove_segments_through(dir: &Path, seq: u64) -> Result<()> {
    for s in list_segments(dir)?.into_iter().filter(|s| *s <= seq) {
        std::fs::remove_file(segment_path(dir, s)).map_err(io("removing a WAL segment"))?;
    }
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("syncing the WAL directory"))
}

pub(crate) enum Command {
    Append {
        request: WriteRequest,
        text: Arc<FrameText>,
        done: oneshot::Sender<Result<()>>,
    },
    /// Seal the open segment and start the next; answers with the sealed segment's number.
    Rotate { done: oneshot::Sender<Result<u64>> },
}

/// The head the WAL thread feeds: asked what a batch need not repeat before it is encoded,
/// then given the batch once it is durable, before the batch is acknowledged.
pub(crate) trait WalSink: Send {
    /// Strips from `requests` the symbols segment `seq`'s head already holds for their tenant:
    /// an earlier record of the same segment added them, so a replay has them before it reaches
    /// these records (the frames keep their ids, so stack references stay valid).
    /// The frames the head lacks get the strings they left in their request's text.
    fn trim(&mut self, seq: u64, requests: &mut [(&mut WriteRequest, &FrameText)]);
    /// Applies a durable batch to segment `seq`'s head.
    fn apply(&mut self, seq: u64, created_millis: i64, requests: Vec<WriteRequest>);
}

pub(crate) type Apply = Box<dyn WalSink>;

/// Cloneable handle to the WAL thread.
#[derive(Debug, Clone)]
pub(crate) struct WalHandle {
    tx: mpsc::Sender<Command>,
}

impl WalHandle {
    /// Starts the WAL thread with a fresh segment numbered `seq`.
    pub(crate) fn start(dir: PathBuf, seq: u64, apply: Apply) -> Result<Self> {
        std::fs::create_dir_all(&dir).map_err(io("creating the WAL directory"))?;
        let segment = Segment::create(&dir, seq)?;
        let (tx, rx) = mpsc::channel(4096);
        std::thread::Builder::new()
            .name("profusion-wal".into())
            .spawn(move || run(dir, segment, rx, apply))
            .map_err(io("starting the WAL thread"))?;
        Ok(Self { tx })
    }

    /// Appends `request`, whose frames may have left their strings in `text` (copied out
    /// before encoding for the frames the head lacks).
    pub(crate) async fn append(&self, request: WriteRequest, text: Arc<FrameText>) -> Result<()> {
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Command::Append {
                request,
                text,
                done,
            })
            .await
            .map_err(|_| IngestError::unavailable("the write-ahead log is closed"))?;
        rx.await
            .map_err(|_| IngestError::unavailable("the write-ahead log stopped"))?
    }

    pub(crate) async fn rotate(&self) -> Result<u64> {
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Command::Rotate { done })
            .await
            .map_err(|_| IngestError::unavailable("the write-ahead log is closed"))?;
        rx.await
            .map_err(|_| IngestError::unavailable("the write-ahead log stopped"))?
    }
}

struct Segment {
    seq: u64,
    created_millis: i64,
    file: File,
    len: u64,
}

impl Segment {
    fn create(dir: &Path, seq: u64) -> Result<Self> {
        let created_millis = profusion_model::time::now_millis();
        let mut file = OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(segment_path(dir, seq))
            .map_err(io("creating a WAL segment"))?;
        file.write_all(MAGIC)
            .and_then(|()| file.write_all(&created_millis.to_le_bytes()))
            .and_then(|()| file.sync_all())
            .map_err(io("writing a WAL segment header"))?;
        sync_dir(dir)?;
        Ok(Self {
            seq,
            created_millis,
            file,
            len: HEADER_LEN,
        })
    }
}

fn run(dir: PathBuf, mut segment: Segment, mut rx: mpsc::Receiver<Command>, mut apply: Apply) {
    let mut buf = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(cmd) => batch.push(cmd),
                Err(_) => break,
            }
        }
        let mut appends = Vec::new();
        for cmd in batch {
            match cmd {
                Command::Append {
                    request,
                    text,
                    done,
                } => appends.push((request, text, done)),
                Command::Rotate { done } => {
                    // Everything queued before the rotation belongs to the old segment.
                    commit(&mut segment, &mut appends, &mut buf, &mut apply);
                    let sealed = segment.seq;
                    let result = Segment::create(&dir, sealed + 1).map(|next| {
                        segment = next;
                        sealed
                    });
                    let _ = done.send(result);
                }
            }
        }
        commit(&mut segment, &mut appends, &mut buf, &mut apply);
    }
    let _ = segment.file.sync_all();
}

fn commit(segment: &mut Segment, appends: &mut Vec<Append>, buf: &mut Vec<u8>, apply: &mut Apply) {
    if appends.is_empty() {
        return;
    }
    buf.clear();
    let mut requests: Vec<(&mut WriteRequest, &FrameText)> = appends
        .iter_mut()
        .map(|(r, text, _)| (r, &**text))
        .collect();
    apply.trim(segment.seq, &mut requests);
    for (request, _, _) in appends.iter() {
        let start = buf.len();
        buf.extend_from_slice(&[0u8; 8]);
        request.encode(buf).expect("Vec grows as needed");
        let payload_len = (buf.len() - start - 8) as u32;
        let crc = crc32fast::hash(&buf[start + 8..]);
        buf[start..start + 4].copy_from_slice(&payload_len.to_le_bytes());
        buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    }
    let written = segment
        .file
        .write_all(buf)
        .and_then(|()| segment.file.sync_data());
    match written {
        Ok(()) => {
            segment.len += buf.len() as u64;
            let (requests, dones): (Vec<_>, Vec<_>) =
                appends.drain(..).map(|(r, _, done)| (r, done)).unzip();
            apply.apply(segment.seq, segment.created_millis, requests);
            for done in dones {
                let _ = done.send(Ok(()));
            }
        }
        Err(e) => {
            // Cut the partial batch off so later records are not hidden behind a torn one.
            let _ = segment
                .file
                .set_len(segment.len)
                .and_then(|()| segment.file.seek(SeekFrom::Start(segment.len)));
            tracing::error!(error = %e, segment = segment.seq, "write-ahead log append failed");
            for (_, _, done) in appends.drain(..) {
                let _ = done.send(Err(IngestError::internal(format!(
                    "write-ahead log append failed: {e}"
                ))));
            }
        }
    }
}
