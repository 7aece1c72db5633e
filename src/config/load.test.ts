/**
 * load.test.ts — the config loader and schema on real files: defaults, command-line overrides,
 * paths relative to the config file, and error messages that name the key, the value and what
 * is allowed.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { loadConfig, type ConfigOverrides } from './load.ts';
import { ConfigError } from '../util/errors.ts';
import { directorySite } from './schema.ts';

let dir: string;
let fileCount = 0;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'tandem-config-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Write `yaml` to a fresh file in a subfolder of the temp folder; returns its path. */
async function configFile(yaml: string, folder = 'etc'): Promise<string> {
  await mkdir(join(dir, folder), { recursive: true });
  const file = join(dir, folder, `tandem-${++fileCount}.yaml`);
  await writeFile(file, yaml);
  return file;
}

/** Load `yaml` and return the ConfigError's message (fails the test if it loads). */
async function errorFor(yaml: string, overrides?: ConfigOverrides): Promise<string> {
  const file = await configFile(yaml);
  try {
    await loadConfig(file, overrides);
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${err}`);
    assert.ok(err.message.startsWith(`${file}: `), `the message names the file: ${err.message}`);
    return err.message;
  }
  assert.fail(`config loaded without error:\n${yaml}`);
}

test('without a file every key has its documented default, paths relative to the current folder', async () => {
  const cfg = await loadConfig();
  assert.equal(cfg.node.id, 'node1');
  assert.equal(cfg.node.hostname, 'localhost');
  assert.deepEqual(cfg.smtp.listen, { host: '127.0.0.1', port: 2525 });
  assert.equal(cfg.smtp.proxy_protocol, false);
  assert.equal(cfg.smtp.max_message_size, 10_240_000);
  assert.equal(cfg.smtp.max_recipients, 1000);
  assert.equal(cfg.smtp.max_connections, 100);
  assert.equal(cfg.smtp.socket_timeout, 300_000);
  assert.equal(cfg.smtp.tls, undefined);
  assert.equal(cfg.smtp.auth_passwords, undefined);
  assert.equal(cfg.spool.root, resolve(process.cwd(), 'var/spool'));
  assert.equal(cfg.local.maildir_root, resolve(process.cwd(), 'var/mail'));
  assert.equal(cfg.tracking.path, resolve(process.cwd(), 'var/log/tracking.log'));
  assert.equal(cfg.relay.host, undefined);
  assert.deepEqual(cfg.relay.networks, ['127.0.0.0/8', '::1/128']);
  assert.equal(cfg.queue.max_lifetime, 5 * 86_400_000);
  assert.equal(cfg.queue.delay_warning, 0);
  assert.equal(cfg.queue.min_backoff, 300_000);
  assert.equal(cfg.queue.max_backoff, 4_000_000);
  assert.equal(cfg.queue.max_active_bytes, 256 * 1024 * 1024);
  assert.equal(cfg.delivery.tls_security_level, 'may');
  assert.equal(cfg.admin.listen, undefined);
  assert.equal(cfg.log.level, 'info');
});

test('an empty file (or one of comments only) is refused: it is almost always the wrong file', async () => {
  assert.match(await errorFor(''), /the file is empty/);
  assert.match(await errorFor('# tandem.yaml\n\n# nothing yet\n'), /the file is empty/);
});

test('values in the file are converted to ms, bytes and host/port', async () => {
  const cfg = await loadConfig(await configFile([
    'node: { id: mx-2, hostname: mx2.example.net }',
    'smtp: { listen: "[::1]:25", max_message_size: 25MiB, socket_timeout: 1.5m }',
    'queue: { max_lifetime: 2d, min_backoff: 60, max_backoff: "1h" }',
    'relay: { host: smarthost.example.net }',
  ].join('\n')));
  assert.equal(cfg.node.id, 'mx-2');
  assert.deepEqual(cfg.smtp.listen, { host: '::1', port: 25 });
  assert.equal(cfg.smtp.max_message_size, 25 * 1024 * 1024);
  assert.equal(cfg.smtp.socket_timeout, 90_000);
  assert.equal(cfg.queue.max_lifetime, 2 * 86_400_000);
  assert.equal(cfg.queue.min_backoff, 60_000, 'a bare number is seconds');
  assert.equal(cfg.queue.max_backoff, 3_600_000);
  assert.deepEqual(cfg.relay.host, { host: 'smarthost.example.net', port: 25 }, 'port 25 when none is given');
});

test('command-line overrides replace the file values; --spool is made absolute against the current folder', async () => {
  const file = await configFile([
    'node: { id: fromfile, hostname: mx.example.net }',
    'smtp: { listen: "0.0.0.0:25", banner: Kept }',
    'spool: { root: filespool }',
    'relay: { host: "old.example.net:587" }',
  ].join('\n'));
  const cfg = await loadConfig(file, {
    nodeId: 'cli-node', listen: '127.0.0.1:2626', spool: 'cli/spool', relayHost: 'new.example.net:2525', admin: '127.0.0.1:8025',
  });
  assert.equal(cfg.node.id, 'cli-node');
  assert.equal(cfg.node.hostname, 'mx.example.net', 'other keys of the section are kept');
  assert.deepEqual(cfg.smtp.listen, { host: '127.0.0.1', port: 2626 });
  assert.equal(cfg.smtp.banner, 'Kept');
  assert.equal(cfg.spool.root, resolve(process.cwd(), 'cli/spool'), 'relative to the current folder, not the config file');
  assert.deepEqual(cfg.relay.host, { host: 'new.example.net', port: 2525 });
  assert.deepEqual(cfg.admin.listen, { host: '127.0.0.1', port: 8025 });

  const noFile = await loadConfig(undefined, { nodeId: 'solo', spool: '/srv/spool' });
  assert.equal(noFile.node.id, 'solo');
  assert.equal(noFile.spool.root, '/srv/spool');
});

test('overrides are validated like the file: a bad --node-id or --admin names the key and the value', async () => {
  await assert.rejects(loadConfig(undefined, { nodeId: 'Bad Node' }), (err: Error) => {
    assert.ok(err instanceof ConfigError);
    assert.match(err.message, /node\.id: .*a-z, 0-9.*\(got "Bad Node"\)/);
    return true;
  });
  await assert.rejects(loadConfig(undefined, { admin: 'localhost' }), /admin\.listen: "localhost" is not HOST:PORT/);
});

test('relative paths in the file are resolved against the config file\'s folder', async () => {
  const file = await configFile([
    'spool: { root: spool }',
    'local: { maildir_root: ../mail }',
    'tracking: { path: log/tracking.log }',
    'tables: { aliases: tables/aliases, transport: /etc/tandem/transport }',
    'smtp: { tls: { cert: tls/cert.pem, key: tls/key.pem }, auth_passwords: tables/passwords }',
  ].join('\n'), 'conf/sub');
  const base = join(dir, 'conf/sub');
  const cfg = await loadConfig(file);
  assert.equal(cfg.spool.root, join(base, 'spool'));
  assert.equal(cfg.local.maildir_root, join(dir, 'conf/mail'));
  assert.equal(cfg.tracking.path, join(base, 'log/tracking.log'));
  assert.equal(cfg.tables.aliases, join(base, 'tables/aliases'));
  assert.equal(cfg.tables.transport, '/etc/tandem/transport', 'absolute paths are kept');
  assert.equal(cfg.tables.local_domains, undefined, 'unset tables stay unset');
  assert.deepEqual(cfg.smtp.tls, { cert: join(base, 'tls/cert.pem'), key: join(base, 'tls/key.pem') });
  assert.equal(cfg.smtp.auth_passwords, join(base, 'tables/passwords'));

  const defaults = await loadConfig(await configFile('node: { id: a }', 'other'));
  assert.equal(defaults.spool.root, join(dir, 'other/var/spool'), 'defaults are relative to the file too');
});

test('tracking.path "" keeps the tracking log disabled (not resolved to the config folder)', async () => {
  const cfg = await loadConfig(await configFile('tracking: { path: "" }'));
  assert.equal(cfg.tracking.path, '');
});

test('smtp.proxy_protocol accepts false, true or a list of balancer addresses', async () => {
  assert.equal((await loadConfig(await configFile('smtp: { proxy_protocol: false }'))).smtp.proxy_protocol, false);
  assert.equal((await loadConfig(await configFile('smtp: { proxy_protocol: true }'))).smtp.proxy_protocol, true);
  const list = await loadConfig(await configFile('smtp: { proxy_protocol: [10.0.0.5, "2001:db8::5"] }'));
  assert.deepEqual(list.smtp.proxy_protocol, ['10.0.0.5', '2001:db8::5']);
  assert.match(await errorFor('smtp: { proxy_protocol: [] }'), /smtp\.proxy_protocol: .*at least 1.*\(got \[\]\)/);
});

test('a wrong smtp.proxy_protocol value says what is allowed (false, true or a list)', async () => {
  const msg = await errorFor('smtp: { proxy_protocol: "yes" }');
  assert.match(msg, /smtp\.proxy_protocol: /);
  assert.match(msg, /\(got "yes"\)/);
  // zod's union message is a bare "Invalid input": the operator is not told what would do
  assert.match(msg, /true/, `message does not say what is allowed: ${msg}`);
  assert.match(msg, /list/, `message does not say what is allowed: ${msg}`);
});

test('a bad duration names the key, the value and the allowed units', async () => {
  const msg = await errorFor('queue: { max_lifetime: 5 days }');
  assert.match(msg, /queue\.max_lifetime: "5 days" is not a duration/);
  assert.match(msg, /ms, s, m, h, d, w/);
  assert.match(msg, /\(got "5 days"\)/);
});

test('a negative duration or size is refused, naming the key', async () => {
  // a negative queue.max_lifetime would expire (bounce) every message at its first attempt
  const msg = await errorFor('queue: { max_lifetime: -1 }\nsmtp: { max_message_size: -5 }');
  assert.match(msg, /queue\.max_lifetime: .*\(got -1\)/);
  assert.match(msg, /smtp\.max_message_size: .*\(got -5\)/);
});

test('a bad size names the key, the value and the allowed units', async () => {
  const msg = await errorFor('smtp: { max_message_size: 10 megs }');
  assert.match(msg, /smtp\.max_message_size: "10 megs" is not a size/);
  assert.match(msg, /KiB, MiB, GiB/);
  assert.match(msg, /\(got "10 megs"\)/);
});

test('unknown keys and sections are errors that name them and point to the documentation', async () => {
  const nested = await errorFor('smtp: { listen: "127.0.0.1:25", lissen: "0.0.0.0:25" }');
  assert.match(nested, /smtp: unknown key\(s\) "lissen"; see docs\/configuration\.md/);
  const top = await errorFor('smpt: { listen: "127.0.0.1:25" }');
  assert.match(top, /unknown key\(s\) "smpt"/);
});

test('a bad node id names the key, the value and the allowed characters', async () => {
  const msg = await errorFor('node: { id: Node1 }');
  assert.match(msg, /node\.id: node ids are 1-32 characters: a-z, 0-9, "_" and "-", starting with a letter or digit \(got "Node1"\)/);
  assert.match(await errorFor('node: { id: -lead }'), /node\.id: .*\(got "-lead"\)/);
  assert.match(await errorFor(`node: { id: ${'a'.repeat(33)} }`), /node\.id: /);
});

test('a port out of range names the key, the value and the range', async () => {
  const msg = await errorFor('smtp: { listen: "0.0.0.0:70000" }');
  assert.match(msg, /smtp\.listen: port 70000 is out of range 0-65535 \(got "0\.0\.0\.0:70000"\)/);
  assert.match(await errorFor('relay: { host: "mx:99999" }'), /relay\.host: port 99999 is out of range/);
});

test('several problems are reported together, one line each', async () => {
  const msg = await errorFor('node: { id: X }\nqueue: { max_lifetime: soon }\nsmtp: { max_recipients: 0 }');
  const lines = msg.split('\n');
  assert.equal(lines.length, 3, msg);
  assert.ok(lines.some((l) => l.includes('node.id')));
  assert.ok(lines.some((l) => l.includes('queue.max_lifetime') && l.includes('"soon"')));
  assert.ok(lines.some((l) => l.includes('smtp.max_recipients') && l.includes('(got 0)')));
});

test('queue.max_backoff below queue.min_backoff is an error naming both keys and the value', async () => {
  const msg = await errorFor('queue: { min_backoff: 600s, max_backoff: 300s }');
  assert.match(msg, /queue\.max_backoff: must be at least queue\.min_backoff .*\(got "300s"\)/);
  assert.ok((await loadConfig(await configFile('queue: { min_backoff: 600s, max_backoff: 600s }'))).queue.max_backoff === 600_000, 'equal is allowed');
});

test('smtp.auth_passwords without smtp.tls is an error saying to set smtp.tls', async () => {
  const msg = await errorFor('smtp: { auth_passwords: tables/passwords }');
  assert.match(msg, /smtp\.auth_passwords: .*STARTTLS.*set smtp\.tls/);
  assert.match(msg, /\(got "tables\/passwords"\)/);
  const ok = await loadConfig(await configFile('smtp: { auth_passwords: pw, tls: { cert: c.pem, key: k.pem } }'));
  assert.ok(ok.smtp.auth_passwords?.endsWith('/pw'));
});

test('invalid YAML names the file and where the problem is', async () => {
  const msg = await errorFor('smtp:\n  listen: [oops\n');
  assert.match(msg, /not valid YAML: /);
  assert.match(msg, /line \d+/);
});

test('a file that is not a mapping of sections is refused', async () => {
  assert.match(await errorFor('- node\n- smtp\n'), /top level must be a mapping/);
  assert.match(await errorFor('just text\n'), /top level must be a mapping/);
});

test('a missing file names the path and the reason', async () => {
  const missing = join(dir, 'nowhere', 'tandem.yaml');
  await assert.rejects(loadConfig(missing), (err: Error) => {
    assert.ok(err instanceof ConfigError);
    assert.equal(err.message.split(':')[0], missing);
    assert.match(err.message, /cannot read the config file: ENOENT/);
    return true;
  });
});

test('directory: defaults in ms, password file relative to the config file; more than two masters or two passwords refused', async () => {
  const file = await configFile('directory:\n  servers:\n    - { url: "ldap://127.0.0.1:389", role: master }\n    - { url: "ldap://127.0.0.2:389" }\n  base_dn: dc=example,dc=org\n  bind_password_file: ldap.secret\n', 'dir');
  const c = await loadConfig(file);
  assert.deepEqual(c.directory, {
    servers: [{ url: 'ldap://127.0.0.1:389', role: 'master' }, { url: 'ldap://127.0.0.2:389', role: 'shadow' }],
    base_dn: 'dc=example,dc=org', bind_password_file: join(dir, 'dir', 'ldap.secret'),
    connect_timeout: 1000, operation_timeout: 2000, server_backoff: 5000, cache_ttl: 60_000, negative_cache_ttl: 30_000,
    max_stale: 86_400_000, cache_max_entries: 100_000,
  });
  const three = 'directory:\n  base_dn: dc=x\n  servers:\n' + [1, 2, 3].map((i) => `    - { url: "ldap://10.0.0.${i}", role: master }\n`).join('');
  await assert.rejects(loadConfig(await configFile(three)), /directory\.servers: at most two servers can be masters/);
  await assert.rejects(loadConfig(await configFile('directory:\n  base_dn: dc=x\n  servers: [{ url: "ldap://h" }]\n  bind_password: a\n  bind_password_file: b\n')), /directory\.bind_password_file: set bind_password or bind_password_file, not both/);
  await assert.rejects(loadConfig(await configFile('directory:\n  base_dn: dc=x\n  servers: [{ url: "http://h" }]\n')), /directory\.servers\.0\.url: use ldap:\/\/host:port/);
});

test('directory sites: the own site from cluster.nodes or directory.site; sites on all servers or none, and the own one among them', async () => {
  const servers = (b = 'dc2') => `  servers:\n    - { url: "ldap://10.1.0.1", role: master, site: dc1 }\n    - { url: "ldap://10.2.0.1", role: master, site: ${b} }\n`;
  const cluster = (siteA: string) => `cluster:\n  secret: a-cluster-secret-0123456789\n  nodes:\n    - { id: a, heartbeat: "127.0.0.1:7001", site: ${siteA} }\n    - { id: b, heartbeat: "127.0.0.1:7002", site: dc2 }\n`;
  const inCluster = await loadConfig(await configFile(`${cluster('dc1')}directory:\n  base_dn: dc=x\n${servers()}`), { nodeId: 'b' });
  assert.equal(directorySite(inCluster), 'dc2', "node b's cluster site");
  assert.deepEqual(inCluster.directory!.servers[1], { url: 'ldap://10.2.0.1', role: 'master', site: 'dc2' });
  const alone = await loadConfig(await configFile(`directory:\n  base_dn: dc=x\n  site: dc1\n${servers()}`));
  assert.equal(directorySite(alone), 'dc1');
  const override = await loadConfig(await configFile(`node: { id: a }\n${cluster('dc2')}directory:\n  base_dn: dc=x\n  site: dc1\n${servers()}`));
  assert.equal(directorySite(override), 'dc1', 'directory.site wins over the cluster site');
  const noSites = await loadConfig(await configFile('directory:\n  base_dn: dc=x\n  servers: [{ url: "ldap://h" }]\n'));
  assert.equal(directorySite(noSites), undefined);
  assert.match(await errorFor(`directory:\n  base_dn: dc=x\n${servers()}`), /directory\.site: directory\.servers have sites \(dc1, dc2\): set directory\.site to this node's site/);
  assert.match(await errorFor(`directory:\n  base_dn: dc=x\n  site: dc3\n${servers()}`), /directory\.site: this node's site "dc3" \(directory\.site\) has no directory server; the servers' sites are dc1, dc2/);
  assert.match(await errorFor(`node: { id: a }\n${cluster('default')}directory:\n  base_dn: dc=x\n${servers()}`), /directory\.servers: node a's site "default" \(cluster\.nodes\[\]\.site\) has no directory server/);
  assert.match(await errorFor('directory:\n  base_dn: dc=x\n  site: dc1\n  servers:\n    - { url: "ldap://a", site: dc1 }\n    - { url: "ldap://b" }\n'), /directory\.servers\.1\.site: ldap:\/\/b has no site while others do \(dc1\)/);
  assert.match(await errorFor('directory:\n  base_dn: dc=x\n  site: dc1\n  servers: [{ url: "ldap://a" }]\n'), /directory\.site: no server in directory\.servers has a site/);
});

test('a wrong type names the line in the file and says what is wanted in plain words', async () => {
  const msg = await errorFor('# mx\nnode: { id: a }\nsmtp:\n  listen: 127.0.0.1:25\n  max_recipients: ten\n');
  assert.equal(msg.split(': ').slice(1).join(': '), 'line 5: smtp.max_recipients: must be a number, not text (got "ten")');
  assert.match(await errorFor('node:\n  id: a\nsmtp:\n  lissen: 0.0.0.0:25\n'), /line 4: smtp: unknown key\(s\) "lissen"/);
  assert.match(await errorFor('relay:\n  networks: 127.0.0.0/8\n'), /line 2: relay\.networks: must be a list, not text/);
});

test('a cluster file shared by every node (no node.id): the tools may load it, a node must be given its id', async () => {
  const secret = 's'.repeat(32);
  const shared = await configFile(`cluster:\n  secret: ${secret}\n  nodes:\n    - { id: a, heartbeat: "127.0.0.1:7001" }\n    - { id: b, heartbeat: "127.0.0.1:7002" }\n`);
  await assert.rejects(loadConfig(shared), /this node \(node\.id "node1"\) is not in cluster\.nodes; start it with --node-id/);
  const { nodeIdGiven } = await import('./load.ts');
  const tool = await loadConfig(shared, {}, { anyNode: true });
  assert.equal(nodeIdGiven(tool), false);
  const b = await loadConfig(shared, { nodeId: 'b' }, { anyNode: true });
  assert.equal(b.node.id, 'b');
  assert.equal(nodeIdGiven(b), true);
  await assert.rejects(loadConfig(shared, { nodeId: 'c' }, { anyNode: true }), /node\.id "c"\) is not in cluster\.nodes/, 'a wrong id given is still an error');
});

test('cluster.accept_secret_files are read (relative to the config file) into accept_secrets; a short one is refused with the key', async () => {
  await mkdir(join(dir, 'rot'), { recursive: true });
  await writeFile(join(dir, 'rot', 'old.secret'), 'the-old-cluster-secret-0123456789\n');
  await writeFile(join(dir, 'rot', 'short.secret'), 'short\n');
  const cluster = (files: string) => `node: { id: a }\ncluster:\n  secret: the-new-cluster-secret-0123456789\n  accept_secrets: [an-inline-accepted-secret-0123]\n  accept_secret_files: [${files}]\n  nodes:\n    - { id: a, heartbeat: "127.0.0.1:7001" }\n    - { id: b, heartbeat: "127.0.0.1:7002" }\n`;
  const file = await configFile(cluster('../old.secret'), 'rot/etc');
  const cfg = await loadConfig(file);
  assert.deepEqual(cfg.cluster!.accept_secrets, ['an-inline-accepted-secret-0123', 'the-old-cluster-secret-0123456789']);
  const message = await errorFor(cluster(`${join(dir, 'rot', 'short.secret')}`));
  assert.match(message, /cluster\.accept_secret_files: the secret in .*short\.secret is shorter than 16 characters/);
});
