/**
 * queuefile.ts — the on-disk queue file format: encode and decode, pure (no I/O).
 *
 * Layout (Postfix-style, self-checking):
 *   "TANDEMQ1\n"                                   magic
 *   [type: 1 byte ASCII][length: u32 BE][crc32(payload): u32 BE][payload]   records
 * Records, in this order: `M` message bytes (raw), `E` envelope (JSON), `Z` END (empty). The
 * message comes first so that it can be written as it arrives (its header is filled in at the
 * end), and the envelope — which needs the Message-ID found in the message — after it.
 * After `Z`, zero or more `S` status records (JSON RecipientStatus | DeferralRecord) are
 * appended as deliveries happen.
 *
 * What can go wrong: a file missing the magic, M, E or Z, or with a bad length or CRC before
 * or at Z, is damaged: decodeQueueFile returns `{ ok: false, reason }` and the caller moves
 * the file to corrupt/. A bad or incomplete record after Z is NOT damage: the process may have
 * crashed mid-append, so it and everything after it are ignored (`validLength` says where the
 * good part ends, so the next append can truncate the torn tail). encodeQueueFile throws a
 * RangeError for a record over 4 GiB − 1.
 */
import { crc32 } from 'node:zlib';
import type { DeferralRecord, Envelope, RecipientStatus } from './types.ts';

export const QUEUE_FILE_MAGIC = Buffer.from('TANDEMQ1\n', 'latin1');
/** type (1) + length (4) + crc32 (4). */
export const RECORD_HEADER_SIZE = 9;
const MAX_RECORD_LENGTH = 0xffff_ffff;
/** The records of a committed file, in order; S records follow. */
const BODY_RECORDS = ['M', 'E', 'Z'] as const;

export type StatusRecord = RecipientStatus | DeferralRecord;

/** A decoded queue file, or why it is damaged. */
export type DecodeResult =
  | {
      ok: true;
      envelope: Envelope;
      message: Buffer;
      /** Per-recipient outcomes, in the order they were appended. */
      statuses: RecipientStatus[];
      /** The latest deferral record, if any. */
      deferral?: DeferralRecord;
      /** Indices of recipients without a delivered/failed/expired status. */
      pending: number[];
      /** Bytes up to the end of the last good record; anything after is a torn tail. */
      validLength: number;
      /** Bytes after validLength that were ignored (0 for a clean file). */
      tornTailBytes: number;
    }
  | { ok: false; reason: string };

/** A record header for a payload of `length` bytes whose crc32 is `crc`. */
export function encodeRecordHeader(type: string, length: number, crc: number): Buffer {
  if (length > MAX_RECORD_LENGTH) {
    throw new RangeError(`queue file record ${type} is ${length} bytes; the limit is ${MAX_RECORD_LENGTH}`);
  }
  const header = Buffer.allocUnsafe(RECORD_HEADER_SIZE);
  header.write(type, 0, 1, 'latin1');
  header.writeUInt32BE(length, 1);
  header.writeUInt32BE(crc, 5);
  return header;
}

/** Frame one record: header (type, length, crc32) + payload. */
function encodeRecord(type: string, payload: Buffer): Buffer {
  return Buffer.concat([encodeRecordHeader(type, payload.length, crc32(payload)), payload]);
}

/** What follows the message record: E (envelope) and Z (END). */
export function encodeTrailer(envelope: Envelope): Buffer {
  return Buffer.concat([encodeRecord('E', Buffer.from(JSON.stringify(envelope), 'utf8')), encodeRecord('Z', Buffer.alloc(0))]);
}

/** The complete file as committed: magic, M, E, Z. */
export function encodeQueueFile(envelope: Envelope, message: Buffer): Buffer {
  return Buffer.concat([QUEUE_FILE_MAGIC, encodeRecord('M', message), encodeTrailer(envelope)]);
}

/** S records to append after Z. */
export function encodeStatusRecords(records: readonly StatusRecord[]): Buffer {
  return Buffer.concat(records.map((r) => encodeRecord('S', Buffer.from(JSON.stringify(r), 'utf8'))));
}

type RawRecord = { type: string; payload: Buffer; end: number };

