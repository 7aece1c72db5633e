/**
 * The bounded active queue with a real node: queue.active_message_limit is set to 50 and a few
 * hundred messages wait for a next hop that is down, across a restart. The operator's queue
 * listing sees every message, and once the next hop is up every message reaches it exactly
 * once (memory use itself is measured by bench/memory.ts, not here).
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { trackProcesses } from './harness/procs.ts';
import { startSink } from './harness/sink.ts';
import { startNode, writeNodeConfig, type RunningNode } from './harness/node.ts';
import { runLoad } from './harness/load.ts';
import { freePort } from './harness/ports.ts';
import { runCli } from './harness/tandem.ts';
import { eventually } from './harness/wait.ts';

const procs = trackProcesses();
after(() => procs.stopAll());

const LIMIT = 50;
const TOTAL = 300;

test(`active_message_limit ${LIMIT} with ${TOTAL} messages queued for a next hop that is down: all listed, all delivered once after a restart`, { timeout: 300_000 }, async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tandem-bounded-'));
  const sinkPort = await freePort(); // the next hop: down until the sink is started on it
  const config = writeNodeConfig(dir, {
    node: { id: 'bq' },
    relay: { host: `127.0.0.1:${sinkPort}` },
    queue: { active_message_limit: LIMIT, min_backoff: '1s', max_backoff: '2s' },
    delivery: { connect_timeout: '2s' },
  });
  const spool = path.join(dir, 'spool', 'bq');
  const queued = (): number => ['incoming', 'active', 'deferred'].reduce((n, s) => n + readdirSync(path.join(spool, s)).length, 0);
  const start = (name: string): Promise<RunningNode> => startNode({ config, admin: '127.0.0.1:0', logFile: path.join(dir, `${name}.out`) });

  let node = await start('node-1');
  const load = await runLoad({ host: '127.0.0.1', port: node.smtp.port, total: TOTAL, concurrency: 10, sizeBytes: 2048, from: 'load@client.test', to: (i) => `rcpt${i}@remote.test` });
  assert.equal(load.accepted.size, TOTAL, `all accepted (errors: ${JSON.stringify(load.errorSamples)})`);
  await eventually('every message tried once and deferred', () => readdirSync(path.join(spool, 'deferred')).length === TOTAL, 120_000);

  // the operator sees every message, also those the queue manager keeps on disk only
  const listed = await runCli(['queue', 'list', '--admin', `127.0.0.1:${node.admin!.port}`, '--json']);
  assert.equal(listed.code, 0, listed.stderr);
  assert.equal(JSON.parse(listed.stdout).total, TOTAL, 'queue list counts every message');

  // a restart with six times the limit queued: the scan reads in only the limit
  assert.equal((await node.stop()).code, 0);
  node = await start('node-2');
  const recovered = (await node.proc.waitForLine((l) => l.json?.event === 'spool-recovered', 60_000)).json;
  assert.equal(recovered?.queued, LIMIT, `the start-up scan brings in the limit only: ${JSON.stringify(recovered)}`);

  // the next hop comes up: every message reaches it, none twice
  const sink = await startSink({ listen: `127.0.0.1:${sinkPort}` });
  await eventually(`${TOTAL} messages at the next hop`, () => sink.count() >= TOTAL, 180_000);
  await eventually('the queue to empty', () => queued() === 0, 60_000);
  const counts = sink.countsByTestId();
  assert.equal(counts.size, TOTAL, 'every message delivered');
  assert.deepEqual([...counts.values()].filter((n) => n !== 1), [], 'no message delivered twice');
  assert.deepEqual([...load.accepted].filter((id) => !counts.has(id)), [], 'every accepted message delivered');
  assert.equal((await node.stop()).code, 0);
  await sink.stop();
});
