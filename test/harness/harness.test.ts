/*
 * harness.test.ts - tests of the process-level test harness itself (procs, sink, load, ports),
 * against the real sink process only; the Tandem node is not needed.
 *
 * What can go wrong: these tests start processes; every one is in a group stopped in after(),
 * and the procs.ts exit hook kills what is left if the runner dies.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { parse as parseYaml } from "yaml";
import { runLoad } from "./load.ts";
import { writeNodeConfig } from "./node.ts";
import { freePort, parseHostPort } from "./ports.ts";
import { spawnProcess, trackProcesses, type ProcessRegistry } from "./procs.ts";
import { startSink } from "./sink.ts";

/** Pids of processes whose process group is pgid (from /proc). */
function groupMembers(pgid: number): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync("/proc").filter((n) => /^\d+$/.test(n))) {
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      // fields[0] = state, [1] = ppid, [2] = pgrp
      if (Number(fields[2]) === pgid && fields[0] !== "Z") pids.push(Number(entry));
    } catch {
      // the process vanished while we looked
    }
  }
  return pids;
}

/** True once pid is gone or a zombie. */
function isGone(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z");
  } catch {
    return true;
  }
}

async function eventually(cond: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 20));
  }
  return true;
}

describe("harness", () => {
  let procs: ProcessRegistry;
  before(() => {
    procs = trackProcesses();
  });
  after(async () => {
    await procs.stopAll();
  });

  test("ports: freePort gives a bindable loopback port; parseHostPort reads v4 and v6", async () => {
    const port = await freePort();
    assert.ok(port > 0 && port < 65536);
    assert.deepEqual(parseHostPort("127.0.0.1:2525"), { host: "127.0.0.1", port: 2525 });
    assert.deepEqual(parseHostPort("[::1]:25"), { host: "::1", port: 25 });
    assert.throws(() => parseHostPort("127.0.0.1"), /not a host:port/);
  });

  test("sink records exactly the messages runLoad saw accepted (concurrency 4)", async () => {
    const sink = await startSink();
    const total = 200;
    const res = await runLoad({
      host: sink.host,
      port: sink.port,
      total,
      concurrency: 4,
      sizeBytes: 2048,
      from: "sender@example.org",
      to: (i) => `rcpt${i}@example.net`,
    });
    assert.equal(res.accepted.size, total, `errors: ${JSON.stringify(res.errorSamples)}`);
    assert.equal(res.rejected.size + res.failed.size + res.uncertain.size + res.unsent, 0);
    assert.equal(res.latenciesMs.length, total);
    await sink.waitForCount(total, 5_000);
    const records = sink.readRecords();
    assert.equal(records.length, total);
    const counts = sink.countsByTestId();
    assert.deepEqual(new Set(counts.keys()), res.accepted);
    assert.ok([...counts.values()].every((n) => n === 1), "no duplicates");
    const r = records.find((x) => x.testId === `${res.runId}-7`);
    assert.ok(r);
    assert.equal(r.from, "sender@example.org");
    assert.deepEqual(r.to, ["rcpt7@example.net"]);
    assert.equal(r.messageId, `<${res.runId}-7@load.tandem.test>`);
    assert.ok(Math.abs(r.size - 2048) < 64, `size ${r.size}`);
    await sink.stop();
    assert.deepEqual(sink.proc.exitStatus, { code: 0, signal: null });
  });

  test("--fail-rcpt: 5xx recorded as rejected without retry, 4xx retried then failed", async () => {
    const sink = await startSink({
      failRcpt: [
        { pattern: "^reject", code: 550 },
        { pattern: "^later", code: 451 },
      ],
    });
    const to = (i: number): string => (i % 3 === 0 ? `reject${i}@example.net` : i % 3 === 1 ? `later${i}@example.net` : `ok${i}@example.net`);
    const res = await runLoad({
      host: sink.host,
      port: sink.port,
      total: 12,
      concurrency: 2,
      sizeBytes: 512,
      from: "a@example.org",
      to,
      maxAttempts: 2,
      retryMinMs: 10,
      retryMaxMs: 20,
    });
    const ids = (pred: (i: number) => boolean): Set<string> =>
      new Set([...Array(12).keys()].filter(pred).map((i) => `${res.runId}-${i}`));
    assert.deepEqual(new Set(res.rejected.keys()), ids((i) => i % 3 === 0));
    assert.ok([...res.rejected.values()].every((reply) => reply.startsWith("550")), [...res.rejected.values()].join("; "));
    assert.deepEqual(new Set(res.failed.keys()), ids((i) => i % 3 === 1));
    assert.ok([...res.failed.values()].every((reply) => reply.startsWith("451")));
    assert.equal(res.errors["4xx"], 8, "4 messages x 2 attempts");
    assert.deepEqual(res.accepted, ids((i) => i % 3 === 2));
    await sink.waitForCount(4, 5_000);
    assert.deepEqual(new Set(sink.countsByTestId().keys()), res.accepted);
  });

  test("runLoad retries through a sink crash: nothing lost, duplicates only among uncertain", async () => {
    const port = await freePort();
    const dir = mkdtempSync(join(tmpdir(), "tandem-harness-"));
    const out = join(dir, "received.jsonl");
    const first = await startSink({ listen: `127.0.0.1:${port}`, out, delayMs: 2 });
    const load = runLoad({ host: "127.0.0.1", port, total: 300, concurrency: 4, sizeBytes: 1024, from: "a@example.org", to: "b@example.net", retryMinMs: 50 });
    await first.waitForCount(100, 10_000);
    await first.proc.killHard();
    const second = await startSink({ listen: `127.0.0.1:${port}`, out });
    const res = await load;
    assert.equal(res.accepted.size, 300, `failed: ${JSON.stringify([...res.failed].slice(0, 3))}`);
    assert.ok((res.errors["lost"] ?? 0) + (res.errors["lost-after-data"] ?? 0) + (res.errors["connect"] ?? 0) > 0, "the crash was noticed");
    await second.waitForCount(300, 5_000);
    const counts = second.countsByTestId();
    for (const id of res.accepted) assert.ok(counts.has(id), `accepted ${id} missing at the sink`);
    for (const [id, n] of counts) if (n > 1) assert.ok(res.uncertain.has(id), `${id} duplicated but not uncertain`);
  });

  test("LMTP: the sink speaks LMTP and runLoad with lmtp: true gets every message accepted", async () => {
    const sink = await startSink({ lmtp: true });
    const res = await runLoad({ host: sink.host, port: sink.port, total: 20, concurrency: 2, sizeBytes: 1024, from: "a@example.org", to: "b@example.net", lmtp: true });
    assert.equal(res.accepted.size, 20, JSON.stringify(res.errorSamples));
    await sink.waitForCount(20, 5_000);
    assert.deepEqual(new Set(sink.countsByTestId().keys()), res.accepted);
  });

  test("writeNodeConfig: default config deep-merged with overrides, YAML base accepted", () => {
    const dir = mkdtempSync(join(tmpdir(), "tandem-harness-"));
    const path = writeNodeConfig(dir, { relay: { host: "127.0.0.1:2526" }, queue: { max_backoff: "9s" } });
    const cfg = parseYaml(readFileSync(path, "utf8"));
    assert.deepEqual(cfg.relay, { networks: ["127.0.0.0/8", "::1/128"], host: "127.0.0.1:2526" });
    assert.deepEqual(cfg.queue, { min_backoff: "1s", max_backoff: "9s" });
    assert.equal(cfg.spool.root, join(dir, "spool"));
    assert.deepEqual(cfg.node, { id: "a", hostname: "tandem.test" });
    const path2 = writeNodeConfig(dir, { node: { id: "b" } }, "node: {id: a, hostname: x.test}\nsmtp: {listen: '127.0.0.1:0'}\n");
    assert.deepEqual(parseYaml(readFileSync(path2, "utf8")), { node: { id: "b", hostname: "x.test" }, smtp: { listen: "127.0.0.1:0" } });
  });

  test("stopping a process group also stops its children", async () => {
    const proc = await spawnProcess("bash", ["-c", "sleep 100 & sleep 100"]);
    assert.ok(await eventually(() => groupMembers(proc.pid).length >= 2, 5_000), "two sleeps running");
    const members = groupMembers(proc.pid);
    assert.ok(members.includes(proc.pid));
    const st = await proc.stop(2_000);
    assert.equal(st.signal, "SIGTERM");
    assert.ok(await eventually(() => members.every(isGone), 5_000), `left over: ${members.filter((p) => !isGone(p))}`);
  });

  test("killHard on a group; trackProcesses sees it; exited resolves with SIGKILL", async () => {
    const reg = trackProcesses();
    const proc = await spawnProcess("bash", ["-c", "trap '' TERM; sleep 100 & wait"]);
    assert.deepEqual(reg.live, [proc]);
    assert.ok(await eventually(() => groupMembers(proc.pid).length >= 2, 5_000));
    const members = groupMembers(proc.pid);
    const st = await proc.stop(300); // SIGTERM is ignored by bash: escalates to SIGKILL
    assert.equal(st.signal, "SIGKILL");
    assert.ok(await eventually(() => members.every(isGone), 5_000));
    assert.deepEqual(reg.live, []);
    await reg.stopAll();
  });

  test("spawnProcess rejects with the output when the process exits before ready", async () => {
    await assert.rejects(
      spawnProcess("bash", ["-c", "echo starting; echo 'config is broken' >&2; exit 3"], {
        readyMatch: (j) => j.event === "ready",
        readyTimeoutMs: 5_000,
      }),
      (err: Error) => /exited \(code 3/.test(err.message) && /config is broken/.test(err.message),
    );
    await assert.rejects(
      spawnProcess("bash", ["-c", "echo '{\"event\":\"starting\"}'; sleep 100"], { readyMatch: (j) => j.event === "ready", readyTimeoutMs: 300 }),
      /no matching line within 300 ms[\s\S]*starting/,
    );
  });

  test("waitForLine sees JSON lines; logFile gets a copy", async () => {
    const dir = mkdtempSync(join(tmpdir(), "tandem-harness-"));
    const logFile = join(dir, "proc.log");
    const proc = await spawnProcess("bash", ["-c", `echo '{"event":"ready"}'; sleep 0.2; echo '{"event":"later","n":2}'; sleep 100`], {
      readyMatch: (j) => j.event === "ready",
      logFile,
    });
    const line = await proc.waitForLine((l) => l.json?.event === "later", 5_000);
    assert.equal(line.json?.n, 2);
    await proc.stop();
    assert.match(readFileSync(logFile, "utf8"), /"event":"later"/);
  });

  test("a line that comes after the test removed the logFile's folder is kept in memory and throws nothing", async () => {
    const dir = mkdtempSync(join(tmpdir(), "tandem-harness-"));
    const proc = await spawnProcess("bash", ["-c", `echo '{"event":"ready"}'; sleep 0.3; echo '{"event":"late"}'; sleep 100`], {
      readyMatch: (j) => j.event === "ready",
      logFile: join(dir, "proc.log"),
    });
    rmSync(dir, { recursive: true, force: true });
    // the copy to the file fails now: thrown from the output handler, it would be an uncaught
    // exception that fails the whole test file after its tests passed
    let uncaught: unknown;
    const onUncaught = (err: unknown): void => { uncaught = err; };
    process.on("uncaughtException", onUncaught);
    try {
      const line = await proc.waitForLine((l) => l.json?.event === "late", 5_000);
      assert.equal(line.json?.event, "late");
      await proc.stop();
    } finally {
      process.off("uncaughtException", onUncaught);
    }
    assert.equal(uncaught, undefined);
  });
});
