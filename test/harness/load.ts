/*
 * load.ts - a load generator that behaves like a sending MTA, for tests and benchmarks.
 *
 * Exports:
 *   runLoad(opts: LoadOptions): Promise<LoadResult>
 *   buildTestMessage(testId, from, to, sizeBytes): Buffer   one test message (headers + filler)
 *   testIdOf(runId, i): string                               "<runId>-<i>"
 *   loadInRounds(opts): Promise<string[]>   rounds of `perRound` messages (2 connections, 1000
 *                           bytes) until `done()` or `stopSignal`; the accepted ids of all rounds
 *   LoadOptions, LoadResult
 *
 * `concurrency` workers each keep one SMTP connection (nodemailer's SMTPConnection) and send many
 * messages over it, one transaction at a time. Each message i carries `X-Test-Id: <runId>-<i>`
 * and `Message-ID: <<runId>-<i>@load.tandem.test>`.
 * Outcome of a message, decided like an MTA would:
 *   accepted   the 250 (LMTP: the per-recipient 250) after the end of DATA arrived. Only then.
 *   rejected   a 5xx to MAIL, RCPT, DATA or the end of DATA: recorded with the reply, no retry.
 *   retried    a 4xx, a lost connection or a protocol error: after a backoff (100 ms doubling to
 *              2 s, with jitter) the same worker reconnects if needed and sends the message again,
 *              up to `maxAttempts`; then (or with retry: false) it is recorded in `failed`.
 *   uncertain  the connection was lost after the end of DATA was sent but before its reply: the
 *              receiver may or may not have taken responsibility. The message is retried, so a
 *              message in `uncertain` may legitimately arrive twice (at-least-once), and is
 *              usually also in `accepted` (a later try succeeded). Any other duplicate at the
 *              destination is a bug of the system under test.
 * After a failed transaction the worker sends RSET (reconnecting if RSET fails).
 * `stopSignal` stops taking new messages and cuts retry backoffs short; a transaction in flight
 * completes. Messages never taken are counted in `unsent`.
 *
 * Error kinds counted in `errors`: connect, lost, lost-after-data, 4xx, 5xx, protocol, rset.
 * What can go wrong: a target that never answers holds a worker for `socketTimeoutMs` per try;
 * the generator itself uses CPU on the same machine as the system under test (as smtp-source).
 */
