/*
 * procstat.ts - what the benchmark reads from /proc: CPU time and memory of a process group,
 * and a description of the machine.
 *
 * Exports:
 *   groupCpuSeconds(pgid): number   utime+stime of every live process in the group, plus the
 *                                   leader's reaped children (cutime+cstime)
 *   threadCpuSeconds(pid)           utime+stime of each live thread of one process, by thread id
 *                                   (the main thread's id is the pid)
 *   peakRssBytes(pid): number       VmHWM (peak resident set) of one process
 *   groupPssBytes(pgid): number     sum of Pss (proportional set size: shared pages split among
 *                                   their users) over the live members of a group, now - the fair
 *                                   figure for a multi-process server such as Postfix, where a
 *                                   sum of RSS would count the shared libraries once per daemon
 *   parseStat(pid, text)            the fields of a /proc/PID/stat text (pgrp, utime, stime,
 *                                   cutime, cstime), in ticksPerSecond() units
 *   machineInfo(): MachineInfo      nproc, CPU model, kernel, node version
 *   machineCpuSeconds(): MachineCpu  the whole machine's CPU time so far by kind (from the
 *                                   "cpu" line of /proc/stat): busy, idle, iowait - the
 *                                   difference of two readings says whether the CPUs or the
 *                                   disk were the limit during a run
 *
 * Linux only. What can go wrong: processes vanish while we read (skipped silently); a process
 * that already exited contributes nothing, so read before stopping it.
 */
import { execFileSync } from "node:child_process";
import { readFileSync, readdirSync, rmSync } from "node:fs";
import os from "node:os";

export interface MachineInfo {
  nproc: number;
  cpuModel: string;
  kernel: string;
  node: string;
}

let clockTicks: number | undefined;

/** Kernel clock ticks per second (getconf CLK_TCK, normally 100): the unit of /proc's CPU times. */
export function ticksPerSecond(): number {
  clockTicks ??= Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
  return clockTicks;
}

export interface StatFields {
  pid: number;
  pgrp: number;
  utime: number;
  stime: number;
  cutime: number;
  cstime: number;
}

/** Parses /proc/PID/stat; undefined if the process is gone. */
function readStat(pid: number): StatFields | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return undefined;
  }
  return parseStat(pid, text);
}

/** Parses the text of a /proc/PID/stat file (CPU times in ticksPerSecond() units). */
export function parseStat(pid: number, text: string): StatFields {
  // The command name may contain spaces and parentheses: fields start after the last ')'.
  const f = text.slice(text.lastIndexOf(")") + 2).split(" ");
  // f[0]=state f[1]=ppid f[2]=pgrp ... f[11]=utime f[12]=stime f[13]=cutime f[14]=cstime
  return { pid, pgrp: Number(f[2]), utime: Number(f[11]), stime: Number(f[12]), cutime: Number(f[13]), cstime: Number(f[14]) };
}

function allPids(): number[] {
  return readdirSync("/proc")
    .filter((n) => /^\d+$/.test(n))
    .map(Number);
}

/** CPU seconds used so far by process group pgid (see header). */
export function groupCpuSeconds(pgid: number): number {
  let ticks = 0;
  for (const pid of allPids()) {
    const st = readStat(pid);
    if (!st || st.pgrp !== pgid) continue;
    ticks += st.utime + st.stime;
    if (pid === pgid) ticks += st.cutime + st.cstime;
  }
  return ticks / ticksPerSecond();
}

/** CPU seconds of each live thread of pid (utime+stime of /proc/PID/task/TID/stat), by thread id. */
export function threadCpuSeconds(pid: number): Map<number, number> {
  const out = new Map<number, number>();
  for (const t of readdirSync(`/proc/${pid}/task`)) {
    try {
      const st = parseStat(Number(t), readFileSync(`/proc/${pid}/task/${t}/stat`, "utf8"));
      out.set(Number(t), (st.utime + st.stime) / ticksPerSecond());
    } catch {
      // the thread ended while we read
    }
  }
  return out;
}

/** VmHWM of pid in bytes (0 if unknown). */
export function peakRssBytes(pid: number): number {
  try {
    const m = /^VmHWM:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** Sum of Pss over the live members of group pgid (from smaps_rollup). */
export function groupPssBytes(pgid: number): number {
  let sum = 0;
  for (const pid of allPids()) {
    if (readStat(pid)?.pgrp !== pgid) continue;
    try {
      const m = /^Pss:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, "utf8"));
      if (m) sum += Number(m[1]) * 1024;
    } catch {
      // gone meanwhile
    }
  }
  return sum;
}

/** The machine the figures were measured on. */
export function machineInfo(): MachineInfo {
  let cpuModel = os.cpus()[0]?.model ?? "unknown";
  try {
    cpuModel = /^model name\s*:\s*(.+)$/m.exec(readFileSync("/proc/cpuinfo", "utf8"))?.[1] ?? cpuModel;
  } catch {
    // keep os.cpus()'s answer
  }
  return { nproc: os.availableParallelism(), cpuModel, kernel: os.release(), node: process.version };
}

export interface MachineCpu {
  /** user + nice + system + irq + softirq + steal, summed over all CPUs. */
  busy: number;
  idle: number;
  /** Idle while some process waited for I/O (fsync on a busy disk). */
  iowait: number;
}

/** CPU seconds of the whole machine so far (see header). */
export function machineCpuSeconds(): MachineCpu {
  const f = readFileSync("/proc/stat", "utf8").split("\n")[0].trim().split(/\s+/).slice(1).map(Number);
  const [user, nice, system, idle, iowait, irq, softirq, steal] = f;
  const t = ticksPerSecond();
  return { busy: (user + nice + system + irq + softirq + (steal ?? 0)) / t, idle: idle / t, iowait: iowait / t };
}

/**
 * Run a benchmark's main(): an error is printed and sets exit status 1; either way the processes
 * it started are stopped and its scratch folder is removed.
 */
export function runBenchmark(main: () => Promise<void>, cleanup: { procs: { stopAll(): Promise<void> }; dir: string }): void {
  main()
    .catch((err) => {
      console.error(err);
      process.exitCode = 1;
    })
    .finally(async () => {
      await cleanup.procs.stopAll();
      rmSync(cleanup.dir, { recursive: true, force: true });
    });
}
