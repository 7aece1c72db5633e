/*
 * postfix.ts - a throw-away Postfix instance as a relay, to compare Tandem with on this machine.
 *
 * Exports:
 *   postfixAvailability(): { ok: true } | { ok: false; reason: string }
 *   startPostfixRelay({ dir, relayHost }): Promise<PostfixRelay>
 *   PostfixRelay { proc, smtp, stop() }
 *
 * The instance lives in dir (config in dir/etc, queue in dir/spool, log in dir/maillog): main.cf
 * is written from scratch with `postconf -c`, smtpd listens on a free loopback port only, every
 * service runs without chroot, clients in 127.0.0.0/8 may relay, and everything goes to
 * relayhost = [host]:port (the sink). Local delivery is disabled. The master daemon runs in the
 * foreground (`master -d`) as our child, so it and all its daemons are one process group that
 * stop() ends; its CPU is counted with groupCpuSeconds(proc.pid).
 *
 * What can go wrong: dir inside a folder the postfix user cannot search (mkdtemp makes 0700
 * folders: chmod them 755; checked, with a message); not root (Postfix needs it to drop privileges to the postfix user); the
 * postfix user missing (the package is not installed: apt-get install postfix); `postfix check`
 * failing (the error carries its output); the port taken between freePort() and master binding
 * it (startPostfixRelay then fails: run again).
 */
import { execFileSync } from "node:child_process";
import { chmodSync, copyFileSync, existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { freePort, type HostPort } from "../test/harness/ports.ts";
import { spawnProcess, type Proc } from "../test/harness/procs.ts";
import { greets } from "../test/harness/wait.ts";

export interface PostfixRelay {
  proc: Proc;
  smtp: HostPort;
  stop(): Promise<void>;
}

const MASTER_CF_DIST = "/usr/share/postfix/master.cf.dist";

function onPath(cmd: string): boolean {
  try {
    execFileSync("sh", ["-c", `command -v ${cmd}`], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

/** Whether a Postfix relay can be built here, and if not why. */
export function postfixAvailability(): { ok: true } | { ok: false; reason: string } {
  for (const cmd of ["postfix", "postconf", "smtp-source"]) {
    if (!onPath(cmd)) return { ok: false, reason: `${cmd} is not on PATH (apt-get install postfix)` };
  }
  if (!existsSync(MASTER_CF_DIST)) return { ok: false, reason: `${MASTER_CF_DIST} is missing` };
  if (process.getuid?.() !== 0) return { ok: false, reason: "Postfix must be started as root" };
  return { ok: true };
}

/** Resolves once host:port accepts a TCP connection and sends a 220 greeting. */
async function waitForGreeting(hp: HostPort, proc: Proc, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const greeted = await greets(hp.port, hp.host);
    if (greeted) return;
    if (proc.exitStatus) throw new Error(`postfix master exited (${JSON.stringify(proc.exitStatus)}); output:\n${proc.output()}`);
    if (Date.now() > deadline) throw new Error(`postfix did not greet on ${hp.host}:${hp.port} within ${timeoutMs} ms`);
    await sleep(100);
  }
}

/** Builds and starts the instance (see header). */
export async function startPostfixRelay(opts: { dir: string; relayHost: HostPort }): Promise<PostfixRelay> {
  const { dir, relayHost } = opts;
  const etc = join(dir, "etc");
  const spool = join(dir, "spool");
  const data = join(dir, "data");
  for (const d of [etc, spool, data]) mkdirSync(d, { recursive: true, mode: 0o755 });
  chmodSync(dir, 0o755);
  execFileSync("chown", ["postfix:postfix", data]);
  try {
    execFileSync("runuser", ["-u", "postfix", "--", "test", "-w", data], { stdio: "ignore" });
  } catch {
    throw new Error(`the postfix user cannot write ${data}: every folder above it must be searchable by others (chmod o+x), e.g. a mkdtemp folder needs chmod 755`);
  }
  copyFileSync(MASTER_CF_DIST, join(etc, "master.cf"));
  writeFileSync(join(etc, "main.cf"), "");
  const port = await freePort("127.0.0.1");
  const listen = `127.0.0.1:${port}`;
  const postconf = (...args: string[]): void => {
    execFileSync("postconf", ["-c", etc, ...args], { stdio: ["ignore", "ignore", "pipe"] });
  };
  postconf(
    "-e",
    "compatibility_level=3.6",
    `queue_directory=${spool}`,
    `data_directory=${data}`,
    "myhostname=pfbench.localdomain",
    "mydomain=localdomain",
    "myorigin=$myhostname",
    "inet_interfaces=127.0.0.1",
    "inet_protocols=ipv4",
    "mydestination=",
    "local_recipient_maps=",
    "relay_domains=",
    "alias_maps=",
    "alias_database=",
    "local_transport=error:local delivery disabled",
    "mynetworks=127.0.0.0/8",
    `relayhost=[${relayHost.host}]:${relayHost.port}`,
    "smtpd_relay_restrictions=permit_mynetworks, reject_unauth_destination",
    "default_destination_concurrency_limit=20",
    "smtp_destination_concurrency_limit=20",
    `maillog_file=${join(dir, "maillog")}`,
    `maillog_file_prefixes=${dir}`,
    "biff=no",
  );
  postconf("-M#", "smtp/inet");
  postconf("-Me", `${listen}/inet=${listen} inet n - n - - smtpd`);
  postconf("-F", "*/*/chroot = n");
  try {
    execFileSync("postfix", ["-c", etc, "check"], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  } catch (err) {
    const e = err as { stderr?: string; stdout?: string; message: string };
    throw new Error(`postfix check failed for ${etc}: ${e.stderr ?? ""}${e.stdout ?? ""}${e.message}`);
  }
  const daemonDir = execFileSync("postconf", ["-c", etc, "-h", "daemon_directory"], { encoding: "utf8" }).trim();
  const proc = await spawnProcess(join(daemonDir, "master"), ["-c", etc, "-d"], { name: "postfix-master", logFile: join(dir, "master.out") });
  const smtp = { host: "127.0.0.1", port };
  try {
    await waitForGreeting(smtp, proc, 15_000);
  } catch (err) {
    await proc.killHard();
    throw err;
  }
  await sleep(1000); // let qmgr and pickup come up, as after `postfix start`
  return {
    proc,
    smtp,
    async stop() {
      await proc.stop(10_000);
    },
  };
}
