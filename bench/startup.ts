/*
 * startup.ts - what the compiled build saves at start: the same code run from dist/ (as
 * bin/tandem and production do) and from the TypeScript sources through the tsx loader (as
 * before the build existed), alternating in one run.
 *
 *   npm run build && node --import tsx bench/startup.ts [--rounds R=5]
 *
 * Figures (median and range over R rounds, each of a fresh process):
 *   node start -> ready   `tandem start` on an empty spool: spawn until its "ready" log line
 *                         (SMTP listening, queue manager running)
 *   secondary load        a fork of cluster/secondary-main with its IPC channel closed at once:
 *                         fork until it exits, i.e. node's start plus loading every module the
 *                         secondary needs (what a takeover waits for before the secondary can
 *                         even read its start message; the rest of its start is spool work that
 *                         does not depend on the build)
 * The machine's speed drifts on shared VMs: compare the two columns of one run only.
 */
import { fork } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { writeNodeConfig } from "../test/harness/node.ts";
import { cliArgs, REPO_ROOT } from "../test/harness/build.ts";
import { spawnProcess, trackProcesses } from "../test/harness/procs.ts";
import { startSink } from "../test/harness/sink.ts";
import { machineInfo } from "./procstat.ts";
import { median } from "./stats.ts";

type Mode = "dist" | "tsx";
const CLI: Record<Mode, string[]> = { dist: cliArgs(), tsx: ["--import", "tsx", join(REPO_ROOT, "src/cli/main.ts")] };
const SECONDARY: Record<Mode, { main: string; execArgv: string[] }> = {
  dist: { main: join(REPO_ROOT, "dist/cluster/secondary-main.js"), execArgv: [] },
  tsx: { main: join(REPO_ROOT, "src/cluster/secondary-main.ts"), execArgv: ["--import", "tsx"] },
};

async function nodeReadyMs(mode: Mode, dir: string, config: string): Promise<number> {
  const t0 = Date.now(); // the ready line's time is a Date.now()
  const proc = await spawnProcess(process.execPath, [...CLI[mode], "start", "--config", config, "--listen", "127.0.0.1:0"], {
    cwd: REPO_ROOT, name: `tandem-${mode}`, logFile: join(dir, `${mode}.log`),
    readyMatch: (j) => j.event === "ready" && typeof j.smtp === "string", readyTimeoutMs: 60_000,
  });
  const ms = proc.readyLine!.t - t0;
  await proc.stop(15_000);
  return ms;
}

function secondaryLoadMs(mode: Mode): Promise<number> {
  const t0 = performance.now();
  const { main, execArgv } = SECONDARY[mode];
  const child = fork(main, [], { execArgv, stdio: ["ignore", "ignore", "inherit", "ipc"] });
  child.disconnect();
  return new Promise((resolve, reject) => {
    child.once("error", reject);
    child.once("exit", (code) => (code === 0 ? resolve(performance.now() - t0) : reject(new Error(`secondary-main (${mode}) exited ${code}`))));
  });
}

const stats = (v: number[]): string => {
  const s = [...v].sort((a, b) => a - b);
  return `${Math.round(median(s))} [${Math.round(s[0])}..${Math.round(s[s.length - 1])}]`;
};

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { rounds: { type: "string", default: "5" } }, strict: true });
  const rounds = Number(values.rounds);
  const machine = machineInfo();
  const procs = trackProcesses();
  const dir = mkdtempSync(join(tmpdir(), "tandem-startup-"));
  const sink = await startSink({ out: join(dir, "sink.jsonl") });
  const ready: Record<Mode, number[]> = { dist: [], tsx: [] };
  const load: Record<Mode, number[]> = { dist: [], tsx: [] };
  try {
    for (let r = 0; r <= rounds; r++) {
      for (const mode of ["dist", "tsx"] as Mode[]) {
        const config = writeNodeConfig(join(dir, `${mode}-${r}`), { relay: { host: sink.address } });
        const a = await nodeReadyMs(mode, dir, config);
        const b = await secondaryLoadMs(mode);
        if (r === 0) continue; // warm-up: page cache, tsx's transform cache
        ready[mode].push(a);
        load[mode].push(b);
        process.stderr.write(`round ${r} ${mode}: node ready ${Math.round(a)} ms, secondary load ${Math.round(b)} ms\n`);
      }
    }
  } finally {
    await sink.stop();
    await procs.stopAll();
    rmSync(dir, { recursive: true, force: true });
  }
  console.log(`\nstart-up, ${rounds} rounds, median [min..max] ms`);
  console.log(`machine: ${machine.nproc} CPUs, ${machine.cpuModel}, Linux ${machine.kernel}, Node ${machine.node}\n`);
  console.log(`${"".padEnd(22)}${"dist (compiled)".padEnd(22)}tsx (sources)`);
  console.log(`${"node start -> ready".padEnd(22)}${stats(ready.dist).padEnd(22)}${stats(ready.tsx)}`);
  console.log(`${"secondary load".padEnd(22)}${stats(load.dist).padEnd(22)}${stats(load.tsx)}`);
  console.log(JSON.stringify({ bench: "startup", rounds, machine, ready, load }));
}

main().catch((err: unknown) => {
  process.stderr.write(`bench/startup: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
