//! The disk buffer's record format: pure encoding and decoding, no I/O.
//!
//! A segment file starts with [`SEGMENT_HEADER`], then holds records back to back:
//!
//! ```text
//!  offset  size  field
//!  0       4     magic "RTR1" (lets a reader find the next record after a corrupt one)
//!  4       4     payload length, little endian
//!  8       4     CRC-32 (IEEE) of the fields below and the payload
//!  12      8     sequence number, little endian (one per record, increasing through the log)
//!  20      4     rows in the payload (execution and task rows), little endian
//!  24      len   payload (below)
//! ```
//!
//! The payload (version 2):
//!
//! ```text
//!  0       4     JSON length n, little endian
//!  4       n     the rows as JSON, {"executions":[…],"tasks":[…]}, every task's "output" ""
//!  4+n     …     each task's output in the rows' order: 4-byte length, then its UTF-8 bytes
//! ```
//!
//! Outputs (an LLM's answer: the large part of a row) are copied as they are rather than
//! escaped into JSON, which took 0.1 s of CPU per 400 MB of outputs (BENCHMARKS.md, session
//! 20261204p). A version 1 payload is the JSON alone, outputs in it.
//!
//! Every write ends with an *end marker*, a frame with sequence number 0 (no record has it) and
//! no payload, which the next write overwrites: a reader stops there (what follows may be a
//! direct write's padding), unless records follow after all. Version 1 segments (no markers)
//! read the same way, to their end.
//!
//! The rows serialize with the graph's property names, as in the spill file, so a record
//! outlives a change of runtally's in-memory types. The checksum covers the length, so a
//! corrupt length is caught too, and a torn record (the process or the machine died mid-write)
//! fails it or ends past the end of the file.

use serde::{Deserialize, Serialize};

use crate::rows::{ExecutionRow, TaskRow, WriteBatch};

/// The first bytes of every segment file: the format and its version.
pub(crate) const SEGMENT_HEADER: &[u8; 16] = b"runtally-buffer2";

/// The header of version 1 segments (no end markers, no padding): still read.
pub(crate) const SEGMENT_HEADER_V1: &[u8; 16] = b"runtally-buffer1";

/// The part of [`SEGMENT_HEADER`] every version shares.
pub(crate) const SEGMENT_FAMILY: &[u8] = b"runtally-buffer";

/// The first bytes of every record.
const RECORD_MAGIC: [u8; 4] = *b"RTR1";

/// Bytes before a record's payload.
pub(crate) const FRAME_HEADER: usize = 24;

/// A record's rows, borrowed for encoding.
#[derive(Serialize)]
struct RowsRef<'a> {
    executions: &'a [ExecutionRow],
    tasks: &'a [TaskRow],
}

/// A record's rows, owned after decoding.
#[derive(Deserialize)]
struct Rows {
    executions: Vec<ExecutionRow>,
    tasks: Vec<TaskRow>,
}

/// Appends one record holding these rows to `out`. The tasks' outputs are moved out while the
/// rest is encoded, and back (so `tasks` is as it was, whatever the result).
///
/// # Errors
///
/// A payload over 4 GiB (the length field's range), or rows serde cannot encode.
pub(crate) fn encode(
    out: &mut Vec<u8>,
    seq: u64,
    executions: &[ExecutionRow],
    tasks: &mut [TaskRow],
) -> Result<(), EncodeError> {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER]);
    let payload = out.len();
    out.extend_from_slice(&[0; 4]);
    let outputs: Vec<String> = tasks
        .iter_mut()
        .map(|t| std::mem::take(&mut t.output))
        .collect();
    let json = serde_json::to_writer(&mut *out, &RowsRef { executions, tasks });
    for (task, output) in tasks.iter_mut().zip(outputs) {
        task.output = output;
    }
    if let Err(e) = json {
        out.truncate(start);
        return Err(EncodeError::Json(e));
    }
    let json_len = out.len() - payload - 4;
    let Ok(json_len) = u32::try_from(json_len) else {
        out.truncate(start);
        return Err(EncodeError::TooLarge(json_len));
    };
    out[payload..payload + 4].copy_from_slice(&json_len.to_le_bytes());
    for task in tasks.iter() {
        let Ok(len) = u32::try_from(task.output.len()) else {
            out.truncate(start);
            return Err(EncodeError::TooLarge(task.output.len()));
        };
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(task.output.as_bytes());
    }
    let rows = u32::try_from(executions.len() + tasks.len()).unwrap_or(u32::MAX);
    seal(out, start, seq, rows)
}

