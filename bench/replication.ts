/*
 * replication.ts - benchmark shadow copies (src/cluster/replication) on this machine.
 *
 *   node --import tsx bench/replication.ts [--copies N=5000] [--size S=4096] [--in-flight 1,8,32,64]
 *        [--keep]
 *
 * A shadow holder in its own process (test/harness/shadow-holder-main.ts) storing into a temp
 * folder with fsync, and one ShadowClient in this process on ONE connection (HTTP/2 over TLS
 * 1.3 with client certificates made by openssl). For each in-flight limit: N copies of a queue
 * file with an S-byte message, at most that many on the wire. Figures:
 *   copies/s      N / time until the last ack
 *   p50/p99 ms    copy() call -> ack, closed loop: `in-flight` workers each copy their next
 *                 message when the last one was acknowledged (as SMTP sessions waiting for 250)
 *   discard lag   one discard notice per copy right after its ack (its one recipient delivered:
 *                 the copy is removed), p50/p99 over batches of the oldest notice's discard()
 *                 -> the holder's answer; batches go every 100 ms, while copies keep coming
 * Then one JSON line `{"bench":"replication",...}`. The machine is shared: compare within a run.
 *
 * Exports nothing (an entry point). What can go wrong: openssl missing (exits 2 with the
 * reason); the holder failing to start (its output is printed). Temp folders are removed at
 * the end unless --keep.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { makeClusterCerts, opensslMissing } from "../test/harness/cluster-certs.ts";
import { spawnProcess, trackProcesses } from "../test/harness/procs.ts";
import { ShadowClient } from "../src/cluster/replication/client.ts";
import { spoolIdentity } from "../src/cluster/replication/identity.ts";
import { encodeQueueFile } from "../src/spool/queuefile.ts";
import { makeQueueIdGenerator } from "../src/spool/queueid.ts";
import { machineInfo } from "./procstat.ts";
import { quantile } from "./stats.ts";

const { values } = parseArgs({
  options: {
    copies: { type: "string", default: "5000" },
    size: { type: "string", default: "4096" },
    "in-flight": { type: "string", default: "1,8,32,64" },
    keep: { type: "boolean", default: false },
  },
});
const copies = Number(values.copies);
const size = Number(values.size);
const levels = String(values["in-flight"]).split(",").map(Number);

if (opensslMissing) {
  console.error(opensslMissing);
  process.exit(2);
}

const pct = (sorted: number[], p: number): number => quantile(sorted, p / 100);
const procs = trackProcesses();
const dir = mkdtempSync(join(tmpdir(), "tandem-bench-replication-"));
const results: Array<Record<string, number>> = [];
try {
  const certs = makeClusterCerts(dir, ["a", "b"]);
  const holder = await spawnProcess(process.execPath, [
    "--import", "tsx", resolve("test/harness/shadow-holder-main.ts"),
    JSON.stringify({ root: join(dir, "shadow"), port: 0, origins: ["a"], ca: certs.ca, ...certs.nodes.b }),
  ], { readyMatch: (j) => j.event === "holder-ready", name: "shadow-holder" });
  const port = Number(holder.readyLine?.json?.port);
  const spoolId = await spoolIdentity(join(dir, "spool-a"));
  const nextId = makeQueueIdGenerator("a");
  const message = Buffer.from(`Subject: bench\r\n\r\n${"x".repeat(Math.max(0, size - 20))}\r\n`);
  console.log(`machine: ${JSON.stringify(machineInfo())}`);
  console.log(`${copies} copies of ${message.length}-byte messages over one connection, holder in its own process, fsync per copy\n`);
  console.log("in-flight  copies/s  ack p50 ms  ack p99 ms  discard lag p50/p99 ms");
  for (const maxInFlight of levels) {
    const client = new ShadowClient({
      origin: "a", spoolId, holder: { nodeId: "b", host: "127.0.0.1", port },
      tls: { ca: certs.ca, ...certs.nodes.a }, policy: "refuse", maxInFlight, ackTimeoutMs: 60_000,
    });
    const files = Array.from({ length: copies }, () => {
      const queueId = nextId();
      return {
        queueId,
        bytes: encodeQueueFile({
          queueId, nodeId: "a", sender: "bench@example.test", arrivedAt: Date.now(), messageId: "",
          recipients: [{ address: "rcpt@example.test", original: "rcpt@example.test" }], client: { address: "127.0.0.1", helo: "bench" },
        }, message),
      };
    });
    // Closed loop: `maxInFlight` workers, each copying its next message as soon as the last
    // was acknowledged, then reporting it delivered (one discard notice: the copy is removed).
    const latencies: number[] = [];
    const outcomes: Awaited<ReturnType<ShadowClient["copy"]>>[] = [];
    let next = 0;
    const start = performance.now();
    await Promise.all(Array.from({ length: maxInFlight }, async () => {
      while (next < files.length) {
        const f = files[next++];
        const t0 = performance.now();
        const o = await client.copy(f.queueId, f.bytes);
        latencies.push(performance.now() - t0);
        outcomes.push(o);
        client.discard([{ queueId: f.queueId, statuses: [{ index: 0, type: "delivered", at: Date.now(), reply: "250 ok", via: "bench" }] }]);
      }
    }));
    const seconds = (performance.now() - start) / 1000;
    const failed = outcomes.filter((o) => !o.protected).length;
    if (failed) console.error(`${failed} copies failed: ${JSON.stringify(outcomes.find((o) => !o.protected))}`);
    while (client.pendingDiscards > 0) await new Promise((r) => client.once("discarded", r));
    latencies.sort((a, b) => a - b);
    const lags = [...client.stats.discardLagMs].sort((a, b) => a - b);
    const row = {
      inFlight: maxInFlight, copiesPerSecond: Math.round(copies / seconds), ackP50Ms: +pct(latencies, 50).toFixed(2), ackP99Ms: +pct(latencies, 99).toFixed(2),
      discardLagP50Ms: pct(lags, 50), discardLagP99Ms: pct(lags, 99), failed,
    };
    results.push(row);
    console.log(`${String(maxInFlight).padStart(9)}  ${String(row.copiesPerSecond).padStart(8)}  ${String(row.ackP50Ms).padStart(10)}  ${String(row.ackP99Ms).padStart(10)}  ${row.discardLagP50Ms}/${row.discardLagP99Ms}`);
    await client.close();
  }
  await holder.stop();
  console.log(JSON.stringify({ bench: "replication", copies, size: message.length, machine: machineInfo(), results }));
} finally {
  await procs.stopAll();
  if (!values.keep) rmSync(dir, { recursive: true, force: true });
}
