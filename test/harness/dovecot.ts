/*
 * dovecot.ts - a private Dovecot 2.3 (Debian `dovecot-core`, `dovecot-lmtpd`) for
 * interoperability tests: config, runtime and log under a temp folder, the master in the
 * foreground (`dovecot -F`) as our child in its own process group, LMTP on a free loopback port.
 *
 * Exports:
 *   DOVECOT_AVAILABLE: string | undefined   why Dovecot cannot run here (undefined: it can)
 *   startDovecot(opts): Promise<DovecotInstance>
 *   DovecotInstance { proc, lmtpPort, mailRoot, fetch(user, mailLocation?), doveadm(command, user, args, mailLocation?), stop() }
 *
 * Every user exists (static userdb) and is the mail user `nobody:nogroup` (uid/gid 65534): the
 * mail is stored, and read, with that user's rights, never root's. Mail for user@domain goes to
 * the Maildir mailRoot/domain/user. fetch() runs `doveadm fetch` as that user (doveadm drops to
 * the userdb uid) over a Maildir — Dovecot's own, or another one given as mailLocation — and
 * returns the text of every message in INBOX.
 *
 * What can go wrong: not root or the packages missing (DOVECOT_AVAILABLE); a config Dovecot
 * refuses (startDovecot rejects with its log); the port taken between choosing and binding it.
 */
import { execFile } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { promisify } from "node:util";
import { freePort } from "./ports.ts";
import { spawnProcess, type Proc } from "./procs.ts";
import { greets } from "./wait.ts";

const run = promisify(execFile);
export const MAIL_UID = 65534;

export const DOVECOT_AVAILABLE: string | undefined = (() => {
  if (!existsSync("/usr/sbin/dovecot") || !existsSync("/usr/lib/dovecot/lmtp")) return "dovecot is not installed (apt-get install dovecot-core dovecot-lmtpd)";
  if (process.getuid?.() !== 0) return "Dovecot must be started as root";
  return undefined;
})();

export interface DovecotInstance {
  proc: Proc;
  lmtpPort: number;
  /** Dovecot's own Maildirs: mailRoot/<domain>/<user>. */
  mailRoot: string;
  /** `doveadm fetch text` of every INBOX message of user (as the mail user). */
  fetch(user: string, mailLocation?: string): Promise<string>;
  /** `doveadm COMMAND… -u user ARGS…` (as the mail user), e.g. (["flags", "add"], …); its stdout. */
  doveadm(command: string[], user: string, args: string[], mailLocation?: string): Promise<string>;
  stop(): Promise<void>;
}

async function waitForLmtp(port: number, proc: Proc, log: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const greeted = await greets(port, "127.0.0.1");
    if (greeted) return;
    const output = () => `${proc.output()}\n${existsSync(log) ? readFileSync(log, "utf8") : ""}`;
    if (proc.exitStatus) throw new Error(`dovecot exited (${JSON.stringify(proc.exitStatus)}):\n${output()}`);
    if (Date.now() > deadline) throw new Error(`dovecot LMTP did not greet on 127.0.0.1:${port} within ${timeoutMs} ms:\n${output()}`);
    await sleep(100);
  }
}

export async function startDovecot(opts: { dir: string }): Promise<DovecotInstance> {
  if (DOVECOT_AVAILABLE) throw new Error(DOVECOT_AVAILABLE);
  const { dir } = opts;
  const mailRoot = join(dir, "mail");
  for (const d of [dir, join(dir, "run"), join(dir, "state"), join(dir, "home"), mailRoot]) mkdirSync(d, { recursive: true, mode: 0o755 });
  chmodSync(dir, 0o755);
  chmodSync(mailRoot, 0o777); // the mail user creates its Maildirs here
  const lmtpPort = await freePort("127.0.0.1");
  const log = join(dir, "dovecot.log");
  const conf = join(dir, "dovecot.conf");
  writeFileSync(conf, `
base_dir = ${dir}/run
state_dir = ${dir}/state
log_path = ${log}
instance_name = tandem-test-${lmtpPort}
protocols = lmtp
listen = 127.0.0.1
ssl = no
default_login_user = dovenull
default_internal_user = dovecot
first_valid_uid = 100
mail_location = maildir:${mailRoot}/%d/%n
passdb {
  driver = static
  args = nopassword=y
}
userdb {
  driver = static
  args = uid=${MAIL_UID} gid=${MAIL_UID} home=${dir}/home/%d/%n
}
service lmtp {
  inet_listener lmtp {
    address = 127.0.0.1
    port = ${lmtpPort}
  }
}
service anvil {
  chroot =
}
service stats {
  unix_listener stats-writer {
    mode = 0666
  }
}
`);
  const proc = await spawnProcess("/usr/sbin/dovecot", ["-c", conf, "-F"], { name: "dovecot", logFile: join(dir, "dovecot.out") });
  try {
    await waitForLmtp(lmtpPort, proc, log, 15_000);
  } catch (err) {
    await proc.killHard();
    throw err;
  }
  const doveadm = async (command: string[], user: string, args: string[], mailLocation?: string): Promise<string> => {
    const all = ["-c", conf, ...(mailLocation ? ["-o", `mail_location=${mailLocation}`] : []), ...command, "-u", user, ...args];
    const { stdout } = await run("/usr/bin/doveadm", all, { encoding: "utf8", timeout: 20_000 });
    return stdout;
  };
  return {
    proc,
    lmtpPort,
    mailRoot,
    doveadm,
    fetch: (user, mailLocation) => doveadm(["fetch"], user, ["text", "mailbox", "INBOX", "all"], mailLocation),
    async stop() {
      await proc.stop(10_000);
    },
  };
}
