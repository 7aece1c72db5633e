/*
 * procs.ts - start and stop real processes for process-level tests and benchmarks.
 *
 * Every process is spawned as the leader of its own process group (`detached: true`), and every
 * signal goes to the whole group (`process.kill(-pid, sig)`), so children and grandchildren a
 * process forks (a shell's `sleep`, Postfix's daemons) are stopped with it.
 *
 * Exports:
 *   spawnProcess(cmd, args, opts): Promise<Proc>  resolves when `opts.readyMatch` accepts a JSON
 *       line of stdout/stderr (or at once without readyMatch); rejects with the captured output
 *       when the process exits or the ready timeout passes first (the group is killed then).
 *       `opts.netns` runs it inside a network namespace (test/harness/sites.ts).
 *   Proc        pid, lines (last ~200), waitForLine, kill, killHard, stop, exited, output()
 *   ProcLine    one captured line: stream, text, parsed JSON (if the line is a JSON object), time
 *   trackProcesses(): ProcessRegistry  collects every process spawned after the call;
 *       `stopAll()` (for `after()`) stops those still running.
 *
 * Safety net: when the current Node process exits (normally, or by SIGINT/SIGTERM/SIGHUP), the
 * groups still running are sent SIGKILL synchronously. XXX: a SIGKILL of the test runner itself
 * cannot be caught, so its groups would survive; Node offers no parent-death signal.
 *
 * What can go wrong: a ready line that never comes (the rejection carries the last lines of
 * output: read them); a process that ignores SIGTERM (stop() escalates to SIGKILL after
 * `timeoutMs`); ESRCH when a group is already gone is ignored on purpose.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { appendFileSync, existsSync } from "node:fs";
import { createInterface } from "node:readline";

/** How many output lines a Proc keeps in memory. */
const KEPT_LINES = 200;

export interface ProcLine {
  stream: "stdout" | "stderr";
  text: string;
  /** The line parsed as JSON when it is a JSON object, otherwise undefined. */
  json: Record<string, unknown> | undefined;
  /** Date.now() when the line was read. */
  t: number;
}

export interface ProcExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface SpawnOptions {
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Called for each JSON line (stdout or stderr); the first `true` makes the process ready. */
  readyMatch?: (json: Record<string, unknown>) => boolean;
  /** How long to wait for readyMatch (default 20 s). */
  readyTimeoutMs?: number;
  /** Append every output line to this file as well (for debugging a failed test). */
  logFile?: string;
  /** Short name used in error messages (default: the command's base name). */
  name?: string;
  /**
   * Run the command inside this network namespace (`ip netns exec NAME cmd args…`, which execs
   * the command: the pid and the process group stay the command's own). See sites.ts.
   */
  netns?: string;
}

export interface WaitForLineOptions {
  /** Also look at lines already captured (default true); false waits for new lines only. */
  includePast?: boolean;
}

export interface Proc {
  readonly pid: number;
  readonly name: string;
  /** The last ~200 lines of stdout and stderr, oldest first. */
  readonly lines: readonly ProcLine[];
  /** The line that matched readyMatch, if any. */
  readonly readyLine: ProcLine | undefined;
  /** Resolves once the group leader has exited (never rejects). */
  readonly exited: Promise<ProcExit>;
  /** The exit status once known, otherwise undefined. */
  readonly exitStatus: ProcExit | undefined;
  /** Resolves with the first line matching pred; rejects on timeout or exit. */
  waitForLine(pred: (line: ProcLine) => boolean, timeoutMs: number, opts?: WaitForLineOptions): Promise<ProcLine>;
  /** Sends a signal to the whole process group; false if the group no longer exists. */
  kill(signal?: NodeJS.Signals): boolean;
  /** SIGKILL to the group, then waits for the leader's exit. */
  killHard(): Promise<ProcExit>;
  /** SIGTERM to the group, waits up to timeoutMs (default 10 s), then SIGKILL; sweeps leftovers. */
  stop(timeoutMs?: number): Promise<ProcExit>;
  /** The captured lines as one text, for error messages. */
  output(): string;
}

