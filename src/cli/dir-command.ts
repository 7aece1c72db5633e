/**
 * cli/dir-command.ts — `tandem dir`: directory changes for directory-based configuration.
 *
 *   tandem dir schema [--ldif]                       print the Tandem schema (slapd.conf or cn=config form)
 *   tandem dir init    -c FILE                       base entry and ou=domains/people/aliases/lists/routes
 *   tandem dir import  -c FILE                       the config's table files (and local/relay domains) → directory
 *   tandem dir add     KIND KEY [VALUE...] -c FILE   KIND: domain | mailbox | alias | list | route
 *   tandem dir modify  KIND KEY [VALUE...] -c FILE   replace the entry's values
 *   tandem dir remove  KIND KEY -c FILE
 *   tandem dir list    [KIND] -c FILE [--json]
 * Options for add/modify: --relay (domain), --maildir PATH and --mail-host HOST (mailbox).
 *
 * Writes go to the master (the second master while the first is down); reads (list) to any
 * server. Exit codes: 0 ok; 1 the master refused the change (message says why); 2 bad
 * argument; 75 "directory master unavailable — retry later" (EXIT.TEMPFAIL: no master reachable,
 * or for list no server reachable), or "outcome unknown on master X — check and retry" (the
 * change was sent but no answer came; it is not repeated on the other master); 78 configuration error or no directory: section.
 * Config keys: directory.*, tables.*, local.domains, relay.domains.
 */
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { loadConfig } from '../config/load.ts';
import { createDirectoryPool } from '../node/wiring.ts';
import { DirectoryAdmin, DIR_KINDS, DirectoryMasterUnavailableError, DirectoryUnavailableError, DirectoryWriteError, DirectoryWriteOutcomeUnknownError, type DirKind } from '../router/directory/index.ts';
import { EXIT } from './exit-codes.ts';

export interface DirCommandOptions {
  config?: string;
  nodeId?: string;
  json?: boolean;
  ldif?: boolean;
  relay?: boolean;
  maildir?: string;
  mailHost?: string;
}

const SCHEMA_FILES = {
  schema: fileURLToPath(new URL('../../deploy/ldap/tandem.schema', import.meta.url)),
  ldif: fileURLToPath(new URL('../../deploy/ldap/tandem.ldif', import.meta.url)),
};

/** Run one `tandem dir` action; returns the exit code. */
export async function runDirCommand(action: string, args: string[], opts: DirCommandOptions): Promise<number> {
  if (action === 'schema') {
    process.stdout.write(await readFile(opts.ldif ? SCHEMA_FILES.ldif : SCHEMA_FILES.schema, 'utf8'));
    return EXIT.OK;
  }
  if (!opts.config) return fail(EXIT.USAGE, 'give the node configuration with --config FILE or TANDEM_CONFIG (its directory: section says where the directory is)');
  let c;
  try {
    c = await loadConfig(opts.config, opts.nodeId ? { nodeId: opts.nodeId } : {}, { anyNode: true });
  } catch (err) {
    return fail(EXIT.CONFIG, `configuration error in ${(err as Error).message}`);
  }
  if (!c.directory) return fail(EXIT.CONFIG, `${opts.config} has no directory: section; see docs/directory.md`);
  let pool;
  try {
    pool = await createDirectoryPool(c);
  } catch (err) {
    return fail(EXIT.CONFIG, (err as Error).message);
  }
  const admin = new DirectoryAdmin(pool, c.directory.base_dn);
  try {
    return await run(admin, action, args, opts, c);
  } catch (err) {
    if (err instanceof DirectoryMasterUnavailableError || err instanceof DirectoryWriteOutcomeUnknownError) return fail(EXIT.TEMPFAIL, err.message);
    if (err instanceof DirectoryUnavailableError) return fail(EXIT.TEMPFAIL, `directory unavailable — retry later (${err.message})`);
    if (err instanceof DirectoryWriteError) {
      // 17 undefined attribute type, 21 invalid syntax (unknown object class), 65 object class violation
      const schema = [17, 21, 65].includes((err.cause as { code?: number } | undefined)?.code ?? 0);
      return fail(EXIT.FAILED, schema ? `${err.message}; is the Tandem schema loaded (with misc.schema before it)? see tandem dir schema and docs/directory.md` : err.message);
    }
    return fail(EXIT.USAGE, (err as Error).message);
  } finally {
    await pool.close();
  }
}

async function run(admin: DirectoryAdmin, action: string, args: string[], opts: DirCommandOptions, c: Awaited<ReturnType<typeof loadConfig>>): Promise<number> {
  const kindOf = (text: string | undefined): DirKind => {
    if (!DIR_KINDS.includes(text as DirKind)) throw new Error(`"${text ?? ''}" is not a kind; use one of ${DIR_KINDS.join(', ')}`);
    return text as DirKind;
  };
  const extra = { ...(opts.relay ? { relay: true } : {}), ...(opts.maildir !== undefined ? { maildir: opts.maildir } : {}), ...(opts.mailHost ? { mailHost: opts.mailHost } : {}) };
  switch (action) {
    case 'init': {
      const created = await admin.init();
      console.log(created.length ? created.map((dn) => `created ${dn}`).join('\n') : 'base entries already present');
      return EXIT.OK;
    }
    case 'import': {
      const counts = await admin.importTables(c.tables, { localDomains: c.local.domains, relayDomains: c.relay.domains }, (msg) => console.error(`warning: ${msg}`));
      console.log(`imported ${counts.written} entries (${Object.entries(counts.byKind).map(([k, n]) => `${k}: ${n}`).join(', ')})`);
      return EXIT.OK;
    }
    case 'add':
    case 'modify': {
      const [kind, key, ...values] = args;
      if (key === undefined) throw new Error(`usage: tandem dir ${action} KIND KEY [VALUE...]`);
      const dn = action === 'add' ? await admin.add(kindOf(kind), key, values, extra) : await admin.modify(kindOf(kind), key, values, extra);
      console.log(`${action === 'add' ? 'added' : 'modified'} ${dn}`);
      return EXIT.OK;
    }
    case 'remove': {
      const [kind, key] = args;
      if (key === undefined) throw new Error('usage: tandem dir remove KIND KEY');
      console.log(`removed ${await admin.remove(kindOf(kind), key)}`);
      return EXIT.OK;
    }
    case 'list': {
      const entries = await admin.list(args[0] === undefined ? undefined : kindOf(args[0]));
      if (opts.json) console.log(JSON.stringify(entries));
      else for (const e of entries) console.log(`${e.kind.padEnd(8)} ${e.key.padEnd(32)} ${e.value}`);
      return EXIT.OK;
    }
    default:
      throw new Error(`unknown action ${action}`);
  }
}

function fail(code: number, message: string): number {
  console.error(`tandem dir: ${message}`);
  return code;
}
