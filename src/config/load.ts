/**
 * config/load.ts — read the YAML config file, apply command-line overrides, validate.
 *
 * An error names the key, the value and what is allowed, e.g.
 *   queue.max_lifetime: "5 days" is not a duration; use a number with a unit ...
 * Relative paths in the file are taken relative to the file's folder.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import YAML from 'yaml';
import { ZodError } from 'zod';
import { configSchema, type TandemConfig } from './schema.ts';
import { ConfigError } from '../util/errors.ts';

export interface ConfigOverrides {
  nodeId?: string;
  listen?: string;
  spool?: string;
  relayHost?: string;
  admin?: string;
}

/** Load and validate. `file` may be undefined: the built-in defaults (plus overrides). */
export async function loadConfig(file?: string, overrides: ConfigOverrides = {}): Promise<TandemConfig> {
  let raw: any = {};
  let baseDir = process.cwd();
  if (file) {
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (e) {
      throw new ConfigError(file, `cannot read the config file: ${(e as Error).message}`);
    }
    const doc = YAML.parseDocument(text, { prettyErrors: true });
    if (doc.errors.length) {
      throw new ConfigError(file, `not valid YAML: ${doc.errors[0].message}`);
    }
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

  let cfg: TandemConfig;
  try {
    cfg = configSchema.parse(raw);
  } catch (e) {
    if (e instanceof ZodError) throw new ConfigError(file ?? '(defaults)', formatConfigError(e, raw));
    throw e;
  }
  cfg = resolvePaths(cfg, baseDir);
  if (cfg.cluster?.secret_file) cfg.cluster.secret = await readSecretFile(file ?? '(defaults)', cfg.cluster.secret_file);
  return cfg;
}

/** cluster.secret_file: the secret is the file's first line; at least 16 characters. */
async function readSecretFile(configFile: string, secretFile: string): Promise<string> {
  let text: string;
  try {
    text = await readFile(secretFile, 'utf8');
  } catch (e) {
    throw new ConfigError(configFile, `cluster.secret_file: cannot read ${secretFile}: ${(e as Error).message}`);
  }
  const secret = text.split(/\r?\n/)[0].trim();
  if (secret.length < 16) throw new ConfigError(configFile, `cluster.secret_file: the secret in ${secretFile} is shorter than 16 characters`);
  return secret;
}

/** One line per problem: key, given value, what is allowed. */
function formatConfigError(err: ZodError, raw: unknown): string {
  return err.issues.map((issue) => {
    const key = issue.path.join('.');
    let value: unknown = raw;
    for (const p of issue.path) value = (value as any)?.[p];
    const shown = value === undefined ? '' : ` (got ${JSON.stringify(value)})`;
    if (issue.code === 'unrecognized_keys') {
      return `${key ? key + ': ' : ''}unknown key(s) ${issue.keys.map((k) => `"${k}"`).join(', ')}; see docs/configuration.md for the allowed keys`;
    }
    return `${key}: ${issue.message}${shown}`;
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
  if (cfg.directory) cfg.directory.bind_password_file = r(cfg.directory.bind_password_file);
  return cfg;
}
