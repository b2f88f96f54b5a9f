//! Frame strings left in the request that carried them until an ingester needs them.
//!
//! A push repeats nearly every frame of its service's previous push, and the ingester's head
//! already holds those frames. Copying each frame's strings out of the pprof, only for the WAL
//! thread to find the frame known and free the copies, made allocation and freeing the largest
//! single cost of ingest. So the conversion leaves the strings of a frame where they are, as
//! byte ranges of the decoded pprof, and sends the frame with its id and numbers only; the
//! ingester copies out the strings of the frames its head lacks ([`FrameText::fill`]), and a
//! write leaving the process (to a remote ingester) copies them all first.

use bytes::Bytes;
use profusion_proto::ingester::v1::Frame;

/// Where the strings of a write's frames still are. Positions match the write's `frames`; a
/// frame with no entry (or past the end) carries its strings itself.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct FrameText {
    /// The decoded pprofs the ranges point into.
    buffers: Vec<Bytes>,
    pending: Vec<Option<TextRanges>>,
}

/// A frame's five strings as ranges of one buffer, in [`Frame`]'s field order:
/// `function_name`, `system_name`, `filename`, `mapping_file`, `build_id`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct TextRanges {
    buffer: u32,
    fields: [(u32, u32); 5],
}

impl FrameText {
    /// Whether every frame carries its own strings.
    pub fn is_empty(&self) -> bool {
        self.pending.iter().all(Option::is_none)
    }

    /// Adds a buffer strings may point into; returns its number for [`Self::set`].
    pub(crate) fn add_buffer(&mut self, buffer: Bytes) -> u32 {
        self.buffers.push(buffer);
        (self.buffers.len() - 1) as u32
    }

    /// Makes room for `frames` frames' ranges.
    pub(crate) fn reserve(&mut self, frames: usize) {
        self.pending.reserve(frames);
    }

    /// Records that frame `frame`'s strings are `fields` of buffer `buffer`, if each of them
    /// lies in that buffer (an empty string lies anywhere); returns false, recording nothing,
    /// if one does not.
    pub(crate) fn set(&mut self, frame: usize, buffer: u32, fields: [&str; 5]) -> bool {
        let base = self.buffers[buffer as usize].as_ptr() as usize;
        let len = self.buffers[buffer as usize].len();
        if u32::try_from(len).is_err() {
            return false; // ranges are u32s; no limit lets a profile be this large anyway
        }
        let mut ranges = [(0u32, 0u32); 5];
        for (range, s) in ranges.iter_mut().zip(fields) {
            if s.is_empty() {
                continue;
            }
            let start = (s.as_ptr() as usize).wrapping_sub(base);
            if start > len || len - start < s.len() {
                return false;
            }
            *range = (start as u32, s.len() as u32);
        }
        *self.slot(frame) = Some(TextRanges {
            buffer,
            fields: ranges,
        });
        true
    }

    /// Frame `frame`'s entry, the table grown to hold it.
    fn slot(&mut self, frame: usize) -> &mut Option<TextRanges> {
        if self.pending.len() <= frame {
            self.pending.resize(frame + 1, None);
        }
        &mut self.pending[frame]
    }

    /// Takes `other`'s buffers; returns the number to add to its buffer numbers
    /// ([`Self::take_from`]).
    pub(crate) fn add_buffers_of(&mut self, other: &FrameText) -> u32 {
        let offset = self.buffers.len() as u32;
        self.buffers.extend(other.buffers.iter().cloned());
        offset
    }

    /// Makes frame `frame`'s strings those of `other`'s frame `from`, whose buffers
    /// [`Self::add_buffers_of`] added at `offset`.
    pub(crate) fn take_from(&mut self, frame: usize, other: &FrameText, from: usize, offset: u32) {
        if let Some(Some(r)) = other.pending.get(from) {
            *self.slot(frame) = Some(TextRanges {
                buffer: r.buffer + offset,
                ..*r
            });
        }
    }

    /// Copies into `frame`, the write's frame number `i`, the strings it left in its buffer, if
    /// it left them.
    pub fn fill(&self, i: usize, frame: &mut Frame) {
        let Some(Some(r)) = self.pending.get(i) else {
            return;
        };
        let buffer = &self.buffers[r.buffer as usize];
        let text = |(start, len): (u32, u32)| -> String {
            let bytes = &buffer[start as usize..(start + len) as usize];
            // The ranges were cut from `&str`s of this very buffer: never lossy in fact.
            String::from_utf8_lossy(bytes).into_owned()
        };
        frame.function_name = text(r.fields[0]);
        frame.system_name = text(r.fields[1]);
        frame.filename = text(r.fields[2]);
        frame.mapping_file = text(r.fields[3]);
        frame.build_id = text(r.fields[4]);
    }

    /// Copies every frame's strings still in their buffers into `frames`, for a receiver that
    /// holds none of them.
    pub fn fill_all(&self, frames: &mut [Frame]) {
        for (i, frame) in frames.iter_mut().enumerate().take(self.pending.len()) {
            self.fill(i, frame);
        }
    }
}
