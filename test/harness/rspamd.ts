/*
 * rspamd.ts - a private Rspamd (Debian `rspamd`, 3.4) for content-filter tests: Debian's
 * configuration (/etc/rspamd) with a local.d of our own in a temp folder, the main process in
 * the foreground (`rspamd -f`) as our child in its own process group, the normal worker (the
 * /checkv2 scanner) on a free loopback port.
 *
 * Exports:
 *   RSPAMD_AVAILABLE: string | undefined   why Rspamd cannot run here (undefined: it can)
 *   startRspamd({ dir, dns }): Promise<RspamdInstance>
 *   RspamdInstance { proc, url ("http://127.0.0.1:PORT"), stop() }
 *
 * What makes it start here, with no DNS beyond loopback and in seconds:
 *  - `dns.nameserver` is the test's own DNS server (test/harness/dns.ts: NXDOMAIN for every name
 *    it does not serve), so RBL and SPF lookups are answered at once instead of timing out
 *    against the system's resolver;
 *  - `url_tld` is a five-line public-suffix list: with Debian's full list (9 628 suffixes) the
 *    main process compiled it for 30-40 s before starting any worker;
 *  - `enable_test_patterns`: the GTUBE variants of each action (X… reject, Y… add header,
 *    Z… rewrite subject, A… no action) work, so a test can ask for a verdict;
 *  - the controller on a free port, the proxy and fuzzy workers off; logs to the console.
 * Ready when GET /ping on the normal worker answers "pong" (polled).
 * What can go wrong: rspamd not installed (RSPAMD_AVAILABLE); a port taken between choosing and
 * binding it (startRspamd rejects with the output); `-u root -g root -i` is needed as root
 * (Rspamd refuses to run its workers as root otherwise).
 */
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { freePort } from "./ports.ts";
import { spawnProcess, type Proc } from "./procs.ts";

const RSPAMD = "/usr/bin/rspamd";
export const RSPAMD_AVAILABLE: string | undefined = existsSync(RSPAMD) && existsSync("/etc/rspamd/rspamd.conf")
  ? undefined
  : "rspamd is not installed (apt-get install rspamd)";

export interface RspamdInstance {
  proc: Proc;
  /** The normal worker, for content_filter.rspamd_url. */
  url: string;
  stop(): Promise<void>;
}

export async function startRspamd(opts: { dir: string; dns: string; readyTimeoutMs?: number }): Promise<RspamdInstance> {
  const local = join(opts.dir, "local.d");
  for (const d of [local, join(opts.dir, "db"), join(opts.dir, "run")]) mkdirSync(d, { recursive: true });
  const [normal, controller] = [await freePort(), await freePort()];
  const tld = join(opts.dir, "tld.dat");
  writeFileSync(tld, "test\nlocal\ncom\norg\nnet\n");
  writeFileSync(join(local, "options.inc"), [
    `dns { nameserver = ["${opts.dns}"]; timeout = 1s; retransmits = 1; }`,
    `pidfile = "${join(opts.dir, "run", "rspamd.pid")}";`,
    `url_tld = "${tld}";`,
    "enable_test_patterns = true;",
    "",
  ].join("\n"));
  writeFileSync(join(local, "logging.inc"), 'type = "console";\nlevel = "info";\n');
  writeFileSync(join(local, "worker-normal.inc"), `bind_socket = "127.0.0.1:${normal}";\ncount = 1;\n`);
  writeFileSync(join(local, "worker-controller.inc"), `bind_socket = "127.0.0.1:${controller}";\ncount = 1;\n`);
  writeFileSync(join(local, "worker-proxy.inc"), "enabled = false;\n");
  writeFileSync(join(local, "worker-fuzzy.inc"), "enabled = false;\n");
  const asRoot = process.getuid?.() === 0 ? ["-i", "-u", "root", "-g", "root"] : [];
  const proc = await spawnProcess(RSPAMD, [
    "-f", ...asRoot, "-c", "/etc/rspamd/rspamd.conf",
    "--var", `LOCAL_CONFDIR=${opts.dir}`, "--var", `DBDIR=${join(opts.dir, "db")}`,
    "--var", `RUNDIR=${join(opts.dir, "run")}`, "--var", `LOGDIR=${opts.dir}`,
  ], { name: "rspamd", logFile: join(opts.dir, "rspamd.log") });
  const url = `http://127.0.0.1:${normal}`;
  const deadline = Date.now() + (opts.readyTimeoutMs ?? 60_000);
  for (;;) {
    const pong = await fetch(`${url}/ping`, { signal: AbortSignal.timeout(1000) }).then((r) => r.text(), () => "");
    if (pong.trim() === "pong") break;
    const exited = await Promise.race([proc.exited.then(() => true), sleep(100).then(() => false)]);
    if (exited || Date.now() > deadline) {
      await proc.stop();
      throw new Error(`rspamd did not answer /ping on ${url}${exited ? " (it exited)" : ""}; output:\n${proc.output()}`);
    }
  }
  return { proc, url, stop: async () => { await proc.stop(); } };
}
