/**
 * cli/config-show.ts — `tandem config show [-n] [--json]`: the effective configuration, every
 * default filled in (as `postconf`), or only the keys set in the file (`-n`, as `postconf -n`);
 * secrets masked, addresses as host:port. Durations and sizes are shown as the admin wrote them
 * ("30s", "10MB"), and defaults as the schema writes them ("300s"); --json gives the values the
 * node uses (durations in ms, sizes in bytes), for scripts.
 */
import { readFile } from 'node:fs/promises';
import YAML from 'yaml';
import { z } from 'zod';
import { configSchema } from '../config/schema.ts';
import { ConfigError } from '../util/errors.ts';
import { parseDuration, parseSize } from '../util/units.ts';
import { EXIT } from './exit-codes.ts';
import { configPath, loadCliConfig, type CliConfigOptions } from './cli-config.ts';

/** Keys whose values are never printed. */
const SECRET_KEYS = new Set(['token', 'secret', 'accept_secrets', 'bind_password']);

/** A copy with secrets replaced by "********" and {host, port} as "host:port". */
export function maskSecrets(value: unknown, key = ''): unknown {
  if (SECRET_KEYS.has(key) && value !== undefined) return '********';
  if (Array.isArray(value)) return value.map((v) => maskSecrets(v));
  if (value && typeof value === 'object') {
    const o = value as Record<string, unknown>;
    if (Object.keys(o).length === 2 && typeof o.host === 'string' && typeof o.port === 'number') return o.host.includes(':') ? `[${o.host}]:${o.port}` : `${o.host}:${o.port}`;
    return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined).map(([k, v]) => [k, maskSecrets(v, k)]));
  }
  return value;
}

/** Keep only the keys present in `raw` (the file as written); lists are kept whole. */
function onlySet(effective: unknown, raw: unknown): unknown {
  if (!raw || typeof raw !== 'object' || Array.isArray(raw) || !effective || typeof effective !== 'object' || Array.isArray(effective)) return effective;
  const e = effective as Record<string, unknown>;
  return Object.fromEntries(Object.keys(raw as object).filter((k) => k in e).map((k) => [k, onlySet(e[k], (raw as Record<string, unknown>)[k])]));
}

/**
 * The text defaults of the schema by key path ("smtp.socket_timeout" → "300s"; array items as
 * "[]"), walking through defaults, optionals, refinements and transforms.
 */
export function unitDefaults(schema: z.ZodTypeAny = configSchema, path = '', out = new Map<string, string>()): Map<string, string> {
  if (schema instanceof z.ZodEffects) return unitDefaults(schema._def.schema, path, out);
  if (schema instanceof z.ZodOptional || schema instanceof z.ZodNullable) return unitDefaults(schema.unwrap(), path, out);
  if (schema instanceof z.ZodDefault) {
    const value: unknown = schema._def.defaultValue();
    if (typeof value === 'string') out.set(path, value);
    return unitDefaults(schema._def.innerType, path, out);
  }
  if (schema instanceof z.ZodObject) {
    for (const [key, child] of Object.entries(schema.shape as Record<string, z.ZodTypeAny>)) unitDefaults(child, path ? `${path}.${key}` : key, out);
  }
  if (schema instanceof z.ZodArray) unitDefaults(schema.element, `${path}[]`, out);
  return out;
}

/** Is `text` a duration or a size that comes to `value` (ms or bytes)? */
function writtenAs(text: unknown, value: number): boolean {
  if (typeof text !== 'string' && typeof text !== 'number') return false;
  return [parseDuration, parseSize].some((parse) => {
    try { return parse(text) === value; } catch { return false; }
  });
}

/**
 * A copy of the effective config whose durations and sizes (numbers) are shown as written in the
 * file (`raw`), else as the schema's default text, when that text comes to the same value.
 */
export function asWritten(effective: unknown, raw: unknown, defaults: Map<string, string> = unitDefaults(), path = ''): unknown {
  if (typeof effective === 'number') {
    if (raw !== undefined && raw !== effective && writtenAs(raw, effective)) return raw;
    const def = defaults.get(path);
    return raw === undefined && def !== undefined && writtenAs(def, effective) ? def : effective;
  }
  const rawAt = (k: string | number) => (raw && typeof raw === 'object' ? (raw as Record<string, unknown>)[k] : undefined);
  if (Array.isArray(effective)) return effective.map((v, i) => asWritten(v, rawAt(i), defaults, `${path}[]`));
  if (effective && typeof effective === 'object') {
    return Object.fromEntries(Object.entries(effective).map(([k, v]) => [k, asWritten(v, rawAt(k), defaults, path ? `${path}.${k}` : k)]));
  }
  return effective;
}

type ShowOptions = CliConfigOptions & { nonDefault?: boolean; json?: boolean };

/** The text `config show` prints (YAML, or JSON with --json). Throws ConfigError. */
export async function configShowText(opts: ShowOptions): Promise<string> {
  const c = await loadCliConfig(opts);
  const raw: unknown = YAML.parse(await readFile(configPath(opts)!, 'utf8'));
  let shown = maskSecrets(c);
  if (!opts.json) shown = asWritten(shown, raw);
  if (opts.nonDefault) shown = onlySet(shown, raw);
  return opts.json ? `${JSON.stringify(shown, null, 2)}\n` : YAML.stringify(shown);
}

export async function runConfigShow(opts: ShowOptions): Promise<number> {
  let text: string;
  try {
    text = await configShowText(opts);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    console.error(`tandem config show: configuration error in ${err.message}`);
    return EXIT.CONFIG;
  }
  process.stdout.write(text);
  return EXIT.OK;
}
