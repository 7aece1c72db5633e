/*
 * sink-main.ts - the SMTP/LMTP sink as its own process: the final destination in tests and
 * benchmarks, which records every message it accepts.
 *
 *   node --import tsx test/harness/sink-main.ts --listen 127.0.0.1:0 --out FILE
 *        [--lmtp] [--fail-rcpt REGEX=CODE ...] [--delay-ms N]
 *
 * For each accepted message it appends one JSON line to FILE with a synchronous write BEFORE
 * it answers 250, so every 250 the sink ever sent is in FILE (the converse does not hold: a
 * record whose 250 was lost with the connection is a legitimate source of duplicates upstream):
 *   {"t":<ms epoch>,"from":"a@x","to":["b@y"],"messageId":"<..>","testId":"<X-Test-Id>","size":N}
 * When listening it prints {"event":"ready","smtp":"127.0.0.1:PORT"} on stdout. Other events
 * (errors) are JSON lines on stdout too.
 *   --fail-rcpt REGEX=CODE  RCPT TO addresses matching REGEX get reply CODE (e.g. 550, 451);
 *                           repeatable, the first match wins.
 *   --delay-ms N            wait N ms after the end of DATA before recording and answering.
 *   --lmtp                  speak LMTP (one reply per accepted recipient, all 250).
 * Built on smtp-server: no TLS, no AUTH (authOptional, STARTTLS and AUTH disabled), PIPELINING
 * advertised, SIZE 1 GiB. It greets at once, as Postfix's smtpd does (Tandem's replacement of
 * smtp-server's greeting, receiver/greeting-delay.ts, set to 0 ms): smtp-server's own fixed 100 ms
 * pause before the banner would be added to every connection a test or a benchmark times, e.g.
 * a takeover's first delivery. SIGTERM/SIGINT: stop listening and exit 0.
 *
 * Exports nothing (an entry point). What can go wrong: a bad --listen or --fail-rcpt exits 2
 * with a message; an unwritable --out exits 1; a message whose headers cannot be parsed is
 * recorded with messageId/testId null.
 */
