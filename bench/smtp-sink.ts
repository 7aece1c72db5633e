/*
 * smtp-sink.ts - Postfix's smtp-sink as the benchmarks' next hop: it accepts every message and
 * counts them (-c), in a process group of its own (stop() ends it). Used by smtp-source.ts (one
 * sink per relay) and floor.ts.
 * What can go wrong: smtp-sink not on PATH (apt-get install postfix), the port taken between
 * freePort() and its bind (start() then fails: run again).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { freePort, formatHostPort, type HostPort } from "../test/harness/ports.ts";

/** Postfix's smtp-sink with its -c counter ("...mesg=N\r" per event), in its own process group. */
export class SmtpSink {
  count = 0;
  private waiters: Array<() => void> = [];
  private constructor(readonly child: ChildProcess, readonly address: HostPort) {
    let part = "";
    child.stdout!.setEncoding("latin1").on("data", (d: string) => {
      const text = part + d;
      const i = text.lastIndexOf("\r");
      if (i < 0) { part = text; return; }
      part = text.slice(i + 1);
      const m = /mesg=(\d+)[^\r]*$/.exec(text.slice(0, i));
      if (m) this.count = Number(m[1]);
      for (const w of this.waiters.splice(0)) w();
    });
  }
  static async start(): Promise<SmtpSink> {
    const address = { host: "127.0.0.1", port: await freePort("127.0.0.1") };
    const child = spawn("smtp-sink", ["-c", "-u", "nobody", formatHostPort(address), "1000"], { detached: true, stdio: ["ignore", "pipe", "inherit"] });
    const sink = new SmtpSink(child, address);
    await new Promise<void>((resolve, reject) => {
      child.once("error", reject);
      child.once("exit", (code) => reject(new Error(`smtp-sink exited (${code})`)));
      child.once("spawn", resolve);
    });
    // the sink is ready once it accepts: wait until a connection succeeds
    for (let i = 0; ; i++) {
      const ok = await new Promise<boolean>((resolve) => {
        import("node:net").then(({ connect }) => {
          const s = connect(address.port, address.host, () => { s.destroy(); resolve(true); });
          s.once("error", () => resolve(false));
        });
      });
      if (ok) break;
      if (i > 100) throw new Error("smtp-sink does not accept connections");
      await new Promise((r) => setTimeout(r, 50));
    }
    return sink;
  }
  /** Resolves when the counter reaches n; false after timeoutMs. */
  waitFor(n: number, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    return new Promise((resolve) => {
      // one waiter and one timer at a time: woken by the sink's output or the timer, whichever
      // comes first (a check that re-armed both each time doubled itself on every wake-up)
      let timer: NodeJS.Timeout | undefined;
      const check = (): void => {
        clearTimeout(timer);
        const i = this.waiters.indexOf(check);
        if (i >= 0) this.waiters.splice(i, 1);
        if (this.count >= n) return resolve(true);
        if (Date.now() > deadline) return resolve(false);
        this.waiters.push(check);
        timer = setTimeout(check, 200);
      };
      check();
    });
  }
  stop(): void {
    try { process.kill(-this.child.pid!, "SIGTERM"); } catch { /* gone */ }
  }
}
