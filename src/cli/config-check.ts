/**
 * cli/config-check.ts — `tandem config check FILE`: parse and validate the file, then load
 * every table it names, the relay networks, the password table and the TLS files, as a start
 * would — without listening or touching the spool. With a directory: section, it binds to
 * every directory server and reads directory.base_dn there (one line per server) unless
 * `connect: false` (`--no-connect`: what a unit's ExecStartPre runs, since a node starts, and
 * answers 451, while its directory is down). The DKIM keys: each file of dkim.keys is read and
 * checked (RSA ≥ 1024 bits or Ed25519, PEM); with dkim.directory (and a connection), every
 * tandemDkimDomain entry of the directory too, with the key file it names — each problem names
 * the file or the entry.
 * A cluster file shared by every node (no node.id) is checked as such when no node id is given
 * (every node of cluster.nodes), or as the node given (--node-id, TANDEM_NODE_ID).
 * With directory sites, one line says which servers this node reads and writes first.
 *
 */
import { access, readFile } from 'node:fs/promises';
import { constants } from 'node:fs';
import { createSecureContext } from 'node:tls';
import { loadConfig, nodeIdGiven } from '../config/load.ts';
import type { TandemConfig } from '../config/schema.ts';
import { directorySite } from '../config/schema.ts';
import { isErrno } from '../util/errno.ts';
import { createRouter, createDirectoryPool, loadRelayNetworks, loadPasswords } from '../node/wiring.ts';
import { DirectoryRouter } from '../router/directory/index.ts';
import { checkSigningKey, loadDirectoryKey } from '../receiver/index.ts';

export async function checkConfig(file: string, opts: { nodeId?: string; connect?: boolean } = {}): Promise<{ ok: boolean; lines: string[] }> {
  const lines: string[] = [];
  const problems: string[] = [];
  let c;
  try {
    c = await loadConfig(file, opts.nodeId ? { nodeId: opts.nodeId } : {}, { anyNode: true });
  } catch (err) {
    return { ok: false, lines: [`${file}: invalid`, ...String((err as Error).message).split('\n').map((l) => `  ${l}`)] };
  }
  const step = async (what: string, fn: () => Promise<unknown>) => {
    try {
      const detail = await fn();
      lines.push(`  ok   ${what}${typeof detail === 'string' ? `: ${detail}` : ''}`);
    } catch (err) {
      problems.push(what);
      lines.push(`  FAIL ${what}: ${(err as Error).message}`);
    }
  };
  await step('tables (local_domains, virtual_mailboxes, aliases, transport, relay_domains)', async () => {
    const router = await createRouter(c);
    await router.close();
  });
  const site = directorySite(c);
  if (c.directory && site !== undefined) {
    const own = c.directory.servers.filter((s) => s.site === site);
    const master = [...own, ...c.directory.servers].find((s) => s.role === 'master');
    lines.push(`  ok   directory site ${site}${nodeIdGiven(c) || !c.cluster || c.directory.site !== undefined ? '' : ` (node ${c.node.id}'s; give --node-id for another node)`}: reads from ${own.map((s) => s.url).join(', ')}, the other sites' servers only while these are down; writes to ${master?.url ?? 'no master'} first`);
  }
  if (c.directory && opts.connect === false) lines.push('  --   directory servers not contacted (--no-connect)');
  else if (c.directory) {
    const pool = await createDirectoryPool(c).catch((err: Error) => err);
    if (pool instanceof Error) await step('directory', () => Promise.reject(pool));
    else {
      for (const r of await pool.check(c.directory.base_dn)) {
        await step(`directory server ${r.url}`, async () => {
          if (!r.ok) throw new Error(/tandem dir init/.test(r.detail) ? r.detail : `${r.detail}; cannot bind and read: check the URL, bind_dn, the password and base_dn`);
          return r.detail;
        });
      }
      await pool.close();
    }
  }
  for (const k of c.dkim.keys) {
    await step(`DKIM key of ${k.domain} (selector ${k.selector}) ${k.key_file}`, async () => checkSigningKey(await readFile(k.key_file, 'utf8'), k.key_file));
  }
  if (c.dkim.directory && c.directory && opts.connect !== false) await checkDirectoryDkim(c, step);
  await step('relay networks', () => loadRelayNetworks(c));
  if (c.smtp.auth_passwords) await step(`password table ${c.smtp.auth_passwords}`, () => loadPasswords(c));
  if (c.smtp.tls) {
    const tls = c.smtp.tls;
    await step(`TLS certificate ${tls.cert} and key ${tls.key}`, async () => createSecureContext({ cert: await readFile(tls.cert), key: await readFile(tls.key) }));
  }
  await step(`spool root ${c.spool.root} is writable (or can be created)`, async () => {
    try { await access(c.spool.root, constants.W_OK); } catch (e) {
      if (!isErrno(e, 'ENOENT')) throw e;
    }
  });
  if (c.cluster?.storage === 'replicated') {
    const ids = nodeIdGiven(c) ? [c.node.id] : c.cluster.nodes.map((n) => n.id);
    const { replicationTls } = await import('../cluster/index.ts');
    for (const id of ids) await step(`replication TLS for node ${id} (CA ${c.cluster.replication!.tls.ca})`, async () => void (await replicationTls(c, id)));
  }
  if (c.cluster) {
    const cl = c.cluster;
    const noAdmin = cl.nodes.filter((n) => !n.admin).map((n) => n.id);
    await step(`cluster of ${cl.nodes.length} nodes (${cl.nodes.map((n) => n.id).join(', ')}); heartbeat every ${cl.heartbeat_interval} ms, fence after ${cl.fence_after} ms, dead after ${cl.dead_after} ms`
      + (noAdmin.length ? `; no admin address for ${noAdmin.join(', ')} (tandem cluster status cannot ask it)` : ''), async () => undefined);
  }
  const ok = problems.length === 0;
  const who = nodeIdGiven(c) ? `node ${c.node.id}` : `shared cluster file: every node of cluster.nodes, each started with --node-id ID`;
  return { ok, lines: [`${file}: ${ok ? 'configuration OK' : `${problems.length} problem(s)`} (${who}, SMTP ${c.smtp.listen.host}:${c.smtp.listen.port})`, ...lines] };
}

/** Every tandemDkimDomain entry of the directory, with its key (the file it names is read here). */
async function checkDirectoryDkim(c: TandemConfig, step: (what: string, fn: () => Promise<unknown>) => Promise<void>): Promise<void> {
  const router = await createRouter(c);
  try {
    const entries = router instanceof DirectoryRouter ? await router.directory.readDkim().catch((err: Error) => err) : new Map();
    if (entries instanceof Error) return await step('DKIM keys in the directory', () => Promise.reject(entries));
    if (entries.size === 0) return await step('DKIM keys in the directory', async () => 'none (no tandemDkimDomain entry)');
    for (const [domain, entry] of entries) {
      const what = entry instanceof Error ? `DKIM key of ${domain} in the directory` : `DKIM key of ${domain} (selector ${entry.selector}) in directory entry ${entry.dn}`;
      await step(what, async () => {
        if (entry instanceof Error) throw entry;
        await loadDirectoryKey(entry);
        return entry.keyFile ? `key file ${entry.keyFile}` : 'key in the entry';
      });
    }
  } finally {
    await router.close();
  }
}
