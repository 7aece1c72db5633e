/**
 * cli/config-check.ts — `tandem config check FILE`: parse and validate the file, then load
 * every table it names, the relay networks, the password table and the TLS files, as a start
 * would — without listening or touching the spool.
 *
 * Exports: checkConfig → { ok, lines } (lines are what to print).
 */
import { access, readFile } from 'node:fs/promises';
import { constants } from 'node:fs';
import { createSecureContext } from 'node:tls';
import { loadConfig } from '../config/load.ts';
import { TableRouter, NetworkList, loadNetworkTable, PasswordTable } from '../router/index.ts';

export async function checkConfig(file: string): Promise<{ ok: boolean; lines: string[] }> {
  const lines: string[] = [];
  const problems: string[] = [];
  let c;
  try {
    c = await loadConfig(file);
  } catch (err) {
    return { ok: false, lines: [`${file}: invalid`, ...String((err as Error).message).split('\n').map((l) => `  ${l}`)] };
  }
  const step = async (what: string, fn: () => Promise<unknown>) => {
    try {
      await fn();
      lines.push(`  ok   ${what}`);
    } catch (err) {
      problems.push(what);
      lines.push(`  FAIL ${what}: ${(err as Error).message}`);
    }
  };
  await step('tables (local_domains, virtual_mailboxes, aliases, transport, relay_domains)', () =>
    TableRouter.create({ tables: c.tables, localDomains: c.local.domains, relayDomains: c.relay.domains, maildirRoot: c.local.maildir_root, ...(c.relay.host ? { relayHost: c.relay.host } : {}) }));
  await step('relay networks', async () => {
    const entries = [...c.relay.networks];
    if (c.tables.relay_networks) entries.push(...(await loadNetworkTable(c.tables.relay_networks)));
    NetworkList.parse(entries, 'relay.networks');
  });
  if (c.smtp.auth_passwords) await step(`password table ${c.smtp.auth_passwords}`, () => PasswordTable.load(c.smtp.auth_passwords!));
  if (c.smtp.auth_passwords && !c.smtp.tls) problems.push('auth'), lines.push('  FAIL smtp.auth_passwords is set but smtp.tls is not: AUTH is offered only after STARTTLS');
  if (c.smtp.tls) {
    const tls = c.smtp.tls;
    await step(`TLS certificate ${tls.cert} and key ${tls.key}`, async () => createSecureContext({ cert: await readFile(tls.cert), key: await readFile(tls.key) }));
  }
  await step(`spool root ${c.spool.root} is writable (or can be created)`, async () => {
    try { await access(c.spool.root, constants.W_OK); } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
  });
  const ok = problems.length === 0;
  return { ok, lines: [`${file}: ${ok ? 'configuration OK' : `${problems.length} problem(s)`} (node ${c.node.id}, SMTP ${c.smtp.listen.host}:${c.smtp.listen.port})`, ...lines] };
}
