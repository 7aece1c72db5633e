/*
 * soak.ts - a Tandem pair under full load for a long time with a cluster timing profile: does a
 * healthy, busy node ever get taken for dead (a false takeover) or fence itself?
 *
 *   node --import tsx bench/soak.ts [--minutes 10] [--timings fast|default] [--connections 20]
 *        [--size 4096] [--storage shared|replicated] [--keep]
 *
 * One fresh cluster (test/harness/cluster.ts) of two real node processes relaying to a sink
 * that is up; the load client sends to both nodes at once, C/2 connections each, as fast as
 * they answer (closed loop: every connection sends its next message as soon as the last one got
 * its reply), for --minutes. Every 250 ms both nodes' GET /cluster is read:
 *   false takeovers  takeovers counted by either node (nobody died: each one is false)
 *   fences           fences counted by either node (the disk heartbeat not renewed in fence_after)
 *   suspect / dead   polls where a node saw its peer as anything but alive (how close the
 *                    detection came to a false takeover; suspect = three intervals silent)
 *   disk heartbeat age  the largest age of a node's last good renewal seen (its margin to
 *                    fence_after), shared storage only
 * and at the end the tracking log's takeover/fenced events are counted too. Then every accepted
 * message must be at the sink (lost), once (duplicates; a takeover would cause some).
 * Prints human lines, then one JSON line {"bench":"soak",...}. Exit code 1 on a false takeover,
 * a fence, or a lost message. A benchmark, not a test: run it by hand, its figures go in
 * docs/ha.md. Temp folders are removed at the end unless --keep.
 */
import { setMaxListeners } from "node:events";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { createCluster } from "../test/harness/cluster.ts";
import { runLoad } from "../test/harness/load.ts";
import { trackProcesses } from "../test/harness/procs.ts";
import { startSink } from "../test/harness/sink.ts";
import { groupCpuSeconds, machineCpuSeconds, machineInfo } from "./procstat.ts";
import { DEFAULT_TIMINGS, FAST_TIMINGS, timingsConfig } from "./timings.ts";

const { values } = parseArgs({
  options: {
    minutes: { type: "string", default: "10" },
    timings: { type: "string", default: "fast" },
    connections: { type: "string", default: "20" },
    size: { type: "string", default: "4096" },
    storage: { type: "string", default: "shared" },
    keep: { type: "boolean", default: false },
  },
  strict: true,
});
const minutes = Number(values.minutes);
const connections = Number(values.connections);
const size = Number(values.size);
if (!(minutes > 0)) throw new Error(`--minutes wants a positive number, got ${values.minutes}`);
if (!Number.isInteger(connections) || connections < 2) throw new Error(`--connections wants an integer >= 2, got ${values.connections}`);
if (!Number.isInteger(size) || size < 100) throw new Error(`--size wants an integer >= 100, got ${values.size}`);
if (values.timings !== "fast" && values.timings !== "default") throw new Error(`--timings wants fast or default, got ${values.timings}`);
if (values.storage !== "shared" && values.storage !== "replicated") throw new Error(`--storage wants shared or replicated, got ${values.storage}`);
const TIMINGS = values.timings === "fast" ? FAST_TIMINGS : DEFAULT_TIMINGS;
const IDS = ["a", "b"] as const;

function log(text: string): void {
  process.stderr.write(`${new Date().toISOString().slice(11, 19)} ${text}\n`);
}