export interface ProcessRegistry {
  /** Processes spawned since trackProcesses() that have not been seen to exit. */
  readonly live: readonly Proc[];
  /** Stops (SIGTERM, then SIGKILL) every tracked process still running. */
  stopAll(timeoutMs?: number): Promise<void>;
}

/** Every process group started by this module and not yet reaped. */
const liveProcs = new Set<ProcImpl>();
/** Registries currently collecting new processes. */
const registries = new Set<Set<Proc>>();
let exitHookInstalled = false;

/** Sends sig to group -pid; ESRCH (group gone) is not an error. */
function signalGroup(pid: number, sig: NodeJS.Signals): boolean {
  try {
    process.kill(-pid, sig);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ESRCH") return false;
    throw err;
  }
}

/** SIGKILLs every live group; synchronous so it can run in an 'exit' handler. */
function killAllGroupsSync(): void {
  for (const p of liveProcs) signalGroup(p.pid, "SIGKILL");
}

/** Installs the safety net once: kill groups on exit and on terminating signals. */
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on("exit", killAllGroupsSync);
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    const onSignal = (): void => {
      killAllGroupsSync();
      // Re-raise so the default action (or other handlers) still apply.
      process.removeListener(sig, onSignal);
      if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
    };
    process.on(sig, onSignal);
  }
}

/** Resolves after ms without keeping the event loop alive. */
function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

class ProcImpl implements Proc {
  readonly pid: number;
  readonly name: string;
  readonly lines: ProcLine[] = [];
  readyLine: ProcLine | undefined;
  readonly exited: Promise<ProcExit>;
  exitStatus: ProcExit | undefined;
  private readonly listeners = new Set<(line: ProcLine) => void>();
  private readonly logFile: string | undefined;
  private logFailed = false;

  constructor(
    private readonly child: ChildProcess,
    name: string,
    logFile: string | undefined,
  ) {
    if (child.pid === undefined) throw new Error(`spawn ${name}: no pid`);
    this.pid = child.pid;
    this.name = name;
    this.logFile = logFile;
    this.exited = new Promise((resolve) => {
      child.once("exit", (code, signal) => {
        this.exitStatus = { code, signal };
        liveProcs.delete(this);
        resolve(this.exitStatus);
      });
    });
    for (const stream of ["stdout", "stderr"] as const) {
      const src = child[stream];
      if (!src) continue;
      createInterface({ input: src, crlfDelay: Infinity }).on("line", (text) => this.onLine(stream, text));
    }
  }

  private onLine(stream: "stdout" | "stderr", text: string): void {
    let json: Record<string, unknown> | undefined;
    if (text.startsWith("{")) {
      try {
        const v: unknown = JSON.parse(text);
        if (v !== null && typeof v === "object" && !Array.isArray(v)) json = v as Record<string, unknown>;
      } catch {
        json = undefined;
      }
    }
    const line: ProcLine = { stream, text, json, t: Date.now() };
    this.lines.push(line);
    if (this.lines.length > KEPT_LINES) this.lines.splice(0, this.lines.length - KEPT_LINES);
    // synchronous, so the copy is complete whenever a test reads it. Lines still in the pipe can
    // come after the process exited and the test removed the folder: a copy that cannot be
    // written stops, and never throws out of this event handler (an uncaught exception)
    if (this.logFile && !this.logFailed) {
      try {
        appendFileSync(this.logFile, `${stream === "stderr" ? "E " : ""}${text}\n`);
      } catch {
        this.logFailed = true; // the folder is gone or full: the lines stay in this.lines
      }
    }
    for (const l of [...this.listeners]) l(line);
  }

  output(): string {
    return this.lines.map((l) => (l.stream === "stderr" ? `[stderr] ${l.text}` : l.text)).join("\n");
  }

