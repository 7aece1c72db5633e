/**
 * `tandem config show` prints durations and sizes in the units the admin wrote ("30s", "10MB"),
 * defaults as the schema writes them, and --json the node's own values (ms, bytes).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import { configShowText } from './config-show.ts';

const show = (file: string, json = false) => configShowText({ config: file, ...(json ? { json } : {}) });

test('config show: durations and sizes as written (and defaults as the schema has them); --json in ms and bytes', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tandem-config-show-'));
  const file = path.join(dir, 'tandem.yaml');
  writeFileSync(file, YAML.stringify({
    node: { id: 'a', hostname: 'mx.test' },
    smtp: { socket_timeout: '30s', max_message_size: '10MB' },
    queue: { max_lifetime: '5d', max_backoff: 3600 },
  }));
  const shown = YAML.parse(await show(file));
  assert.equal(shown.smtp.socket_timeout, '30s');
  assert.equal(shown.smtp.max_message_size, '10MB');
  assert.equal(shown.queue.max_lifetime, '5d');
  assert.equal(shown.queue.max_backoff, 3600, 'a bare number (seconds) as written');
  assert.equal(shown.queue.min_backoff, '300s', 'a default as the schema writes it');
  assert.equal(shown.smtp.max_connections, 100, 'plain numbers stay numbers');

  const json = JSON.parse(await show(file, true));
  assert.equal(json.smtp.socket_timeout, 30_000);
  assert.equal(json.smtp.max_message_size, 10_000_000);
  assert.equal(json.queue.max_backoff, 3_600_000);
});
