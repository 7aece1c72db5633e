/**
 * config/load.ts — read the YAML config file, apply command-line overrides, validate.
 *
 * ConfigOverrides, LoadOptions.
 * An error names the line, the key, the value and what is allowed, e.g.
 *   line 12: queue.max_lifetime: "5 days" is not a duration; use a number with a unit ...
 * An empty file (or one of comments only) is refused: it is almost always the wrong file.
 * A cluster file shared by every node has no node.id (each node is started with --node-id):
 * `start` needs the id, while the tools (config check, cluster status, queue …) may load such a
 * file without one (options.anyNode): node.id is then the first of cluster.nodes and
 * `nodeIdGiven` false. In a cluster file, a node without smtp.listen (admin.listen) listens on
 * its own `smtp` (`admin`) address of cluster.nodes.
 * Relative paths in the file are taken relative to the file's folder.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import YAML, { LineCounter, isMap, isPair, isScalar, type Document } from 'yaml';
import { ZodError, type ZodIssue } from 'zod';
import { configSchema, type TandemConfig } from './schema.ts';
import { ConfigError } from '../util/errors.ts';

export interface ConfigOverrides {
  nodeId?: string;
  listen?: string;
  spool?: string;
  relayHost?: string;
  admin?: string;
}

export interface LoadOptions {
  /** A cluster file without node.id (and no --node-id) is fine: the caller does not act as one node. */
  anyNode?: boolean;
}

/** Whether node.id came from the file or the command line (false: a tool's stand-in, see header). */
const impliedNodeIds = new WeakSet<object>();
export function nodeIdGiven(config: TandemConfig): boolean {
  return !impliedNodeIds.has(config);
}

/** Load and validate. `file` may be undefined: the built-in defaults (plus overrides). */
export async function loadConfig(file?: string, overrides: ConfigOverrides = {}, options: LoadOptions = {}): Promise<TandemConfig> {
  let raw: any = {};
  let baseDir = process.cwd();
  let doc: Document | undefined;
  const lines = new LineCounter();
  if (file) {
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (e) {
      throw new ConfigError(file, `cannot read the config file: ${(e as Error).message}`);
    }
    doc = YAML.parseDocument(text, { prettyErrors: true, lineCounter: lines });
    if (doc.errors.length) {
      throw new ConfigError(file, `not valid YAML: ${doc.errors[0].message}`);
    }
    if (doc.contents === null) throw new ConfigError(file, 'the file is empty (nothing but comments or blank lines); is this the right file? See docs/configuration.md');
    raw = doc.toJS() ?? {};
    if (typeof raw !== 'object' || Array.isArray(raw)) throw new ConfigError(file, 'the top level must be a mapping of sections (node:, smtp:, ...)');
    baseDir = path.dirname(path.resolve(file));
  }
  const set = (section: string, key: string, value: unknown) => {
    raw[section] = { ...(raw[section] ?? {}), [key]: value };
  };
  if (overrides.nodeId) set('node', 'id', overrides.nodeId);
  if (overrides.listen) set('smtp', 'listen', overrides.listen);
  if (overrides.spool) set('spool', 'root', path.resolve(overrides.spool));
  if (overrides.relayHost) set('relay', 'host', overrides.relayHost);
  if (overrides.admin) set('admin', 'listen', overrides.admin);
  const implied = options.anyNode && raw.node?.id === undefined && Array.isArray(raw.cluster?.nodes) && typeof raw.cluster.nodes[0]?.id === 'string';
  if (implied) set('node', 'id', raw.cluster.nodes[0].id);

  let cfg: TandemConfig;
  try {
    cfg = configSchema.parse(raw);
  } catch (e) {
    if (e instanceof ZodError) throw new ConfigError(file ?? '(defaults)', formatConfigError(e, raw, doc && ((p, k) => (k === undefined ? lineOf(doc!, lines, p) : keyLine(doc!, lines, p, k) ?? lineOf(doc!, lines, p)))));
    throw e;
  }
  if (implied) impliedNodeIds.add(cfg);
  // a cluster file shared by every node: each listens on its own addresses of cluster.nodes
  // unless the file (or the command line) sets one listen address for all
  const member = cfg.cluster?.nodes.find((n) => n.id === cfg.node.id);
  if (member && !implied) {
    if (member.smtp && raw.smtp?.listen === undefined) cfg.smtp.listen = member.smtp;
    if (member.admin && raw.admin?.listen === undefined) cfg.admin.listen = member.admin;
  }
  cfg = resolvePaths(cfg, baseDir);
  if (cfg.cluster?.secret_file) cfg.cluster.secret = await readSecretFile(file ?? '(defaults)', 'cluster.secret_file', cfg.cluster.secret_file);
  for (const f of cfg.cluster?.accept_secret_files ?? []) cfg.cluster!.accept_secrets.push(await readSecretFile(file ?? '(defaults)', 'cluster.accept_secret_files', f));
  return cfg;
}