import { randomBytes } from "node:crypto";
import { Readable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import SMTPConnection from "nodemailer/lib/smtp-connection/index.js";

export interface LoadOptions {
  host: string;
  port: number;
  /** Number of distinct messages to send. */
  total: number;
  /** Number of parallel connections (workers). */
  concurrency: number;
  /** Approximate size of each message in bytes (headers included). */
  sizeBytes: number;
  from: string;
  to: string | ((i: number) => string);
  stopSignal?: AbortSignal;
  /** Retry 4xx and lost connections (default true). */
  retry?: boolean;
  /** Tries per message before it goes to `failed` (default 30). */
  maxAttempts?: number;
  retryMinMs?: number;
  retryMaxMs?: number;
  /** Prefix of every X-Test-Id (default: random hex). */
  runId?: string;
  lmtp?: boolean;
  /** Per-read socket timeout (default 30 s). */
  socketTimeoutMs?: number;
  /** EHLO name (default load.tandem.test). */
  heloName?: string;
}

export interface LoadResult {
  runId: string;
  /** testIds that got a 250 after DATA. */
  accepted: Set<string>;
  /** testId -> the 5xx reply. */
  rejected: Map<string, string>;
  /** testIds whose connection was lost between end of DATA and its reply (see header). */
  uncertain: Set<string>;
  /** testId -> last error, for messages given up after maxAttempts, retry: false, or stop. */
  failed: Map<string, string>;
  /** Messages never attempted because stopSignal fired. */
  unsent: number;
  /** Per accepted message: ms from MAIL FROM to the final 250 (the successful attempt). */
  latenciesMs: number[];
  /** Per accepted message: ms from the end of DATA to the final 250 (the commit). */
  commitLatenciesMs: number[];
  /** Wall time of the whole run. */
  elapsedMs: number;
  /** Count per error kind (see header). */
  errors: Record<string, number>;
  /** The first error text seen per kind, for diagnostics. */
  errorSamples: Record<string, string>;
  /** SMTP transactions started (including retries). */
  attempts: number;
}

type SmtpError = SMTPConnection.SMTPError;

type SendOutcome =
  | { type: "accepted"; mailMs: number; commitMs: number }
  | { type: "reply"; code: number; reply: string }
  | { type: "lost"; afterData: boolean; error: string }
  | { type: "protocol"; error: string };

/** Transport-level error codes of SMTPConnection. */
const CONNECTION_CODES = new Set(["ECONNECTION", "ETIMEDOUT", "ESOCKET"]);

/** "<runId>-<i>": the X-Test-Id of message i. */
export function testIdOf(runId: string, i: number): string {
  return `${runId}-${i}`;
}

/** One RFC 5322 message of about sizeBytes with X-Test-Id and a unique Message-ID. */
export function buildTestMessage(testId: string, from: string, to: string, sizeBytes: number): Buffer {
  const head =
    `From: <${from}>\r\nTo: <${to}>\r\nSubject: tandem load ${testId}\r\n` +
    `Date: ${new Date().toUTCString()}\r\nMessage-ID: <${testId}@load.tandem.test>\r\n` +
    `X-Test-Id: ${testId}\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n`;
  const line = "The quick brown fox jumps over the lazy dog, again and again and again.\r\n";
  let remaining = Math.max(2, sizeBytes - head.length);
  const parts = [head];
  while (remaining > line.length) {
    parts.push(line);
    remaining -= line.length;
  }
  parts.push(`${"x".repeat(Math.max(0, remaining - 2))}\r\n`);
  return Buffer.from(parts.join(""), "ascii");
}

/** One SMTP client connection whose failures resolve the pending operation instead of throwing. */
class ClientConnection {
  dead = false;
  private pending: ((err: Error) => void) | null = null;
  private readonly conn: SMTPConnection;

  private constructor(opts: LoadOptions) {
    this.conn = new SMTPConnection({
      host: opts.host,
      port: opts.port,
      lmtp: opts.lmtp ?? false,
      name: opts.heloName ?? "load.tandem.test",
      ignoreTLS: true,
      connectionTimeout: 10_000,
      greetingTimeout: 30_000,
      socketTimeout: opts.socketTimeoutMs ?? 30_000,
      logger: false,
    });
    const fail = (err: Error): void => {
      this.dead = true;
      const p = this.pending;
      this.pending = null;
      p?.(err);
    };
    this.conn.on("error", fail);
    this.conn.on("end", () => fail(new Error("connection closed")));
  }

  /** Connects and says EHLO; rejects with the connection error. */
  static open(opts: LoadOptions): Promise<ClientConnection> {
    const c = new ClientConnection(opts);
    return new Promise((resolve, reject) => {
      c.pending = reject;
      c.conn.connect(() => {
        c.pending = null;
        // Without this, Nagle's algorithm holds the small end-of-DATA segment until the peer's
        // delayed ACK (~40 ms), capping each connection at ~25 messages per second.
        c.conn._socket.setNoDelay(true);
        resolve(c);
      });
    });
  }

  /** One transaction; never rejects. */
  send(from: string, to: string, message: Buffer): Promise<SendOutcome> {
    return new Promise((resolve) => {
      const t0 = performance.now();
      let dataEndAt = 0;
      const body = Readable.from([message]);
      body.once("end", () => {
        dataEndAt = performance.now();
      });
      this.pending = (err) => resolve({ type: "lost", afterData: dataEndAt > 0, error: err.message });
      this.conn.send({ from, to: [to] }, body, (err) => {
        this.pending = null;
        if (!err) {
          const now = performance.now();
          resolve({ type: "accepted", mailMs: now - t0, commitMs: now - (dataEndAt || t0) });
          return;
        }
        resolve(classifyError(err, dataEndAt > 0));
      });
    });
  }

  /** RSET after a failed transaction; false if the connection is not usable any more. */
  reset(): Promise<boolean> {
    if (this.dead) return Promise.resolve(false);
    return new Promise((resolve) => {
      this.pending = () => resolve(false);
      this.conn.reset((err) => {
        this.pending = null;
        resolve(!err);
      });
    });
  }

  /** QUIT if still usable, then close. */
  close(): void {
    this.dead = true;
    this.pending = null;
    this.conn.quit();
    this.conn.close();
  }
}

/** Maps an SMTPConnection error to an outcome. */
function classifyError(err: SmtpError, afterData: boolean): SendOutcome {
  if (err.code && CONNECTION_CODES.has(err.code)) return { type: "lost", afterData, error: err.message };
  const rc = err.responseCode;
  if (typeof rc === "number" && rc >= 400 && rc < 600) return { type: "reply", code: rc, reply: err.response ?? err.message };
  return { type: "protocol", error: err.message };
}

/** Sends opts.total messages over opts.concurrency connections (see header). */
export async function runLoad(opts: LoadOptions): Promise<LoadResult> {
  const runId = opts.runId ?? randomBytes(4).toString("hex");
  const retry = opts.retry ?? true;
  const maxAttempts = opts.maxAttempts ?? 30;
  const retryMinMs = opts.retryMinMs ?? 100;
  const retryMaxMs = opts.retryMaxMs ?? 2000;
  const signal = opts.stopSignal;
  const toOf = typeof opts.to === "function" ? opts.to : () => opts.to as string;
  const result: LoadResult = {
    runId,
    accepted: new Set(),
    rejected: new Map(),
    uncertain: new Set(),
    failed: new Map(),
    unsent: 0,
    latenciesMs: [],
    commitLatenciesMs: [],
    elapsedMs: 0,
    errors: {},
    errorSamples: {},
    attempts: 0,
  };
  const countError = (kind: string, text: string): void => {
    result.errors[kind] = (result.errors[kind] ?? 0) + 1;
    result.errorSamples[kind] ??= text;
  };
  const backoff = async (attempt: number): Promise<void> => {
    const base = Math.min(retryMaxMs, retryMinMs * 2 ** (attempt - 1));
    try {
      await sleep(base / 2 + Math.random() * (base / 2), undefined, { signal });
    } catch {
      // stopSignal fired: return at once, the caller checks it
    }
  };

  let nextIndex = 0;
  const worker = async (): Promise<void> => {
    let client: ClientConnection | null = null;
    while (nextIndex < opts.total && !signal?.aborted) {
      const i = nextIndex++;
      const testId = testIdOf(runId, i);
      const to = toOf(i);
      const message = buildTestMessage(testId, opts.from, to, opts.sizeBytes);
      for (let attempt = 1; ; attempt++) {
        let lastError = "";
        if (client === null || client.dead) {
          try {
            client = await ClientConnection.open(opts);
          } catch (err) {
            client = null;
            lastError = `connect: ${(err as Error).message}`;
            countError("connect", lastError);
          }
        }
        if (client !== null) {
          result.attempts++;
          const out = await client.send(opts.from, to, message);
          if (out.type === "accepted") {
            result.accepted.add(testId);
            result.latenciesMs.push(out.mailMs);
            result.commitLatenciesMs.push(out.commitMs);
            break;
          }
          if (out.type === "reply" && out.code >= 500) {
            countError("5xx", out.reply);
            result.rejected.set(testId, out.reply);
            if (!(await client.reset())) client.close();
            break;
          }
          if (out.type === "reply") {
            lastError = out.reply;
            countError("4xx", out.reply);
            if (!(await client.reset())) {
              countError("rset", "RSET failed after a 4xx");
              client.close();
            }
          } else if (out.type === "lost") {
            lastError = out.error;
            if (out.afterData) result.uncertain.add(testId);
            countError(out.afterData ? "lost-after-data" : "lost", out.error);
            client.close();
          } else {
            lastError = out.error;
            countError("protocol", out.error);
            client.close();
          }
        }
        if (!retry || attempt >= maxAttempts || signal?.aborted) {
          result.failed.set(testId, lastError);
          break;
        }
        await backoff(attempt);
      }
    }
    client?.close();
  };

  const t0 = performance.now();
  await Promise.all(Array.from({ length: Math.max(1, opts.concurrency) }, worker));
  result.elapsedMs = performance.now() - t0;
  result.unsent = opts.total - nextIndex;
  return result;
}

/**
 * Mail to host:port in rounds of `perRound` messages (2 connections, 1000 bytes each, run ids
 * `<runId><round>-`) until `done()` is true or `stopSignal` aborts, as steady traffic during a
 * partition or a cut. `wholeRounds`: every round must be accepted in full (else it throws).
 */
export async function loadInRounds(opts: { host: string; port: number; perRound: number; runId: string; to: (i: number) => string; done: () => boolean; stopSignal: AbortSignal; wholeRounds?: boolean }): Promise<string[]> {
  const accepted: string[] = [];
  for (let round = 0; !opts.done() && !opts.stopSignal.aborted; round++) {
    const r = await runLoad({ host: opts.host, port: opts.port, total: opts.perRound, concurrency: 2, sizeBytes: 1000, from: "load@client.test", to: opts.to, runId: `${opts.runId}${round}-`, stopSignal: opts.stopSignal });
    if (opts.wholeRounds && r.accepted.size !== opts.perRound) throw new Error(`round ${round} to ${opts.host}:${opts.port}: ${r.accepted.size} of ${opts.perRound} accepted (${JSON.stringify(r.errorSamples)})`);
    accepted.push(...r.accepted);
  }
  return accepted;
}
