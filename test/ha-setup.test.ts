/**
 * docs/ha.md's cluster set-up followed literally: its shared config file (no node.id), taken
 * from the document itself with only the addresses and paths replaced by local ones; both nodes
 * started by the commands of the template unit deploy/tandem@.service (ExecStartPre, then
 * ExecStart, with %i = the node id); then `config check`, `cluster status` and `queue list` on
 * each node exit 0. The unit's ReadWritePaths must cover the document's spool and tracking paths.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import os from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import { trackProcesses, spawnProcess } from './harness/procs.ts';
import { freePort, freeUdpPort } from './harness/ports.ts';
import { REPO_ROOT } from './harness/node.ts';
import { runCli } from './harness/tandem.ts';

const procs = trackProcesses();
after(() => procs.stopAll());

/** The first ```yaml block after `heading` in a markdown file. */
function yamlBlockAfter(markdown: string, heading: string): string {
  const from = markdown.indexOf(heading);
  assert.ok(from >= 0, `${heading} in docs/ha.md`);
  const m = /```yaml\n([\s\S]*?)```/.exec(markdown.slice(from));
  assert.ok(m, `a yaml block under ${heading}`);
  return m[1];
}

/** The values of a key in a systemd unit file (every line of it). */
function unitValues(unit: string, key: string): string[] {
  return unit.split('\n').filter((l) => l.startsWith(`${key}=`)).map((l) => l.slice(key.length + 1).trim());
}

test('docs/ha.md set-up: one shared config, two nodes started by the template unit\'s commands; config check, cluster status, queue list exit 0', { timeout: 240_000 }, async () => {
  const doc = readFileSync(path.join(REPO_ROOT, 'docs/ha.md'), 'utf8');
  const unit = readFileSync(path.join(REPO_ROOT, 'deploy/tandem@.service'), 'utf8');
  const text = yamlBlockAfter(doc, '## Configuration');
  const documented = YAML.parse(text);
  assert.equal(documented.node?.id, undefined, 'the shared file has no node.id');

  // the unit may write where the documented config writes
  const writable = unitValues(unit, 'ReadWritePaths').flatMap((v) => v.split(/\s+/));
  for (const p of [documented.spool.root, path.dirname(documented.tracking.path)]) {
    assert.ok(writable.some((w) => p === w || p.startsWith(`${w}/`)), `ReadWritePaths (${writable.join(' ')}) covers ${p}`);
  }
  const [pre] = unitValues(unit, 'ExecStartPre');
  const [start] = unitValues(unit, 'ExecStart');
  assert.ok(pre.includes('%i') && start.includes('%i'), 'the unit passes the instance name as the node id');

  // the document's file, with local addresses and paths
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tandem-ha-setup-'));
  const secretFile = path.join(dir, 'cluster.secret');
  writeFileSync(secretFile, `${'ab12'.repeat(16)}\n`, { mode: 0o600 });
  let local = text
    .replaceAll(documented.spool.root, path.join(dir, 'spool'))
    .replaceAll(documented.tracking.path, path.join(dir, 'log', 'tracking.log'))
    .replaceAll(documented.cluster.secret_file, secretFile);
  const ports: Record<string, number> = {};
  for (const n of documented.cluster.nodes) {
    for (const key of ['heartbeat', 'smtp', 'admin'] as const) {
      const port = key === 'heartbeat' ? await freeUdpPort() : await freePort();
      ports[`${n.id}.${key}`] = port;
      local = local.replaceAll(`"${n[key]}"`, `"127.0.0.1:${port}"`);
    }
  }
  const configFile = path.join(dir, 'tandem.yaml');
  writeFileSync(configFile, local);
  const tandem = path.join(REPO_ROOT, 'bin/tandem');
  const command = (line: string, id: string) => line.replaceAll('/opt/tandem/bin/tandem', tandem).replaceAll('/etc/tandem/tandem.yaml', configFile).replaceAll('%i', id).split(/\s+/);

  const ids = documented.cluster.nodes.map((n: { id: string }) => n.id) as string[];
  for (const id of ids) {
    const [cmd, ...args] = command(pre, id);
    await promisify(execFile)(cmd, args, { cwd: dir }).catch((err) => assert.fail(`ExecStartPre for ${id} failed: ${err.stdout}${err.stderr}`));
  }
  await Promise.all(ids.map(async (id) => {
    const [cmd, ...args] = command(start, id);
    await spawnProcess(cmd, args, { cwd: dir, name: `node-${id}`, readyMatch: (j) => j.event === 'ready', readyTimeoutMs: 90_000 });
  }));

  const check = await runCli(['config', 'check', configFile]);
  assert.equal(check.code, 0, check.stdout + check.stderr);
  assert.match(check.stdout, /configuration OK \(shared cluster file/);
  for (const id of ids) {
    const checked = await runCli(['config', 'check', '--config', configFile, '--node-id', id]);
    assert.equal(checked.code, 0, checked.stdout + checked.stderr);
    const status = await runCli(['cluster', 'status', '--config', configFile, '--json'], { env: { TANDEM_NODE_ID: id } });
    assert.equal(status.code, 0, status.stderr);
    assert.deepEqual(JSON.parse(status.stdout).nodes.map((n: any) => `${n.id} ${n.status}`), ids.map((i) => `${i} alive`));
    const listed = await runCli(['queue', 'list', '--config', configFile, '--node-id', id, '--json']);
    assert.equal(listed.code, 0, listed.stderr);
    assert.equal(JSON.parse(listed.stdout).node, id, `queue list --node-id ${id} reaches node ${id}`);
  }
  const token = YAML.parse(local).admin.token;
  const health = await fetch(`http://127.0.0.1:${ports['b.admin']}/health`, { headers: { authorization: `Bearer ${token}` } });
  assert.equal(health.status, 200, 'node b listens on its own admin address of cluster.nodes');
});