import { closeSync, openSync, writeSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { parseArgs } from "node:util";
import { MailParser } from "mailparser";
import { SMTPServer, type SMTPServerError } from "smtp-server";
import { GREETING_DELAY_OPTION, installGreetingDelay } from "../../src/receiver/greeting-delay.ts";
import { formatHostPort, parseHostPort } from "./ports.ts";
import type { SinkRecord } from "./sink.ts";

interface FailRule {
  pattern: RegExp;
  code: number;
}

function emit(obj: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify({ t: Date.now(), ...obj })}\n`);
}

function usage(message: string): never {
  process.stderr.write(
    `sink-main: ${message}\nusage: sink-main.ts --listen HOST:PORT --out FILE [--lmtp] [--fail-rcpt REGEX=CODE] [--delay-ms N]\n`,
  );
  process.exit(2);
}

/** Parses "REGEX=CODE"; the last '=' separates them so the regex may contain '='. */
function parseFailRule(text: string): FailRule {
  const at = text.lastIndexOf("=");
  const code = Number(text.slice(at + 1));
  if (at <= 0 || !Number.isInteger(code) || code < 400 || code > 599) usage(`--fail-rcpt wants REGEX=CODE with CODE 4xx/5xx, got ${JSON.stringify(text)}`);
  try {
    return { pattern: new RegExp(text.slice(0, at), "i"), code };
  } catch (err) {
    usage(`--fail-rcpt: bad regex: ${(err as Error).message}`);
  }
}

/** Header value as text: mailparser gives strings for these, objects for structured ones. */
function headerText(v: unknown): string | null {
  if (typeof v === "string") return v;
  if (Array.isArray(v) && typeof v[0] === "string") return v[0];
  return null;
}

const { values } = parseArgs({
  options: {
    listen: { type: "string", default: "127.0.0.1:0" },
    out: { type: "string" },
    lmtp: { type: "boolean", default: false },
    "fail-rcpt": { type: "string", multiple: true, default: [] },
    "delay-ms": { type: "string", default: "0" },
  },
  strict: true,
});
if (!values.out) usage("--out FILE is required");
let listen;
try {
  listen = parseHostPort(values.listen);
} catch (err) {
  usage((err as Error).message);
}
const failRules = values["fail-rcpt"].map(parseFailRule);
const delayMs = Number(values["delay-ms"]);
if (!Number.isFinite(delayMs) || delayMs < 0) usage(`--delay-ms wants a number >= 0, got ${values["delay-ms"]}`);

let outFd: number;
try {
  outFd = openSync(values.out, "a");
} catch (err) {
  process.stderr.write(`sink-main: cannot open --out ${values.out}: ${(err as Error).message}\n`);
  process.exit(1);
}

const server = new SMTPServer({
  lmtp: values.lmtp,
  name: "sink.tandem.test",
  banner: "tandem test sink",
  authOptional: true,
  disabledCommands: ["STARTTLS", "AUTH"],
  hideSTARTTLS: true,
  size: 1024 * 1024 * 1024,
  disableReverseLookup: true,
  logger: false,
  closeTimeout: 1000,
  noDelay: true,
  onRcptTo(address, _session, callback) {
    const rule = failRules.find((r) => r.pattern.test(address.address));
    if (!rule) return callback();
    const err: SMTPServerError = new Error(`${rule.code >= 500 ? "rejected" : "try again later"}: ${address.address} (sink --fail-rcpt)`);
    err.responseCode = rule.code;
    callback(err);
  },
  onData(stream, session, callback) {
    let size = 0;
    let headers: Map<string, unknown> | undefined;
    const parser = new MailParser({ skipHtmlToText: true, skipTextToHtml: true, skipTextLinks: true, skipImageLinks: true });
    parser.on("headers", (h: Map<string, unknown>) => {
      headers = h;
    });
    parser.on("data", (part: { type: string; release?: () => void }) => {
      if (part.type === "attachment") part.release?.();
    });
    parser.on("error", () => {
      headers ??= new Map();
    });
    stream.on("data", (chunk: Buffer) => {
      size += chunk.length;
    });
    const parsed = new Promise<void>((resolve) => {
      parser.on("end", resolve);
      parser.on("error", () => resolve());
    });
    stream.pipe(parser);
    stream.on("end", () => {
      void (async () => {
        await parsed;
        if (delayMs > 0) await sleep(delayMs);
        if (stream.sizeExceeded) {
          const err: SMTPServerError = new Error("message too large");
          err.responseCode = 552;
          return callback(err);
        }
        const record: SinkRecord = {
          t: Date.now(),
          from: session.envelope.mailFrom ? session.envelope.mailFrom.address : "",
          to: session.envelope.rcptTo.map((r) => r.address),
          messageId: headerText(headers?.get("message-id")),
          testId: headerText(headers?.get("x-test-id")),
          size,
        };
        writeSync(outFd, `${JSON.stringify(record)}\n`);
        callback(null, `ok ${record.testId ?? "-"}`);
      })();
    });
  },
});
// the greeting at once (see the header)
if (installGreetingDelay()) Object.assign(server.options, { [GREETING_DELAY_OPTION]: 0 });
else emit({ event: "warning", msg: "smtp-server's init() changed: the sink greets after its 100 ms pause" });

server.on("error", (err) => emit({ event: "error", error: err.message }));

server.server.once("error", (err) => {
  emit({ event: "listen_failed", error: err.message });
  process.exit(1);
});

server.listen(listen.port, listen.host, () => {
  const addr = server.server.address();
  if (addr === null || typeof addr === "string") throw new Error(`unexpected listen address ${String(addr)}`);
  emit({ event: "ready", smtp: formatHostPort({ host: addr.address, port: addr.port }), lmtp: values.lmtp });
});

/** Stops listening, gives open sessions a moment, exits 0. */
function shutdown(): void {
  server.close(() => {
    closeSync(outFd);
    process.exit(0);
  });
}
process.once("SIGTERM", shutdown);
process.once("SIGINT", shutdown);
