/*
 * node.ts - write a Tandem node config and start a node (`tandem start`, the compiled dist/ as
 * in production: build.ts) as a process.
 *
 * Exports:
 *   defaultNodeConfig(dir): ConfigTree        the minimal config for one node under dir
 *   writeNodeConfig(dir, overrides?, base?): string
 *       writes base (default defaultNodeConfig(dir); a YAML text or a tree) deep-merged with
 *       overrides to <dir>/tandem.yaml and returns its path. Give the relay host in overrides:
 *       writeNodeConfig(dir, { relay: { host: sink.address } }).
 *   startNode(opts): Promise<RunningNode>      spawns the CLI in its own process group and waits
 *       for the `"event":"ready"` log line; reports the real SMTP (and admin) address.
 *   RunningNode, StartNodeOptions, ConfigTree
 *
 * The config schema belongs to the node (src/config/schema.ts); the harness only writes what
 * the caller passes, so tests stay valid when the schema grows. Deep merge: objects merge,
 * arrays and scalars replace, undefined is ignored.
 * What can go wrong: a config the node rejects (startNode rejects with the node's output, which
 * names the bad key); a node that never logs ready within readyTimeoutMs (default 30 s).
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parse as parseYaml, stringify as stringifyYaml } from "yaml";
import { parseHostPort, type HostPort } from "./ports.ts";
import { spawnProcess, type Proc } from "./procs.ts";
import { cliArgs, REPO_ROOT } from "./build.ts";

export type ConfigTree = { [key: string]: unknown };

export interface StartNodeOptions {
  /** Path of the YAML config (see writeNodeConfig). */
  config: string;
  nodeId?: string;
  /** Default "127.0.0.1:0". */
  listen?: string;
  spool?: string;
  relayHost?: string;
  /** Admin API address, e.g. "127.0.0.1:0"; omitted = whatever the config says. */
  admin?: string;
  env?: NodeJS.ProcessEnv;
  /** Another build's dist/cli/main.js to run instead of this tree's (a benchmark's before/after). */
  distCli?: string;
  /** Tee the node's log lines to this file. */
  logFile?: string;
  readyTimeoutMs?: number;
  /** Run the node inside this network namespace (test/harness/sites.ts). */
  netns?: string;
}

export interface RunningNode {
  proc: Proc;
  smtp: HostPort;
  admin: HostPort | undefined;
  /** SIGTERM (graceful), SIGKILL after timeoutMs (default 15 s); resolves with the exit. */
  stop(timeoutMs?: number): ReturnType<Proc["stop"]>;
}

export { REPO_ROOT };

/** The minimal one-node config; relay.host must come from the caller (a sink, another node). */
export function defaultNodeConfig(dir: string): ConfigTree {
  return {
    node: { id: "a", hostname: "tandem.test" },
    smtp: { listen: "127.0.0.1:0" },
    spool: { root: join(dir, "spool") },
    relay: { networks: ["127.0.0.0/8", "::1/128"] },
    queue: { min_backoff: "1s", max_backoff: "5s" },
    tracking: { path: join(dir, "tracking.log") },
  };
}

function isTree(v: unknown): v is ConfigTree {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

/** Returns base with overrides merged in (objects merge, everything else replaces). */
function deepMerge(base: ConfigTree, overrides: ConfigTree): ConfigTree {
  const out: ConfigTree = { ...base };
  for (const [k, v] of Object.entries(overrides)) {
    if (v === undefined) continue;
    const cur = out[k];
    out[k] = isTree(cur) && isTree(v) ? deepMerge(cur, v) : v;
  }
  return out;
}

/** Writes <dir>/tandem.yaml (see header) and returns its path. */
export function writeNodeConfig(dir: string, overrides: ConfigTree = {}, base: ConfigTree | string = defaultNodeConfig(dir)): string {
  const baseTree: unknown = typeof base === "string" ? parseYaml(base) : base;
  if (!isTree(baseTree)) throw new Error("writeNodeConfig: base must be a YAML mapping");
  mkdirSync(dir, { recursive: true });
  const path = join(dir, "tandem.yaml");
  writeFileSync(path, stringifyYaml(deepMerge(baseTree, overrides)));
  return path;
}

/** Starts `tandem start` and waits for its ready line. */
export async function startNode(opts: StartNodeOptions): Promise<RunningNode> {
  const args = [...(opts.distCli ? [opts.distCli] : cliArgs()), "start", "--config", opts.config, "--listen", opts.listen ?? "127.0.0.1:0"];
  if (opts.nodeId) args.push("--node-id", opts.nodeId);
  if (opts.spool) args.push("--spool", opts.spool);
  if (opts.relayHost) args.push("--relay-host", opts.relayHost);
  if (opts.admin) args.push("--admin", opts.admin);
  const proc = await spawnProcess(process.execPath, args, {
    cwd: REPO_ROOT,
    env: opts.env,
    name: `tandem${opts.nodeId ? `-${opts.nodeId}` : ""}`,
    logFile: opts.logFile,
    netns: opts.netns,
    readyTimeoutMs: opts.readyTimeoutMs ?? 30_000,
    readyMatch: (j) => j.event === "ready" && typeof j.smtp === "string",
  });
  const ready = proc.readyLine?.json ?? {};
  return {
    proc,
    smtp: parseHostPort(String(ready.smtp)),
    admin: typeof ready.admin === "string" ? parseHostPort(ready.admin) : undefined,
    stop: (timeoutMs = 15_000) => proc.stop(timeoutMs),
  };
}
