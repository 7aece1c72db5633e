/*
 * postfix.ts - a throw-away Postfix instance as a relay, to compare Tandem with on this machine:
 * the interoperability tests' private instance (test/harness/postfix.ts) with one smtpd
 * listener, everything relayed to relayHost = [host]:port (the sink), and a destination
 * concurrency of 20 (as Tandem's queue.destination_concurrency). Its master runs in the
 * foreground as our child, so it and all its daemons are one process group that stop() ends;
 * its CPU is counted with groupCpuSeconds(proc.pid).
 *
 * What can go wrong: as for the harness (not root, the package missing, a folder the postfix
 * user cannot search, `postfix check` failing, the port taken before master binds it: run
 * again); postfixAvailability() also wants Postfix's smtp-source on PATH.
 */
import { execFileSync } from "node:child_process";
import { setTimeout as sleep } from "node:timers/promises";
import { formatHostPort, type HostPort } from "../test/harness/ports.ts";
import type { Proc } from "../test/harness/procs.ts";
import { POSTFIX_AVAILABLE, startPostfix } from "../test/harness/postfix.ts";

export interface PostfixRelay {
  proc: Proc;
  smtp: HostPort;
  stop(): Promise<void>;
}

/**
 * Postfix's smtp-source arguments: n messages of `bytes` over `sessions` parallel sessions to
 * target, each on a connection of its own unless `reuse` (-d: many messages per connection).
 */
export function smtpSourceArgs(target: HostPort, n: number, c: { sessions: number; bytes: number; reuse: boolean }): string[] {
  return [...(c.reuse ? ["-d"] : []), "-s", String(c.sessions), "-m", String(n), "-l", String(c.bytes), "-f", "a@example.org", "-t", "b@example.net", formatHostPort(target)];
}

/** Whether a Postfix relay can be built here, and if not why. */
export function postfixAvailability(): { ok: true } | { ok: false; reason: string } {
  if (POSTFIX_AVAILABLE) return { ok: false, reason: POSTFIX_AVAILABLE };
  try {
    execFileSync("sh", ["-c", "command -v smtp-source"], { stdio: "ignore" });
  } catch {
    return { ok: false, reason: "smtp-source is not on PATH (apt-get install postfix)" };
  }
  return { ok: true };
}

/** Builds and starts the instance (see header). */
export async function startPostfixRelay(opts: { dir: string; relayHost: HostPort }): Promise<PostfixRelay> {
  const pf = await startPostfix({
    dir: opts.dir,
    hostname: "pfbench.localdomain",
    listeners: { smtp: [] },
    relayHost: opts.relayHost,
    mainCf: ["default_destination_concurrency_limit=20", "smtp_destination_concurrency_limit=20"],
  });
  await sleep(1000); // let qmgr and pickup come up, as after `postfix start`
  return { proc: pf.proc, smtp: { host: "127.0.0.1", port: pf.listeners.smtp }, stop: () => pf.stop() };
}
