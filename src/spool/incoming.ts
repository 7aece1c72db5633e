/**
 * spool/incoming.ts — a message being received, written to tmp/<id> as it arrives.
 *
 * The queue file starts with the M record (queuefile.ts), whose header — length and crc32 —
 * is known only at the end: bytes are buffered up to FLUSH_AT, then the file is opened
 * (O_CREAT|O_EXCL) with a placeholder header and each further FLUSH_AT bytes are written as
 * they come, so a large message never sits whole in memory. commit(envelope) fills in the M
 * header, appends E and Z, then follows the commit protocol of spool.ts (fsync, rename into
 * incoming/, fsync the folder). A message that never reached FLUSH_AT is written with one
 * write(2) at commit, and commit() hands its bytes back so the queue manager need not read
 * them again.
 * What can go wrong: any I/O error rejects write() or commit(); the caller then calls abort()
 * (commit cleans up by itself), which removes the temporary file. A process crash leaves the
 * file in tmp/, where recovery deletes it: it was never acknowledged.
 */
import { constants as fsConstants } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { crc32 } from 'node:zlib';
import type { DirSyncer } from './dirsync.ts';
import { QUEUE_FILE_MAGIC, RECORD_HEADER_SIZE, encodeRecordHeader, encodeTrailer } from './queuefile.ts';
import type { Envelope, SpoolIo } from './types.ts';

/** Bytes held in memory before they go to the file. */
const FLUSH_AT = 256 * 1024;

export class IncomingMessage {
  #chunks: Buffer[] = [];
  #buffered = 0;
  #size = 0;
  #crc = 0;
  #handle: FileHandle | undefined;
  #created = false;
  #position = 0;
  #done = false;

  constructor(
    private readonly tmpPath: string,
    private readonly finalPath: string,
    private readonly io: SpoolIo,
    private readonly dirSyncer: DirSyncer,
    private readonly incomingDir: string,
    /**
     * A second copy made elsewhere (replicated storage: the shadow holder). commit() resolves
     * only when both the local commit and `copy` have: `copy` starts as soon as the whole queue
     * file is known — at once, beside the local fsyncs, for a message held in memory (`bytes`);
     * after the local commit, from the file at `path`, for a large one. If `copy` throws, the
     * commit is taken back (the file removed) and commit() rejects; if the local commit fails,
     * `abandon` tells the copy's holder that the message is gone.
     */
    private readonly replica?: { copy(path: string, bytes: Buffer | undefined): Promise<void>; abandon(): void },
  ) {}

  /** Message bytes so far. */
  get size(): number {
    return this.#size;
  }

  /** Add message bytes; resolves when they are buffered or written (await it: backpressure). */
  async write(chunk: Buffer): Promise<void> {
    if (this.#done) throw new Error('IncomingMessage: write after commit or abort');
    this.#chunks.push(chunk);
    this.#buffered += chunk.length;
    this.#size += chunk.length;
    this.#crc = crc32(chunk, this.#crc);
    if (this.#buffered >= FLUSH_AT) await this.#flush();
  }

  /** Write what is buffered; the first flush creates the file with a placeholder M header. */
  async #flush(): Promise<void> {
    const parts = this.#chunks;
    this.#chunks = [];
    this.#buffered = 0;
    if (!this.#handle) {
      this.#handle = await this.io.open(this.tmpPath, fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_WRONLY, 0o600);
      this.#created = true;
      parts.unshift(QUEUE_FILE_MAGIC, Buffer.alloc(RECORD_HEADER_SIZE));
    }
    await this.#writeAll(Buffer.concat(parts), this.#position);
  }

  async #writeAll(bytes: Buffer, position: number): Promise<void> {
    let written = 0;
    while (written < bytes.length) {
      const { bytesWritten } = await this.#handle!.write(bytes, written, bytes.length - written, position + written);
      written += bytesWritten;
    }
    this.#position = Math.max(this.#position, position + bytes.length);
  }

  /**
   * Make the message durable in incoming/ with this envelope. Resolves — with the message bytes
   * if they were held in memory whole — only when the file and its folder are fsynced.
   * `beside` (the receiver's durable `received` line) is started once the fsynced file has its
   * name in incoming/, and runs beside the folder fsync instead of after it (with replicated
   * storage: after the second copy, which may be refused); commit() resolves when both are
   * done. It must not reject.
   */
  async commit(envelope: Envelope, beside?: () => Promise<void>): Promise<Buffer | undefined> {
    if (this.#done) throw new Error('IncomingMessage: commit after commit or abort');
    this.#done = true;
    let held: Buffer | undefined;
    let copying: Promise<void> | undefined;
    let renamed = false;
    try {
      const header = encodeRecordHeader('M', this.#size, this.#crc);
      const trailer = encodeTrailer(envelope);
      if (!this.#handle) {
        held = Buffer.concat(this.#chunks, this.#size);
        this.#chunks = [];
        this.#handle = await this.io.open(this.tmpPath, fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_WRONLY, 0o600);
        this.#created = true;
        const whole = Buffer.concat([QUEUE_FILE_MAGIC, header, held, trailer]);
        copying = this.replica?.copy(this.finalPath, whole);
        copying?.catch(() => undefined); // awaited below; a local failure first must not leave it unhandled
        await this.#writeAll(whole, 0);
      } else {
        this.#chunks.push(trailer);
        await this.#flush();
        await this.#writeAll(header, QUEUE_FILE_MAGIC.length);
      }
      await this.#handle.sync();
      // the close and the rename are independent: one thread-pool round trip, not two in a row
      const closing = this.#close();
      closing.catch(() => undefined); // awaited below; a failed rename first must not leave it unhandled
      await this.io.rename(this.tmpPath, this.finalPath);
      renamed = true;
      // with a second copy to make (replicated storage, which may refuse it), only after it
      const besideDone = this.replica ? undefined : beside?.();
      await closing;
      await this.dirSyncer.sync(this.incomingDir);
      await (copying ?? this.replica?.copy(this.finalPath, undefined));
      await (besideDone ?? beside?.());
      return held;
    } catch (err) {
      // Not acknowledged: take it back so a retry by the client is not delivered twice.
      await this.#close().catch(() => undefined);
      if (renamed) await this.io.unlink(this.finalPath).catch(() => undefined);
      else if (this.#created) await this.io.unlink(this.tmpPath).catch(() => undefined);
      if (this.replica) {
        await copying?.catch(() => undefined);
        this.replica.abandon();
      }
      throw err;
    }
  }

  /** Give up on the message (size limit, client gone, error): remove the temporary file. */
  async abort(): Promise<void> {
    if (this.#done) return;
    this.#done = true;
    this.#chunks = [];
    await this.#close().catch(() => undefined);
    if (this.#created) await this.io.unlink(this.tmpPath).catch(() => undefined);
  }

  async #close(): Promise<void> {
    const h = this.#handle;
    this.#handle = undefined;
    await h?.close();
  }
}