/** Read the record at `offset`, or say why it cannot be read. */
function readRecord(bytes: Buffer, offset: number): RawRecord | { error: string } {
  if (offset + RECORD_HEADER_SIZE > bytes.length) {
    return { error: `truncated record header at offset ${offset}` };
  }
  const type = bytes.toString('latin1', offset, offset + 1);
  const length = bytes.readUInt32BE(offset + 1);
  const crc = bytes.readUInt32BE(offset + 5);
  const start = offset + RECORD_HEADER_SIZE;
  if (start + length > bytes.length) {
    return { error: `record ${JSON.stringify(type)} at offset ${offset} claims ${length} bytes but only ${bytes.length - start} remain` };
  }
  const payload = bytes.subarray(start, start + length);
  if (crc32(payload) !== crc) {
    return { error: `record ${JSON.stringify(type)} at offset ${offset} has a bad checksum` };
  }
  return { type, payload, end: start + length };
}

/** Light shape check: enough that the rest of Tandem can trust the fields it indexes. */
function envelopeProblem(value: unknown): string | undefined {
  if (typeof value !== 'object' || value === null) return 'envelope is not an object';
  const e = value as Partial<Envelope>;
  if (typeof e.queueId !== 'string' || e.queueId === '') return 'envelope has no queueId';
  if (typeof e.sender !== 'string') return 'envelope has no sender';
  if (!Array.isArray(e.recipients)) return 'envelope has no recipients array';
  if (e.recipients.some((r) => typeof r?.address !== 'string')) return 'envelope has a recipient without an address';
  return undefined;
}

const RECIPIENT_STATUS_TYPES = new Set(['delivered', 'failed', 'expired']);

/** Parse an S payload; undefined if it is not a status record we know. */
function parseStatus(payload: Buffer): StatusRecord | undefined {
  let value: unknown;
  try {
    value = JSON.parse(payload.toString('utf8'));
  } catch {
    return undefined;
  }
  if (typeof value !== 'object' || value === null) return undefined;
  const type = (value as { type?: unknown }).type;
  if (type === 'deferral') return value as DeferralRecord;
  if (typeof type === 'string' && RECIPIENT_STATUS_TYPES.has(type) && Number.isInteger((value as { index?: unknown }).index)) {
    return value as RecipientStatus;
  }
  return undefined;
}

/** Indices of recipients (0..count-1) that have no final status. */
export function pendingRecipients(recipientCount: number, statuses: readonly RecipientStatus[]): number[] {
  const done = new Set(statuses.map((s) => s.index));
  const pending: number[] = [];
  for (let i = 0; i < recipientCount; i++) if (!done.has(i)) pending.push(i);
  return pending;
}

/** Check and decode a whole queue file. Never throws for bad input. */
export function decodeQueueFile(bytes: Buffer): DecodeResult {
  if (bytes.length === 0) return { ok: false, reason: 'empty file' };
  if (bytes.length < QUEUE_FILE_MAGIC.length || !bytes.subarray(0, QUEUE_FILE_MAGIC.length).equals(QUEUE_FILE_MAGIC)) {
    return { ok: false, reason: 'not a Tandem queue file (bad magic)' };
  }
  let offset = QUEUE_FILE_MAGIC.length;
  const body: RawRecord[] = [];
  for (const expected of BODY_RECORDS) {
    const rec = readRecord(bytes, offset);
    if ('error' in rec) return { ok: false, reason: rec.error };
    if (rec.type !== expected) {
      return { ok: false, reason: `expected record ${expected} at offset ${offset}, found ${JSON.stringify(rec.type)}` };
    }
    body.push(rec);
    offset = rec.end;
  }
  if (body[2].payload.length !== 0) return { ok: false, reason: 'END record is not empty' };

  let envelope: Envelope;
  try {
    envelope = JSON.parse(body[1].payload.toString('utf8')) as Envelope;
  } catch {
    return { ok: false, reason: 'envelope record is not valid JSON' };
  }
  const problem = envelopeProblem(envelope);
  if (problem) return { ok: false, reason: problem };

  const statuses: RecipientStatus[] = [];
  let deferral: DeferralRecord | undefined;
  while (offset < bytes.length) {
    const rec = readRecord(bytes, offset);
    if ('error' in rec || rec.type !== 'S') break;
    const status = parseStatus(rec.payload);
    if (!status) break;
    if (status.type === 'deferral') deferral = status;
    else statuses.push(status);
    offset = rec.end;
  }
  return {
    ok: true,
    envelope,
    message: body[0].payload,
    statuses,
    deferral,
    pending: pendingRecipients(envelope.recipients.length, statuses),
    validLength: offset,
    tornTailBytes: bytes.length - offset,
  };
}

