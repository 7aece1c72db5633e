/*
 * sink.ts - start the SMTP sink (sink-main.ts) as a separate process and read what it received.
 *
 * Exports:
 *   startSink(opts?): Promise<Sink>   spawns `node --import tsx test/harness/sink-main.ts` in its
 *                                     own process group on 127.0.0.1:0 and waits for "ready".
 *   Sink       host, port, address, outFile, proc, readRecords(), count(), waitForCount(n, ms),
 *              countsByTestId(), stop()
 *   duplicates(counts): number        copies beyond the first in countsByTestId()
 *   SinkRecord one accepted message as recorded by the sink
 *   SinkOptions
 *
 * The record file is read incrementally (only bytes appended since the last read), so polling it
 * during a 20 000-message benchmark costs little. A record is written before the sink answers 250,
 * so the records are a superset of what any client saw accepted by the sink.
 * What can go wrong: the sink not starting (the error carries its output); waitForCount timing
 * out (the error says how many records arrived); a partially written last line is held back
 * until its newline arrives.
 */
import { closeSync, mkdtempSync, openSync, readSync, fstatSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { formatHostPort, parseHostPort } from "./ports.ts";
import { spawnProcess, type Proc } from "./procs.ts";

export interface SinkRecord {
  /** Date.now() in the sink when the record was written (just before the 250). */
  t: number;
  from: string;
  to: string[];
  messageId: string | null;
  /** Value of the X-Test-Id header, null when absent. */
  testId: string | null;
  size: number;
}

export interface SinkOptions {
  /** Record file; default a new file under a fresh temp folder. */
  out?: string;
  /** Default "127.0.0.1:0"; loopback only. */
  listen?: string;
  lmtp?: boolean;
  /** RCPT addresses matching pattern (case-insensitive regex source) get reply code. */
  failRcpt?: Array<{ pattern: string; code: number }>;
  /** Delay after DATA before recording and answering. */
  delayMs?: number;
  /** Tee the sink's output to this file. */
  logFile?: string;
  readyTimeoutMs?: number;
}

export interface Sink {
  readonly proc: Proc;
  readonly host: string;
  readonly port: number;
  /** "127.0.0.1:PORT" */
  readonly address: string;
  readonly outFile: string;
  /** All records so far (reads what was appended since the last call). */
  readRecords(): readonly SinkRecord[];
  /** Number of records so far. */
  count(): number;
  /** Resolves once at least n records exist; rejects after timeoutMs. */
  waitForCount(n: number, timeoutMs: number): Promise<number>;
  /** testId -> number of records carrying it (values > 1 are duplicates). */
  countsByTestId(): Map<string, number>;
  /** SIGTERM the sink's process group (SIGKILL after a timeout). */
  stop(): Promise<void>;
}

const SINK_MAIN = fileURLToPath(new URL("./sink-main.ts", import.meta.url));
const REPO_ROOT = fileURLToPath(new URL("../../", import.meta.url));
const POLL_MS = 20;

/** Incremental reader of a JSON-lines file that only grows. */
class RecordFile {
  readonly records: SinkRecord[] = [];
  private offset = 0;
  private partial = "";
  private readonly buf = Buffer.alloc(1 << 20);

  constructor(private readonly path: string) {}

  /** Reads bytes appended since the last call and parses complete lines. */
  refresh(): void {
    let fd: number;
    try {
      fd = openSync(this.path, "r");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return;
      throw err;
    }
    try {
      const size = fstatSync(fd).size;
      while (this.offset < size) {
        const n = readSync(fd, this.buf, 0, this.buf.length, this.offset);
        if (n <= 0) break;
        this.offset += n;
        const text = this.partial + this.buf.toString("utf8", 0, n);
        const lines = text.split("\n");
        this.partial = lines.pop() ?? "";
        for (const line of lines) if (line) this.records.push(JSON.parse(line) as SinkRecord);
      }
    } finally {
      closeSync(fd);
    }
  }
}

/** Starts a sink process and waits until it listens. */
export async function startSink(opts: SinkOptions = {}): Promise<Sink> {
  const outFile = opts.out ?? join(mkdtempSync(join(tmpdir(), "tandem-sink-")), "received.jsonl");
  const args = ["--import", "tsx", SINK_MAIN, "--listen", opts.listen ?? "127.0.0.1:0", "--out", outFile];
  if (opts.lmtp) args.push("--lmtp");
  for (const rule of opts.failRcpt ?? []) args.push("--fail-rcpt", `${rule.pattern}=${rule.code}`);
  if (opts.delayMs) args.push("--delay-ms", String(opts.delayMs));
  const proc = await spawnProcess(process.execPath, args, {
    cwd: REPO_ROOT,
    name: "sink",
    logFile: opts.logFile,
    readyTimeoutMs: opts.readyTimeoutMs ?? 20_000,
    readyMatch: (j) => j.event === "ready" && typeof j.smtp === "string",
  });
  const hp = parseHostPort(String(proc.readyLine?.json?.smtp));
  const file = new RecordFile(outFile);

  const readRecords = (): readonly SinkRecord[] => {
    file.refresh();
    return file.records;
  };
  return {
    proc,
    host: hp.host,
    port: hp.port,
    address: formatHostPort(hp),
    outFile,
    readRecords,
    count: () => readRecords().length,
    async waitForCount(n, timeoutMs) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const have = readRecords().length;
        if (have >= n) return have;
        if (Date.now() >= deadline) throw new Error(`sink ${formatHostPort(hp)}: ${have} of ${n} messages after ${timeoutMs} ms`);
        if (proc.exitStatus) throw new Error(`sink exited (${JSON.stringify(proc.exitStatus)}) with ${have} of ${n} messages; output:\n${proc.output()}`);
        await new Promise((r) => setTimeout(r, POLL_MS));
      }
    },
    countsByTestId() {
      const counts = new Map<string, number>();
      for (const r of readRecords()) if (r.testId !== null) counts.set(r.testId, (counts.get(r.testId) ?? 0) + 1);
      return counts;
    },
    async stop() {
      await proc.stop(5_000);
    },
  };
}

/** Copies beyond the first, summed over every test id (countsByTestId()'s values above 1). */
export function duplicates(counts: Map<string, number>): number {
  let d = 0;
  for (const n of counts.values()) if (n > 1) d += n - 1;
  return d;
}
