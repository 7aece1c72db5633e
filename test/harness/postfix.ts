/*
 * postfix.ts - a private Postfix instance for interoperability tests: Debian's `postfix`
 * package, run from a temp folder (config in dir/etc, queue in dir/spool, log in dir/maillog),
 * no chroot, its master in the foreground (`master -d`) as our child in its own process group.
 *
 * Exports:
 *   POSTFIX_AVAILABLE: string | undefined   why Postfix cannot run here (undefined: it can)
 *   startPostfix(opts): Promise<PostfixInstance>
 *   PostfixInstance { proc, listeners (name → port), maildir, maillog(), stop() }
 *
 * The instance: smtpd on loopback listeners given by name (each free port chosen here), each
 * with its own `-o` overrides (e.g. a content_filter sending everything received there to
 * another MTA, which makes Postfix a client); SMTPUTF8 on; virtual(8) delivery of the domains
 * in `virtualDomains` into one Maildir (dir/vmail/box/, owned by nobody:nogroup); everything
 * else to `relayHost`; `mainCf` adds main.cf settings.
 *
 * What can go wrong: not root, or the package missing (POSTFIX_AVAILABLE says which; tests skip
 * with that reason); dir inside a folder the postfix user cannot search (checked, with a
 * message); `postfix check` failing (the error carries its output); a port taken
 * between choosing it and master binding it (the greeting wait fails with master's output).
 */
import { execFileSync } from "node:child_process";
import { chmodSync, copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { freePort, type HostPort } from "./ports.ts";
import { spawnProcess, type Proc } from "./procs.ts";
import { greets } from "./wait.ts";

const MASTER_CF_DIST = "/usr/share/postfix/master.cf.dist";
/** nobody:nogroup on Debian: the owner of the virtual Maildir. */
const VMAIL_ID = 65534;

export const POSTFIX_AVAILABLE: string | undefined = (() => {
  if (!existsSync("/usr/sbin/postconf") || !existsSync(MASTER_CF_DIST)) return "postfix is not installed (apt-get install postfix)";
  if (process.getuid?.() !== 0) return "Postfix must be started as root";
  return undefined;
})();

export interface PostfixOptions {
  /** A folder every user can search (chmod 755 is applied to it). */
  dir: string;
  hostname: string;
  /** Listener name → smtpd `-o` overrides. */
  listeners: Record<string, string[]>;
  relayHost?: HostPort;
  /** Domains delivered by virtual(8) into dir/vmail/box/ (Maildir). */
  virtualDomains?: string[];
  mainCf?: string[];
}

export interface PostfixInstance {
  proc: Proc;
  listeners: Record<string, number>;
  /** The virtual Maildir (dir/vmail/box). */
  maildir: string;
  maillog(): string;
  stop(): Promise<void>;
}

async function waitForGreeting(port: number, proc: Proc, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const greeted = await greets(port, "127.0.0.1");
    if (greeted) return;
    if (proc.exitStatus) throw new Error(`postfix master exited (${JSON.stringify(proc.exitStatus)}); output:\n${proc.output()}`);
    if (Date.now() > deadline) throw new Error(`postfix did not greet on 127.0.0.1:${port} within ${timeoutMs} ms`);
    await sleep(100);
  }
}

export async function startPostfix(opts: PostfixOptions): Promise<PostfixInstance> {
  if (POSTFIX_AVAILABLE) throw new Error(POSTFIX_AVAILABLE);
  const { dir } = opts;
  const etc = join(dir, "etc");
  const spool = join(dir, "spool");
  const data = join(dir, "data");
  const vmail = join(dir, "vmail");
  for (const d of [etc, spool, data, vmail]) mkdirSync(d, { recursive: true, mode: 0o755 });
  chmodSync(dir, 0o755);
  execFileSync("chown", ["postfix:postfix", data]);
  execFileSync("chown", [`${VMAIL_ID}:${VMAIL_ID}`, vmail]);
  try {
    execFileSync("runuser", ["-u", "postfix", "--", "test", "-w", data], { stdio: "ignore" });
  } catch {
    throw new Error(`the postfix user cannot write ${data}: every folder above it must be searchable by others (chmod o+x), e.g. a mkdtemp folder needs chmod 755`);
  }
  copyFileSync(MASTER_CF_DIST, join(etc, "master.cf"));
  writeFileSync(join(etc, "main.cf"), "");
  const postconf = (...args: string[]): void => {
    execFileSync("postconf", ["-c", etc, ...args], { stdio: ["ignore", "ignore", "pipe"] });
  };
  const maillog = join(dir, "maillog");
  postconf(
    "-e",
    "compatibility_level=3.6",
    `queue_directory=${spool}`,
    `data_directory=${data}`,
    `myhostname=${opts.hostname}`,
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
    "smtpd_relay_restrictions=permit_mynetworks, reject_unauth_destination",
    "smtputf8_enable=yes",
    "smtp_tls_security_level=none",
    ...(opts.relayHost ? [`relayhost=[${opts.relayHost.host}]:${opts.relayHost.port}`] : []),
    ...(opts.virtualDomains?.length
      ? [
        `virtual_mailbox_domains=${opts.virtualDomains.join(" ")}`,
        `virtual_mailbox_base=${vmail}`,
        "virtual_mailbox_maps=static:box/",
        `virtual_uid_maps=static:${VMAIL_ID}`,
        `virtual_gid_maps=static:${VMAIL_ID}`,
      ]
      : []),
    `maillog_file=${maillog}`,
    `maillog_file_prefixes=${dir}`,
    "biff=no",
    ...(opts.mainCf ?? []),
  );
  postconf("-M#", "smtp/inet");
  const listeners: Record<string, number> = {};
  for (const [name, overrides] of Object.entries(opts.listeners)) {
    const port = await freePort("127.0.0.1");
    listeners[name] = port;
    postconf("-Me", `127.0.0.1:${port}/inet=127.0.0.1:${port} inet n - n - - smtpd ${overrides.map((o) => `-o ${o}`).join(" ")}`);
  }
  postconf("-F", "*/*/chroot = n");
  try {
    execFileSync("postfix", ["-c", etc, "check"], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  } catch (err) {
    const e = err as { stderr?: string; stdout?: string; message: string };
    throw new Error(`postfix check failed for ${etc}: ${e.stderr ?? ""}${e.stdout ?? ""}${e.message}`);
  }
  const daemonDir = execFileSync("postconf", ["-c", etc, "-h", "daemon_directory"], { encoding: "utf8" }).trim();
  const proc = await spawnProcess(join(daemonDir, "master"), ["-c", etc, "-d"], { name: "postfix-master", logFile: join(dir, "master.out") });
  try {
    for (const port of Object.values(listeners)) await waitForGreeting(port, proc, 15_000);
  } catch (err) {
    await proc.killHard();
    throw err;
  }
  return {
    proc,
    listeners,
    maildir: join(vmail, "box"),
    maillog: () => (existsSync(maillog) ? readFileSync(maillog, "utf8") : ""),
    async stop() {
      await proc.stop(10_000);
    },
  };
}