/** Positional reader over an open file: up to `length` bytes at `position` (fewer at EOF). */
export type ReadAt = (position: number, length: number) => Promise<Buffer>;

/** What findAppendOffset and readMetadata learn without reading the message. */
export interface FileFrame {
  /** Where the next S record goes: the end of the last good record. */
  offset: number;
  /** The message record's payload: where it starts, its length and CRC-32 (not checked here). */
  message: { offset: number; length: number; crc: number };
  /** With `withEnvelope`: the envelope (checked), and the status records after Z. */
  envelope?: Envelope;
  statuses: RecipientStatus[];
  deferral?: DeferralRecord;
}

/**
 * Walk a queue file by its record headers — magic, M/E/Z (the message payload skipped), the
 * S records after Z — so that a large message is not read. Returns a reason instead if the
 * M/E/Z frame is damaged. With `withEnvelope`, E is read and checked too.
 * XXX: the M payload checksum is not verified here; read() and the start-up scan do that.
 */
async function walkFrame(readAt: ReadAt, size: number, withEnvelope: boolean): Promise<FileFrame | { reason: string }> {
  const magic = await readAt(0, QUEUE_FILE_MAGIC.length);
  if (!magic.equals(QUEUE_FILE_MAGIC)) return { reason: 'not a Tandem queue file (bad magic)' };
  let offset = QUEUE_FILE_MAGIC.length;
  let envelope: Envelope | undefined;
  let message: FileFrame['message'] | undefined;
  for (const expected of BODY_RECORDS) {
    const header = await readAt(offset, RECORD_HEADER_SIZE);
    if (header.length < RECORD_HEADER_SIZE) return { reason: `truncated record header at offset ${offset}` };
    const type = header.toString('latin1', 0, 1);
    const length = header.readUInt32BE(1);
    if (type !== expected) return { reason: `expected record ${expected} at offset ${offset}, found ${JSON.stringify(type)}` };
    if (offset + RECORD_HEADER_SIZE + length > size) return { reason: `record ${expected} at offset ${offset} runs past the end of the file` };
    if (expected === 'M') message = { offset: offset + RECORD_HEADER_SIZE, length, crc: header.readUInt32BE(5) };
    if (expected === 'E' && withEnvelope) {
      const payload = await readAt(offset + RECORD_HEADER_SIZE, length);
      if (payload.length !== length || crc32(payload) !== header.readUInt32BE(5)) return { reason: `record E at offset ${offset} has a bad checksum` };
      try {
        envelope = JSON.parse(payload.toString('utf8')) as Envelope;
      } catch {
        return { reason: 'envelope record is not valid JSON' };
      }
      const problem = envelopeProblem(envelope);
      if (problem) return { reason: problem };
    }
    offset += RECORD_HEADER_SIZE + length;
  }
  const statuses: RecipientStatus[] = [];
  let deferral: DeferralRecord | undefined;
  while (offset < size) {
    const header = await readAt(offset, RECORD_HEADER_SIZE);
    if (header.length < RECORD_HEADER_SIZE || header.toString('latin1', 0, 1) !== 'S') break;
    const length = header.readUInt32BE(1);
    if (offset + RECORD_HEADER_SIZE + length > size) break;
    const payload = await readAt(offset + RECORD_HEADER_SIZE, length);
    const status = payload.length === length && crc32(payload) === header.readUInt32BE(5) ? parseStatus(payload) : undefined;
    if (!status) break;
    if (status.type === 'deferral') deferral = status;
    else statuses.push(status);
    offset += RECORD_HEADER_SIZE + length;
  }
  return { offset, message: message!, ...(envelope ? { envelope } : {}), statuses, ...(deferral ? { deferral } : {}) };
}

/** Where the next S record goes (see walkFrame), or why the file is damaged. */
export async function findAppendOffset(readAt: ReadAt, size: number): Promise<{ offset: number } | { reason: string }> {
  const frame = await walkFrame(readAt, size, false);
  return 'reason' in frame ? frame : { offset: frame.offset };
}

/** The envelope and the status records, without reading the message (for queue listings). */
export async function readMetadata(readAt: ReadAt, size: number): Promise<(FileFrame & { envelope: Envelope; pending: number[] }) | { reason: string }> {
  const frame = await walkFrame(readAt, size, true);
  if ('reason' in frame) return frame;
  const envelope = frame.envelope!;
  return { ...frame, envelope, pending: pendingRecipients(envelope.recipients.length, frame.statuses) };
}