/// Fills in the header of the frame at `start`, whose payload runs to the end of `out`.
///
/// # Errors
///
/// A payload over 4 GiB: the frame is cut from `out`.
fn seal(out: &mut Vec<u8>, start: usize, seq: u64, rows: u32) -> Result<(), EncodeError> {
    let payload = start + FRAME_HEADER;
    let Ok(len) = u32::try_from(out.len() - payload) else {
        let bytes = out.len() - payload;
        out.truncate(start);
        return Err(EncodeError::TooLarge(bytes));
    };
    out[start..start + 4].copy_from_slice(&RECORD_MAGIC);
    out[start + 4..start + 8].copy_from_slice(&len.to_le_bytes());
    out[start + 12..start + 20].copy_from_slice(&seq.to_le_bytes());
    out[start + 20..start + 24].copy_from_slice(&rows.to_le_bytes());
    let crc = checksum(len, seq, rows, &out[payload..]);
    out[start + 8..start + 12].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// The end marker: a frame with sequence number 0 and no rows.
pub(crate) fn end_marker() -> [u8; FRAME_HEADER] {
    let mut out = [0u8; FRAME_HEADER];
    out[..4].copy_from_slice(&RECORD_MAGIC);
    // Length, sequence number and rows are 0.
    out[8..12].copy_from_slice(&checksum(0, 0, 0, &[]).to_le_bytes());
    out
}

/// Why rows could not become a record.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EncodeError {
    #[error("the rows do not serialize")]
    Json(#[source] serde_json::Error),
    #[error("a record of {0} bytes is over the format's 4 GiB")]
    TooLarge(usize),
}

/// Why a checked payload is not a record's rows (an incompatible version wrote it).
#[derive(Debug, thiserror::Error)]
pub(crate) enum DecodeError {
    #[error("the rows do not deserialize")]
    Json(#[source] serde_json::Error),
    #[error("the outputs do not match the rows")]
    Outputs,
}

/// Decodes a payload read from a record whose checksum matched, in a segment of `version`
/// (1 or 2; 0 when the segment's header is damaged: either).
///
/// # Errors
///
/// The payload is not a record's rows (written by an incompatible version).
pub(crate) fn decode(payload: &[u8], version: u8) -> Result<WriteBatch, DecodeError> {
    if version == 0 {
        return decode(payload, 2).or_else(|_| decode(payload, 1));
    }
    if version == 1 {
        let rows: Rows = serde_json::from_slice(payload).map_err(DecodeError::Json)?;
        return Ok(WriteBatch::new(rows.executions, rows.tasks));
    }
    let (json, mut rest) = split_len(payload).ok_or(DecodeError::Outputs)?;
    let mut rows: Rows = serde_json::from_slice(json).map_err(DecodeError::Json)?;
    for task in &mut rows.tasks {
        let (output, after) = split_len(rest).ok_or(DecodeError::Outputs)?;
        task.output = std::str::from_utf8(output)
            .map_err(|_| DecodeError::Outputs)?
            .to_owned();
        rest = after;
    }
    if !rest.is_empty() {
        return Err(DecodeError::Outputs);
    }
    Ok(WriteBatch::new(rows.executions, rows.tasks))
}

/// A 4-byte length, then that many bytes: those bytes and what follows them.
fn split_len(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = bytes.split_first_chunk::<4>()?;
    let len = usize::try_from(u32::from_le_bytes(*len)).ok()?;
    (len <= rest.len()).then(|| rest.split_at(len))
}

fn checksum(len: u32, seq: u64, rows: u32, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&len.to_le_bytes());
    hasher.update(&seq.to_le_bytes());
    hasher.update(&rows.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

/// A record's header, parsed but not yet checked against its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) len: u32,
    crc: u32,
    pub(crate) seq: u64,
    /// Execution and task rows in the record.
    pub(crate) rows: u32,
}

impl Header {
    /// Parses a frame header; `None` if the magic is not there.
    pub(crate) fn parse(bytes: &[u8; FRAME_HEADER]) -> Option<Header> {
        if bytes[..4] != RECORD_MAGIC {
            return None;
        }
        let u32_at =
            |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        let mut seq = [0; 8];
        seq.copy_from_slice(&bytes[12..20]);
        Some(Header {
            len: u32_at(4),
            crc: u32_at(8),
            seq: u64::from_le_bytes(seq),
            rows: u32_at(20),
        })
    }

    /// Whether `payload` is the one this header was written with.
    pub(crate) fn matches(&self, payload: &[u8]) -> bool {
        payload.len() == self.len as usize
            && checksum(self.len, self.seq, self.rows, payload) == self.crc
    }

    /// Whether this is the end marker.
    pub(crate) fn is_end_marker(&self) -> bool {
        self.seq == 0 && self.len == 0
    }

    /// Bytes of the whole frame.
    pub(crate) fn frame_len(&self) -> u64 {
        FRAME_HEADER as u64 + u64::from(self.len)
    }
}

/// Where the next record's magic is in `bytes`, if anywhere.
pub(crate) fn find_magic(bytes: &[u8]) -> Option<usize> {
    bytes
        .windows(RECORD_MAGIC.len())
        .position(|w| w == RECORD_MAGIC)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::{ExecutionId, PlanId, TaskDefinition, TaskId, TaskResult};
    use chrono::Utc;

    pub(crate) fn rows(n: usize, output: &str) -> (Vec<ExecutionRow>, Vec<TaskRow>) {
        let exec = ExecutionId::new("exec-rec").expect("id");
        let plan = PlanId::new("plan-rec").expect("id");
        let execution =
            ExecutionRow::started(exec.clone(), plan.clone(), 3, Utc::now(), Utc::now())
                .expect("row");
        let tasks = (0..n)
            .map(|i| {
                let id = TaskId::new(format!("t{i}")).expect("id");
                let result = TaskResult::success(id.clone())
                    .with_output(output)
                    .with_tokens(10, 5);
                TaskRow::new(&exec, &plan, TaskDefinition::new(id), result, Utc::now())
                    .expect("row")
            })
            .collect();
        (vec![execution], tasks)
    }

    /// A version 1 record (the payload all JSON), as runtally wrote them before version 2.
    pub(crate) fn encode_v1(
        out: &mut Vec<u8>,
        seq: u64,
        executions: &[ExecutionRow],
        tasks: &[TaskRow],
    ) {
        let start = out.len();
        out.extend_from_slice(&[0; FRAME_HEADER]);
        serde_json::to_writer(&mut *out, &RowsRef { executions, tasks }).expect("json");
        let rows = u32::try_from(executions.len() + tasks.len()).expect("few");
        seal(out, start, seq, rows).expect("small");
    }

    fn frame(bytes: &[u8]) -> (Header, &[u8]) {
        let header: &[u8; FRAME_HEADER] = bytes[..FRAME_HEADER].try_into().expect("header");
        let header = Header::parse(header).expect("magic");
        (
            header,
            &bytes[FRAME_HEADER..FRAME_HEADER + header.len as usize],
        )
    }

    #[test]
    fn a_record_round_trips_its_rows_and_sequence_number() {
        let (executions, mut tasks) = rows(3, "quote \" and newline \n and é");
        tasks[1].output = String::new();
        let before = tasks.clone();
        let mut out = Vec::new();
        encode(&mut out, 42, &executions, &mut tasks).expect("encode");
        assert_eq!(tasks, before, "the outputs are back in the rows");
        let (header, payload) = frame(&out);
        assert_eq!(header.seq, 42);
        assert_eq!(header.rows, 4);
        assert_eq!(header.frame_len(), out.len() as u64);
        assert!(header.matches(payload));
        let batch = decode(payload, 2).expect("decode");
        assert_eq!(batch.executions, executions);
        assert_eq!(batch.tasks, tasks);
        // Outputs as they are, not escaped.
        let raw = "quote \" and newline \n and é".as_bytes();
        assert!(payload.windows(raw.len()).any(|w| w == raw));
    }

    #[test]
    fn a_version_1_payload_decodes_and_a_damaged_one_does_not() {
        let (executions, tasks) = rows(2, "x");
        let json = serde_json::to_vec(&RowsRef {
            executions: &executions,
            tasks: &tasks,
        })
        .expect("json");
        let batch = decode(&json, 1).expect("version 1");
        assert_eq!(batch.tasks, tasks);
        let (executions, mut tasks) = rows(2, "x");
        let mut out = Vec::new();
        encode(&mut out, 1, &executions, &mut tasks).expect("encode");
        let payload = &out[FRAME_HEADER..];
        assert!(
            decode(&payload[..payload.len() - 1], 2).is_err(),
            "an output cut short"
        );
        let mut longer = payload.to_vec();
        longer.push(0);
        assert!(decode(&longer, 2).is_err(), "bytes after the last output");
    }

    #[test]
    fn any_flipped_byte_fails_the_checksum_or_the_magic() {
        let (executions, mut tasks) = rows(1, "x");
        let mut clean = Vec::new();
        encode(&mut clean, 7, &executions, &mut tasks).expect("encode");
        for i in 0..clean.len() {
            let mut bytes = clean.clone();
            bytes[i] ^= 0x20;
            let header: &[u8; FRAME_HEADER] = bytes[..FRAME_HEADER].try_into().expect("header");
            let ok = match Header::parse(header) {
                None => false,
                Some(h) => {
                    let end = FRAME_HEADER + h.len as usize;
                    end <= bytes.len() && h.matches(&bytes[FRAME_HEADER..end])
                }
            };
            assert!(!ok, "byte {i} flipped and the record still checks");
        }
    }

    #[test]
    fn the_end_marker_is_a_valid_empty_frame_no_record_is_taken_for() {
        let marker = end_marker();
        let header = Header::parse(&marker).expect("magic");
        assert_eq!((header.len, header.seq, header.rows), (0, 0, 0));
        assert!(header.matches(&[]) && header.is_end_marker());
        let (executions, mut tasks) = rows(0, "");
        let mut empty = Vec::new();
        encode(&mut empty, 1, &executions, &mut tasks).expect("encode");
        let (record, _) = frame(&empty);
        assert!(!record.is_end_marker());
    }

    #[test]
    fn the_next_magic_is_found_after_garbage() {
        let (executions, mut tasks) = rows(1, "x");
        let mut bytes = b"garbage".to_vec();
        encode(&mut bytes, 1, &executions, &mut tasks).expect("encode");
        assert_eq!(find_magic(&bytes), Some(7));
        assert_eq!(find_magic(b"RTR"), None);
    }
}