  waitForLine(pred: (line: ProcLine) => boolean, timeoutMs: number, opts: WaitForLineOptions = {}): Promise<ProcLine> {
    if (opts.includePast ?? true) {
      const found = this.lines.find(pred);
      if (found) return Promise.resolve(found);
    }
    return new Promise((resolve, reject) => {
      const done = (): void => {
        clearTimeout(timer);
        this.listeners.delete(onLine);
      };
      const onLine = (line: ProcLine): void => {
        if (!pred(line)) return;
        done();
        resolve(line);
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`${this.name} (pid ${this.pid}): no matching line within ${timeoutMs} ms; last output:\n${this.output()}`));
      }, timeoutMs);
      this.listeners.add(onLine);
      void this.exited.then((st) => {
        if (!this.listeners.has(onLine)) return;
        // Give the pipes a moment: the matching line may still be in flight.
        setTimeout(() => {
          if (!this.listeners.has(onLine)) return;
          done();
          reject(new Error(`${this.name} (pid ${this.pid}) exited (code ${st.code}, signal ${st.signal}) before a matching line; last output:\n${this.output()}`));
        }, 50);
      });
    });
  }

  kill(signal: NodeJS.Signals = "SIGTERM"): boolean {
    return signalGroup(this.pid, signal);
  }

  async killHard(): Promise<ProcExit> {
    this.kill("SIGKILL");
    const st = await this.exited;
    this.closeLog();
    return st;
  }

  async stop(timeoutMs = 10_000): Promise<ProcExit> {
    if (!this.exitStatus) {
      this.kill("SIGTERM");
      const st = await Promise.race([this.exited, delay(timeoutMs).then(() => undefined)]);
      if (st === undefined) return this.killHard();
    }
    this.sweepLeftovers();
    this.closeLog();
    return this.exitStatus as ProcExit;
  }

  /**
   * SIGKILLs children the exited leader left in its group. Skipped when a process with the
   * leader's pid exists again: the number was reused and the group may not be ours.
   */
  private sweepLeftovers(): void {
    if (!existsSync(`/proc/${this.pid}`)) signalGroup(this.pid, "SIGKILL");
  }

  private closeLog(): void {
  }
}

/** Spawns cmd in its own process group and waits until it is ready (see header). */
export async function spawnProcess(cmd: string, args: readonly string[], opts: SpawnOptions = {}): Promise<Proc> {
  installExitHook();
  const name = opts.name ?? cmd.split("/").pop() ?? cmd;
  const [file, argv] = opts.netns ? ["ip", ["netns", "exec", opts.netns, cmd, ...args]] : [cmd, args];
  const child = spawn(file, argv, {
    cwd: opts.cwd,
    env: opts.env ?? process.env,
    detached: true,
    stdio: ["ignore", "pipe", "pipe"],
  });
  const spawned = await new Promise<boolean | Error>((resolve) => {
    child.once("spawn", () => resolve(true));
    child.once("error", (err) => resolve(err));
  });
  if (spawned instanceof Error) throw new Error(`cannot start ${cmd}: ${spawned.message}`);
  const proc = new ProcImpl(child, name, opts.logFile);
  liveProcs.add(proc);
  for (const r of registries) r.add(proc);
  const readyMatch = opts.readyMatch;
  if (!readyMatch) return proc;
  const timeoutMs = opts.readyTimeoutMs ?? 20_000;
  try {
    proc.readyLine = await proc.waitForLine((l) => l.json !== undefined && readyMatch(l.json), timeoutMs);
  } catch (err) {
    await proc.killHard();
    throw new Error(`${name} did not become ready: ${(err as Error).message}`);
  }
  return proc;
}

/** Starts collecting every process spawned from now on, so a test can stop them all. */
export function trackProcesses(): ProcessRegistry {
  const tracked = new Set<Proc>();
  registries.add(tracked);
  return {
    get live() {
      return [...tracked].filter((p) => p.exitStatus === undefined);
    },
    async stopAll(timeoutMs?: number) {
      const procs = [...tracked];
      tracked.clear();
      await Promise.all(procs.map((p) => p.stop(timeoutMs)));
    },
  };
}
