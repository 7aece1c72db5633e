/**
 * cli/demo.ts — the embedded default behind `tandem demo` (the README's first command):
 * a config and tables in a folder of its own, for the local test domain example.test with
 * mailboxes alice and bob, an alias (postmaster → alice) and a list (team → alice, bob),
 * all delivered into Maildirs under <dir>/mail. No external server is needed.
 *
 * Existing files in <dir> are kept (so a second run keeps its queue).
 */
import { mkdir, writeFile, access } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const FILES: Record<string, string> = {
  'tandem.yaml': `# Tandem demo node (see docs/configuration.md for every key)
node:
  id: demo
  hostname: tandem.example.test
smtp:
  listen: 127.0.0.1:2525
spool:
  root: spool
local:
  maildir_root: mail
tables:
  local_domains: tables/local_domains
  virtual_mailboxes: tables/virtual_mailboxes
  aliases: tables/aliases
queue:
  min_backoff: 10s
  max_backoff: 5m
tracking:
  path: log/tracking.log
`,
  'tables/local_domains': '# domains delivered here\nexample.test  local\n',
  'tables/virtual_mailboxes': '# address            Maildir (relative to local.maildir_root)\nalice@example.test  alice/\nbob@example.test    bob/\n',
  'tables/aliases': '# aliases and lists\npostmaster@example.test  alice@example.test\nteam@example.test        alice@example.test, bob@example.test\n',
};

/** The tandem command, as the user can type it from here. */
export const TANDEM_BIN = (() => {
  const bin = fileURLToPath(new URL('../../bin/tandem', import.meta.url));
  const rel = path.relative(process.cwd(), bin);
  return rel.startsWith('..') ? bin : `./${rel}`;
})();

export async function prepareDemo(dirArg: string) {
  const dir = path.resolve(dirArg);
  for (const [name, text] of Object.entries(FILES)) {
    const file = path.join(dir, name);
    await mkdir(path.dirname(file), { recursive: true });
    try { await access(file); } catch { await writeFile(file, text); }
  }
  return {
    configFile: path.join(dir, 'tandem.yaml'),
    instructions(smtp: { host: string; port: number }, admin?: { host: string; port: number }): string {
      const mail = path.join(dir, 'mail');
      return [
        '',
        `Tandem demo is running. SMTP: ${smtp.host}:${smtp.port}${admin ? `   admin API: http://${admin.host}:${admin.port}/health` : ''}`,
        `  local domain example.test: alice, bob; postmaster → alice; team → alice + bob`,
        `  send one:   swaks --server ${smtp.host}:${smtp.port} --from you@example.org --to team@example.test`,
        `  look here:  ls ${mail}/alice/new ${mail}/bob/new`,
        admin ? `  queue:      ${TANDEM_BIN} queue list --admin ${admin.host}:${admin.port}` : `  queue:      ${TANDEM_BIN} queue list --config ${path.join(dir, 'tandem.yaml')}`,
        `  tracking:   tail -f ${path.join(dir, 'log', 'tracking.log')}`,
        '  stop:       Ctrl-C',
        '',
      ].join('\n');
    },
  };
}