/** cluster.secret_file (or one of cluster.accept_secret_files): the secret is the file's first line; at least 16 characters. */
async function readSecretFile(configFile: string, key: string, secretFile: string): Promise<string> {
  let text: string;
  try {
    text = await readFile(secretFile, 'utf8');
  } catch (e) {
    throw new ConfigError(configFile, `${key}: cannot read ${secretFile}: ${(e as Error).message}`);
  }
  const secret = text.split(/\r?\n/)[0].trim();
  if (secret.length < 16) throw new ConfigError(configFile, `${key}: the secret in ${secretFile} is shorter than 16 characters`);
  return secret;
}

/** The line (1-based) of the value at `keyPath` in the file, or of its nearest parent there. */
function lineOf(doc: Document, lines: LineCounter, keyPath: (string | number)[]): number | undefined {
  for (let n = keyPath.length; n >= 0; n--) {
    const node = doc.getIn(keyPath.slice(0, n), true) as { range?: [number, number, number] } | undefined;
    if (node?.range) return lines.linePos(node.range[0]).line;
  }
  return undefined;
}

/** The line of an unknown key in the mapping at `mapPath`. */
function keyLine(doc: Document, lines: LineCounter, mapPath: (string | number)[], key: string): number | undefined {
  const map = mapPath.length ? doc.getIn(mapPath, true) : doc.contents;
  if (!isMap(map)) return undefined;
  const pair = map.items.find((p) => isPair(p) && isScalar(p.key) && p.key.value === key);
  const range = pair && isScalar(pair.key) ? pair.key.range : undefined;
  return range ? lines.linePos(range[0]).line : undefined;
}

/** zod's wording for a wrong type, in the words of the config file. */
function issueText(issue: ZodIssue): string {
  if (issue.code === 'invalid_type') {
    if (issue.received === 'undefined') return 'is required';
    const want: Record<string, string> = { string: 'text', number: 'a number', boolean: 'true or false', array: 'a list', object: 'a mapping (key: value lines)' };
    return `must be ${want[issue.expected] ?? issue.expected}, not ${want[issue.received] ?? issue.received}`;
  }
  return issue.message;
}

/** One line per problem: the line in the file (when known), key, given value, what is allowed. */
export function formatConfigError(err: ZodError, raw: unknown, locate?: (path: (string | number)[], unknownKey?: string) => number | undefined): string {
  const at = (line: number | undefined) => (line ? `line ${line}: ` : '');
  return err.issues.map((issue) => {
    const key = issue.path.join('.');
    let value: unknown = raw;
    for (const p of issue.path) value = (value as any)?.[p];
    const shown = value === undefined ? '' : ` (got ${JSON.stringify(value)})`;
    if (issue.code === 'unrecognized_keys') {
      return `${at(locate?.(issue.path, issue.keys[0]))}${key ? key + ': ' : ''}unknown key(s) ${issue.keys.map((k) => `"${k}"`).join(', ')}; see docs/configuration.md for the allowed keys`;
    }
    return `${at(locate?.(issue.path))}${key}: ${issueText(issue)}${shown}`;
  }).join('\n');
}

function resolvePaths(cfg: TandemConfig, baseDir: string): TandemConfig {
  const r = (p: string | undefined) => (p ? path.resolve(baseDir, p) : p);
  cfg.spool.root = r(cfg.spool.root)!;
  cfg.local.maildir_root = r(cfg.local.maildir_root)!;
  if (cfg.tracking.path) cfg.tracking.path = r(cfg.tracking.path)!;
  for (const k of Object.keys(cfg.tables) as (keyof typeof cfg.tables)[]) cfg.tables[k] = r(cfg.tables[k]);
  if (cfg.smtp.tls) cfg.smtp.tls = { cert: r(cfg.smtp.tls.cert)!, key: r(cfg.smtp.tls.key)! };
  cfg.smtp.auth_passwords = r(cfg.smtp.auth_passwords);
  if (cfg.cluster?.secret_file) cfg.cluster.secret_file = r(cfg.cluster.secret_file);
  if (cfg.cluster) cfg.cluster.accept_secret_files = cfg.cluster.accept_secret_files.map((f) => r(f)!);
  const rep = cfg.cluster?.replication;
  if (rep) {
    rep.tls = { ca: r(rep.tls.ca)!, cert: r(rep.tls.cert)!, key: r(rep.tls.key)! };
    rep.shadow_dir = r(rep.shadow_dir);
  }
  if (cfg.directory) cfg.directory.bind_password_file = r(cfg.directory.bind_password_file);
  return cfg;
}