async function main(): Promise<void> {
  const machine = machineInfo();
  const describe = `${machine.nproc} CPUs, ${machine.cpuModel}, Linux ${machine.kernel}, Node ${machine.node}`;
  log(`machine: ${describe}`);
  const procs = trackProcesses();
  const root = mkdtempSync(join(tmpdir(), "tandem-soak-"));
  const sink = await startSink({ out: join(root, "sink.jsonl") });
  const cluster = await createCluster({
    dir: join(root, "cluster"), relayHost: sink.address,
    ...(values.storage === "replicated" ? { replicated: {} } : {}),
    cluster: timingsConfig(TIMINGS),
  });
  const watch = { polls: 0, notAlive: { a: 0, b: 0 } as Record<string, number>, statesSeen: new Set<string>(), maxDiskAgeMs: { a: 0, b: 0 } as Record<string, number>, pollErrors: 0 };
  const counters: Record<string, { takeovers: number; fences: number }> = {};
  const renewals: Record<string, unknown> = {};
  try {
    for (const id of IDS) await cluster.start(id);
    await cluster.waitFor("a and b alive, each delivering its own spool", async () => {
      for (const id of IDS) {
        const s = await cluster.status(id);
        if (s.peers[0].status.type !== "alive" || s.ownSpool !== "delivering" || s.secondaries.length > 0) return false;
        if (s.replication && s.replication.connection !== "up") return false;
      }
      return true;
    }, 60_000);
    const base: Record<string, { takeovers: number; fences: number }> = {};
    for (const id of IDS) base[id] = { ...(await cluster.status(id)).counters };

    const stop = new AbortController();
    setMaxListeners(connections + 10, stop.signal); // one listener per load connection
    const cpu0 = { m: machineCpuSeconds(), a: groupCpuSeconds(cluster.node("a")!.proc.pid), b: groupCpuSeconds(cluster.node("b")!.proc.pid) };
    const t0 = performance.now();
    const startedAt = Date.now();
    log(`soak: ${minutes} min, ${connections} connections (${connections / 2} to each node), ${size} bytes, ${values.storage} storage, ${values.timings} timings ${JSON.stringify(TIMINGS)}`);
    const loads = Promise.all(IDS.map((id) => runLoad({
      ...cluster.addresses.get(id)!.smtp, total: 100_000_000, concurrency: connections / 2, sizeBytes: size,
      from: "soak@example.org", to: (i) => `rcpt${i % 100}@example.net`, runId: `soak${id}`, stopSignal: stop.signal,
    })));
    const poller = (async () => {
      let lastReport = performance.now();
      while (!stop.signal.aborted) {
        for (const id of IDS) {
          try {
            const s = await cluster.status(id);
            const peer = s.peers[0].status.type as string;
            if (peer !== "alive") {
              watch.notAlive[id]++;
              watch.statesSeen.add(`${id} saw ${s.peers[0].id} ${peer}`);
            }
            watch.maxDiskAgeMs[id] = Math.max(watch.maxDiskAgeMs[id], s.diskHeartbeatAgeMs);
          } catch {
            watch.pollErrors++;
          }
        }
        watch.polls++;
        if (performance.now() - lastReport > 60_000) {
          lastReport = performance.now();
          log(`soak: ${Math.round((performance.now() - t0) / 1000)} s, ${sink.count()} delivered, peer not alive in ${watch.notAlive.a + watch.notAlive.b} polls, max disk heartbeat age a ${watch.maxDiskAgeMs.a} ms / b ${watch.maxDiskAgeMs.b} ms`);
        }
        await new Promise((r) => setTimeout(r, 250));
      }
    })();
    await new Promise((r) => setTimeout(r, minutes * 60_000));
    stop.abort();
    const results = await loads;
    await poller;
    const loadSeconds = (performance.now() - t0) / 1000;
    const accepted = results.reduce((s, l) => s + l.accepted.size, 0);
    log(`soak: load stopped after ${loadSeconds.toFixed(0)} s, ${accepted} accepted; waiting for the sink to have them all`);
    await sink.waitForCount(accepted, 300_000).catch(() => undefined);
    const wallSeconds = (performance.now() - t0) / 1000;
    const cpu1 = { m: machineCpuSeconds(), a: groupCpuSeconds(cluster.node("a")!.proc.pid), b: groupCpuSeconds(cluster.node("b")!.proc.pid) };
    for (const id of IDS) {
      const c = (await cluster.status(id)).counters;
      counters[id] = { takeovers: c.takeovers - base[id].takeovers, fences: c.fences - base[id].fences };
    }
    for (const id of IDS) renewals[id] = (await cluster.status(id)).renewals;
    // from the start of the load (a node started after its peer may be taken for dead for a moment at start-up: before)
    const events = cluster.trackingEvents().filter((e) => Date.parse(e.t) >= startedAt);
    const takeoverEvents = events.filter((e) => e.event === "takeover").length;
    const fenceEvents = events.filter((e) => e.event === "fenced").length;
    const counts = sink.countsByTestId();
    let lost = 0;
    let duplicates = 0;
    for (const l of results) for (const id of l.accepted) if (!counts.has(id)) lost++;
    for (const [, n] of counts) duplicates += n - 1;
    const falseTakeovers = counters.a.takeovers + counters.b.takeovers;
    const fences = counters.a.fences + counters.b.fences;
    const pct = (s: number) => Math.round((s / loadSeconds) * 100);
    const cpu = { a: pct(cpu1.a - cpu0.a), b: pct(cpu1.b - cpu0.b), machineBusy: pct(cpu1.m.busy - cpu0.m.busy), machineIdle: pct(cpu1.m.idle - cpu0.m.idle) };
    const errors: Record<string, number> = {};
    for (const l of results) for (const [k, v] of Object.entries(l.errors)) errors[k] = (errors[k] ?? 0) + v;

    console.log(`\nsoak (${values.storage} storage, ${values.timings} timings: heartbeat ${TIMINGS.heartbeat_interval} ms, fence_after ${TIMINGS.fence_after} ms, dead_after ${TIMINGS.dead_after} ms); machine: ${describe}`);
    console.log(`${minutes} min of load on both nodes, ${connections} connections, ${size} bytes: ${accepted} accepted (${Math.round(accepted / loadSeconds)} msg/s), ${sink.count()} at the sink after ${wallSeconds.toFixed(0)} s; lost ${lost}, duplicates ${duplicates}${Object.keys(errors).length ? `; client errors ${JSON.stringify(errors)}` : ""}`);
    console.log(`CPU as % of one core over the load: a ${cpu.a}%, b ${cpu.b}%, machine busy ${cpu.machineBusy}% idle ${cpu.machineIdle}% (of ${machine.nproc * 100}%)`);
    console.log(`false takeovers ${falseTakeovers} (tracking log: ${takeoverEvents}), fences ${fences} (tracking log: ${fenceEvents})`);
    console.log(`peer seen not alive in ${watch.notAlive.a + watch.notAlive.b} of ${watch.polls * 2} polls${watch.statesSeen.size ? ` (${[...watch.statesSeen].join(", ")})` : ""}; largest disk heartbeat age seen: a ${watch.maxDiskAgeMs.a} ms, b ${watch.maxDiskAgeMs.b} ms (fence_after ${TIMINGS.fence_after} ms)${watch.pollErrors ? `; ${watch.pollErrors} status polls failed` : ""}`);
    for (const id of IDS) console.log(`${id}'s disk heartbeat renewals: ${JSON.stringify(renewals[id])}`);
    console.log(JSON.stringify({ bench: "soak", renewals, storage: values.storage, timings: { profile: values.timings, ...TIMINGS }, minutes, connections, size, machine, accepted, delivered: sink.count(), acceptedPerSec: Math.round(accepted / loadSeconds), lost, duplicates, errors, falseTakeovers, fences, takeoverEvents, fenceEvents, notAlivePolls: watch.notAlive, polls: watch.polls, statesSeen: [...watch.statesSeen], maxDiskHeartbeatAgeMs: watch.maxDiskAgeMs, cpu }));
    if (falseTakeovers + fences + takeoverEvents + fenceEvents + lost > 0) process.exitCode = 1;
  } finally {
    await cluster.stopAll();
    await sink.stop();
    await procs.stopAll();
    if (values.keep) log(`kept ${root}`);
    else rmSync(root, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench/soak: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
  process.exit(1);
});
