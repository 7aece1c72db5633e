/**
 * cli/config-show.ts — `tandem config show [-n] [--json]`: the effective configuration, every
 * default filled in (as `postconf`), or only the keys set in the file (`-n`, as `postconf -n`);
 * secrets masked. Values are in the units the node uses: durations in ms, sizes in bytes,
 * addresses as host:port.
 *
 * Exports: runConfigShow, maskSecrets.
 */
import { readFile } from 'node:fs/promises';
import YAML from 'yaml';
import { ConfigError } from '../util/errors.ts';
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

export async function runConfigShow(opts: CliConfigOptions & { nonDefault?: boolean; json?: boolean }): Promise<number> {
  let shown: unknown;
  try {
    const c = await loadCliConfig(opts);
    shown = maskSecrets(c);
    if (opts.nonDefault) shown = onlySet(shown, YAML.parse(await readFile(configPath(opts)!, 'utf8')));
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    console.error(`tandem config show: configuration error in ${err.message}`);
    return EXIT.CONFIG;
  }
  process.stdout.write(opts.json ? `${JSON.stringify(shown, null, 2)}\n` : YAML.stringify(shown));
  return EXIT.OK;
}
