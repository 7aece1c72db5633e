/*
 * steps.ts - where one client's time goes, step by step: Tandem against Postfix (and optionally
 * another checkout of Tandem), one session at a time, one TCP connection per message.
 *
 *   node --import tsx bench/steps.ts [--messages N=2000] [--block B=100] [--bytes 4096] [--baseline DIR] [--bare]
 *        [--config JSON]
 *
 * For each message: connect, then each command and the wait for its reply, timed apart:
 *   connect   TCP connect returned
 *   greeting  connect -> 220
 *   ehlo      EHLO -> 250
 *   mail      MAIL FROM -> 250
 *   rcpt      RCPT TO -> 250
 *   data      DATA -> 354
 *   dot       the message and its final dot -> 250 (the relay's commit: 250 means on disk)
 *   quit      QUIT -> 221
 *   total     connect .. 221
 * The relays take turns in blocks of B messages, so that the machine's drift hits them alike.
 * Each relay forwards to an smtp-sink of its own (as bench/smtp-source.ts). This is the latency
 * chain behind smtp-source's "1 session" case: one client waits for every reply in turn, so each
 * step's median adds up to the time a message costs it.
 * `--baseline DIR` adds a Tandem run from DIR/dist (another checkout, built: a before/after);
 * `--bare` adds smtp-server with nothing behind it (bench/bare-smtp-server.ts: no policy, no
 * disk, no delivery), the floor of the library and of Node for each step.
 * `--config '{"smtp":{"workers":2}}'` merges that into every Tandem's tandem.yaml (both sides of
 * a --baseline run), to time the steps under a setting.
 * Printed: p50 and p90 of each step per relay (ms), then one JSON line {"bench":"steps",...}.
 * Needs the Debian postfix package.
 */
import { chmodSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { buildTestMessage } from "../test/harness/load.ts";
import { startNode, writeNodeConfig } from "../test/harness/node.ts";
import { formatHostPort, type HostPort } from "../test/harness/ports.ts";
import { spawnProcess, trackProcesses } from "../test/harness/procs.ts";
import { RawSmtpClient } from "../test/harness/raw-smtp.ts";
import { postfixAvailability, startPostfixRelay } from "./postfix.ts";
import { SmtpSink } from "./smtp-sink.ts";
import { machineInfo } from "./procstat.ts";
import { quantile } from "./stats.ts";

const STEPS = ["connect", "greeting", "ehlo", "mail", "rcpt", "data", "dot", "quit", "total"] as const;
type Step = (typeof STEPS)[number];
interface Relay { name: string; smtp: HostPort; stop(): Promise<void>; times: Record<Step, number[]> }

function log(text: string): void {
  process.stderr.write(`${new Date().toISOString().slice(11, 19)} ${text}\n`);
}

async function expect(c: RawSmtpClient, code: number, what: string): Promise<void> {
  const r = await c.readReply();
  if (r.type !== "reply" || r.code !== code) throw new Error(`${what}: expected ${code}, got ${JSON.stringify(r)}`);
}

/** One message over a connection of its own; adds each step's milliseconds to r.times. */
async function sendOne(r: Relay, message: Buffer): Promise<void> {
  const t0 = performance.now();
  let t = t0;
  const lap = (s: Step) => {
    const now = performance.now();
    r.times[s].push(now - t);
    t = now;
  };
  const c = await RawSmtpClient.connect(r.smtp.port, r.smtp.host, 5_000, undefined, true);
  lap("connect");
  await expect(c, 220, "greeting");
  lap("greeting");
  const exchanges: Array<[Step, string | Buffer, number]> = [
    ["ehlo", "EHLO bench.example\r\n", 250],
    ["mail", "MAIL FROM:<bench@example.org>\r\n", 250],
    ["rcpt", "RCPT TO:<sink@example.net>\r\n", 250],
    ["data", "DATA\r\n", 354],
    ["dot", Buffer.concat([message, Buffer.from(".\r\n")]), 250],
    ["quit", "QUIT\r\n", 221],
  ];
  for (const [step, bytes, code] of exchanges) {
    c.write(bytes);
    await expect(c, code, step);
    lap(step);
  }
  c.close();
  r.times.total.push(performance.now() - t0);
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      messages: { type: "string", default: "2000" },
      block: { type: "string", default: "100" },
      bytes: { type: "string", default: "4096" },
      baseline: { type: "string" },
      bare: { type: "boolean", default: false },
      config: { type: "string", default: "{}" },
    },
    strict: true,
  });
  const n = Number(values.messages);
  const block = Number(values.block);
  const avail = postfixAvailability();
  if (!avail.ok) throw new Error(`Postfix cannot run here: ${avail.reason}`);
  const machine = machineInfo();
  const procs = trackProcesses();
  const root = mkdtempSync(join(tmpdir(), "tandem-steps-"));
  chmodSync(root, 0o755); // Postfix's daemons (user postfix) must reach their queue inside
  const relays: Relay[] = [];
  const extra = JSON.parse(values.config) as Record<string, unknown>;
  const empty = (): Record<Step, number[]> => Object.fromEntries(STEPS.map((s) => [s, []])) as unknown as Record<Step, number[]>;
  try {
    const tandem = async (name: string, distCli?: string): Promise<void> => {
      const sink = await SmtpSink.start();
      const dir = join(root, name);
      const config = writeNodeConfig(dir, { ...extra, relay: { ...(extra.relay as object), host: formatHostPort(sink.address) } });
      const node = await startNode({ config, listen: "127.0.0.1:0", logFile: join(dir, "tandem.log"), distCli });
      relays.push({ name, smtp: node.smtp, stop: async () => { await node.stop(); sink.stop(); }, times: empty() });
    };
    await tandem("tandem");
    if (values.baseline) await tandem("tandem-base", join(values.baseline, "dist/cli/main.js"));
    const pfSink = await SmtpSink.start();
    const pf = await startPostfixRelay({ dir: join(root, "postfix"), relayHost: pfSink.address });
    relays.push({ name: "postfix", smtp: pf.smtp, stop: async () => { await pf.stop(); pfSink.stop(); }, times: empty() });
    if (values.bare) {
      const bare = await spawnProcess(process.execPath, ["--import", "tsx", join(import.meta.dirname, "bare-smtp-server.ts")], {
        name: "bare-smtp-server",
        readyMatch: (j) => j.event === "ready",
      });
      const port = Number(bare.readyLine?.json?.port);
      relays.push({ name: "bare", smtp: { host: "127.0.0.1", port }, stop: () => bare.stop().then(() => undefined), times: empty() });
    }
    const message = buildTestMessage("steps", "bench@example.org", "sink@example.net", Number(values.bytes));
    log(`machine: ${machine.nproc} CPUs, ${machine.cpuModel}; ${n} messages a relay in blocks of ${block}, after ${block} of warm-up each`);
    for (const r of relays) {
      for (let i = 0; i < block; i++) await sendOne(r, message);
      r.times = empty();
    }
    for (let done = 0; done < n; done += block) {
      for (const r of relays) for (let i = 0; i < Math.min(block, n - done); i++) await sendOne(r, message);
    }
  } finally {
    for (const r of relays) await r.stop().catch(() => undefined);
    await procs.stopAll();
    rmSync(root, { recursive: true, force: true });
  }
  console.log(`\none client, one connection per message, ${values.bytes}-byte messages, ${n} a relay; ms, p50 / p90`);
  console.log(`machine: ${machine.nproc} CPUs, ${machine.cpuModel}, Linux ${machine.kernel}, Node ${machine.node}\n`);
  for (const r of relays) for (const s of STEPS) r.times[s].sort((a, b) => a - b);
  const at = (r: Relay, s: Step) => ({ p50: +quantile(r.times[s], 0.5).toFixed(3), p90: +quantile(r.times[s], 0.9).toFixed(3) });
  console.log(["step".padEnd(9), ...relays.map((r) => r.name.padEnd(14))].join(" "));
  for (const s of STEPS) console.log([s.padEnd(9), ...relays.map((r) => `${at(r, s).p50.toFixed(3)} / ${at(r, s).p90.toFixed(3)}`.padEnd(14))].join(" "));
  const summary = Object.fromEntries(relays.map((r) => [r.name, Object.fromEntries(STEPS.map((s) => [s, at(r, s)]))]));
  console.log(JSON.stringify({ bench: "steps", messages: n, bytes: Number(values.bytes), machine, relays: summary }));
}

main().catch((err) => {
  console.error("bench/steps:", err);
  process.exit(1);
});
