/**
 * cli/main.ts — the `tandem` command.
 *
 *   tandem start [--config FILE] [--node-id ID] [--listen H:P] [--spool DIR] [--relay-host H:P] [--admin H:P] [--pid-file F]
 *   tandem demo [--dir DIR] [--listen H:P]      a node on an embedded default (no external server)
 *   tandem config check [FILE] [--node-id ID] [--no-connect]   validate the config and every table it names
 *   tandem config show [-n] [--json]            the effective configuration with defaults, secrets masked
 *   tandem queue list|show ID [--body]|shape|hold|release|delete|flush|requeue [ID…|ALL] [filters]
 *                                               (--admin, --config or --spool)
 *   tandem sendmail [-t] [-i] [-f SENDER] [RCPT…]  submit a message from stdin to the local node (sendmail.ts)
 *   tandem route ADDRESS… [--client IP]         how an address resolves, without sending mail (route.ts)
 *   tandem node drain|resume|health --admin URL [--token T]   take a node out of the balancer and back
 *   tandem passwd hash                          hash a password from stdin for smtp.auth_passwords
 *   tandem cluster status|fence|unfence|drain|resume NODE|handback|takeover SPOOL [--site S] [--config FILE] [--json]
 *   tandem up [--nodes N | --sites S --pairs P] [--dir DIR] [--listen H:P] [--no-haproxy]   a local cluster to try
 *   tandem dir schema|init|import|add|modify|remove|list   directory changes (dir-command.ts)
 *   tandem track [--from A] [--to A] [--since 1h] … (--config FILE | --admin URL) [--json]   message tracking
 *   tandem help [COMMAND…]   tandem --version
 *
 * The config file: --config, else $TANDEM_CONFIG, else /etc/tandem/tandem.yaml; the node id:
 * --node-id, else $TANDEM_NODE_ID, else node.id of the file (cli-config.ts). Command modules are
 * imported when their command runs, so that a short command does not load the whole node.
 *
 * Exit codes (for scripts, after sysexits.h): 0 ok; 1 the operation failed (e.g. no such
 * message); 2 usage; 69 node unreachable; 75 spool busy (a running node owns it: use --admin),
 * or directory master unavailable (retry later); 78 configuration error. `tandem sendmail` uses
 * sendmail's codes (sendmail.ts).
 */
import { readFileSync } from 'node:fs';
import { Command, Option } from 'commander';
import { EXIT } from './exit-codes.ts';
import { withConfigOptions, configPath, nodeIdOption, type CliConfigOptions } from './cli-config.ts';
import type { TandemConfig } from '../config/schema.ts';
import type { ConfigOverrides } from '../config/load.ts';
import type { TandemNode } from '../node/node.ts';

const VERSION = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;

const program = new Command('tandem')
  .description('Tandem: an active-active high-availability message switch')
  .version(VERSION, '-V, --version', 'print the version')
  .showHelpAfterError()
  .exitOverride((err) => process.exit(err.exitCode === 0 ? 0 : EXIT.USAGE));

withConfigOptions(program.command('start')
  .description('run a node in the foreground (JSON logs on stdout; SIGTERM stops, SIGHUP re-reads the config file)'))
  .option('--listen <host:port>', 'SMTP listen address (smtp.listen)')
  .option('--spool <dir>', 'spool root; the node spool is <dir>/<node id> (spool.root)')
  .option('--relay-host <host:port>', 'send all non-local mail to this smarthost (relay.host)')
  .option('--admin <host:port>', 'admin HTTP API address (admin.listen)')
  .option('--pid-file <file>', 'write the process id here while the node runs')
  .action(async (opts) => {
    const overrides: ConfigOverrides = { listen: opts.listen, spool: opts.spool, relayHost: opts.relayHost, admin: opts.admin };
    const file = configPath(opts);
    const nodeId = nodeIdOption(opts);
    const all = { ...overrides, ...(nodeId ? { nodeId } : {}) };
    const { loadConfig } = await import('../config/load.ts');
    await runNode(await loadOrExit(file, all), () => loadConfig(file, all), opts.pidFile);
  });

program.command('demo')
  .description('run a node on an embedded default: local domain example.test delivered into Maildirs')
  .option('--dir <dir>', 'where the demo keeps its config, spool and Maildirs', './var/demo')
  .option('--listen <host:port>', 'SMTP listen address', '127.0.0.1:2525')
  .option('--admin <host:port>', 'admin HTTP API address', '127.0.0.1:8025')
  .action(async (opts) => {
    const { prepareDemo } = await import('./demo.ts');
    const demo = await prepareDemo(opts.dir);
    const overrides = { listen: opts.listen, admin: opts.admin };
    const { loadConfig } = await import('../config/load.ts');
    const node = await runNode(await loadOrExit(demo.configFile, overrides), () => loadConfig(demo.configFile, overrides));
    process.stderr.write(demo.instructions(node.smtpAddress!, node.adminAddress));
  });

const configCmd = program.command('config').description('configuration tools');
withConfigOptions(configCmd.command('check [file]')
  .description('validate a configuration file and load every table it names (FILE or --config; a cluster file without node.id is checked for every node)'))
  .option('--no-connect', 'do not contact the directory servers (what a unit\'s ExecStartPre runs: a node starts while its directory is down)')
  .action(async (file: string | undefined, opts: CliConfigOptions & { connect: boolean }) => {
    const { checkConfig } = await import('./config-check.ts');
    const path = file ?? configPath(opts);
    if (!path) return usage('tandem config check: give the file (tandem config check FILE, --config FILE or TANDEM_CONFIG)');
    const nodeId = nodeIdOption(opts);
    const result = await checkConfig(path, { ...(nodeId ? { nodeId } : {}), connect: opts.connect });
    for (const line of result.lines) console.log(line);
    process.exit(result.ok ? EXIT.OK : EXIT.CONFIG);
  });
withConfigOptions(configCmd.command('show')
  .description('print the effective configuration with every default (as postconf), secrets masked; durations in ms, sizes in bytes'))
  .option('-n, --non-default', 'only the keys set in the file (as postconf -n)')
  .addOption(new Option('--json', 'machine-readable output'))
  .action(async (opts) => {
    const { runConfigShow } = await import('./config-show.ts');
    process.exit(await runConfigShow(opts));
  });

const queue = program.command('queue').description('inspect and change a queue (running node via --admin or --config; stopped node via --spool)');
const queueTarget = (cmd: Command) => withConfigOptions(cmd, 'config file: the node\'s admin address, else its spool')
  .option('--admin <url>', 'admin API of a running node (http://host:port or host:port)')
  .option('--token <token>', 'admin API bearer token (or TANDEM_ADMIN_TOKEN)')
  .option('--spool <dir>', 'a node spool folder (<root>/<node id>), when its node is stopped')
  .addOption(new Option('--json', 'machine-readable output'));
const queueFilters = (cmd: Command) => cmd
  .option('--from <sender>', 'messages from this envelope sender ("<>" for bounces)')
  .option('--to <recipient>', 'messages with this recipient still pending')
  .option('--domain <domain>', 'messages with a pending recipient in this domain')
  .option('--state <state>', 'messages in this state: incoming, active, deferred, hold')
  .option('--older-than <duration>', 'messages that arrived at least this long ago (e.g. 2h, 3d)');
queueTarget(queue.command('list').description('list queued messages'))
  .action(async (opts) => exitWith((await import('./queue-command.ts')).runQueueCommand('list', [], opts)));
queueTarget(queue.command('show <id>').description('show one message: envelope, recipients and their status, headers (as postcat)'))
  .option('--body', 'the whole message, headers and body (control characters shown escaped)')
  .action(async (id, opts) => exitWith((await import('./queue-command.ts')).runQueueCommand('show', [id], opts)));
queueTarget(queue.command('shape').description('pending recipients by destination domain and age (as qshape)'))
  .option('--state <state>', 'only messages in this state: incoming, active, deferred, hold')
  .action(async (opts) => exitWith((await import('./queue-command.ts')).runQueueCommand('shape', [], opts)));
for (const [name, desc] of [
  ['hold', 'hold messages (no delivery until released)'],
  ['release', 'release held messages'],
  ['delete', 'delete messages (no DSN is sent); more than one: asks, or --yes'],
  ['flush', 'try deferred messages now, forgetting that their destinations were unreachable (all without IDs, as postqueue -f; one as postqueue -i)'],
  ['requeue', 'route messages again now with the current tables, alias and list expansion included (as postsuper -r; after a table change and a reload)'],
] as const) {
  const cmd = queueFilters(queueTarget(queue.command(`${name} [ids...]`).description(`${desc}; IDs, ALL, or filters`)));
  if (name === 'delete') cmd.option('-y, --yes', 'delete without asking');
  cmd.action(async (ids: string[], opts) => exitWith((await import('./queue-command.ts')).runQueueCommand(name, ids, opts)));
}

program.command('sendmail')
  .description('submit a message read on stdin to the local node, as /usr/sbin/sendmail (-t -i -f SENDER, -F NAME; RCPT…); exit 75 when it cannot now')
  .helpOption(false)
  .allowUnknownOption()
  .argument('[args...]')
  .action(async (args: string[]) => exitWith((await import('./sendmail.ts')).runSendmail(args)));

withConfigOptions(program.command('route <address...>')
  .description('show how addresses resolve (tables and directory, aliases, transport, relay decision) without sending mail, as postmap -q; exit 1 when one is refused'))
  .option('--client <ip>', 'say whether this client address may relay (relay.networks)')
  .addOption(new Option('--json', 'machine-readable output'))
  .action(async (addresses: string[], opts) => exitWith((await import('./route.ts')).runRoute(addresses, opts)));

program.command('up')
  .description('bring up a local cluster on this machine: N node processes over one spool root, HAProxy in front when installed; Ctrl-C stops it')
  .option('--nodes <n>', 'how many nodes', '2')
  .option('--dir <dir>', 'where the cluster keeps its config, spools, Maildirs and logs', './var/up')
  .option('--listen <host:port>', 'the front door: HAProxy (or node a without HAProxy; the others take the next ports)', '127.0.0.1:2525')
  .option('--no-haproxy', 'do not start HAProxy even when it is installed')
  .option('--sites <n>', 'sites (1–3): with 2 or more, pairs of nodes per site, replicated storage with a copy in the next site, HAProxy per site (--listen, then the next ports), etcd as witness when installed (docs/sites.md)', '1')
  .option('--pairs <n>', 'with --sites: pairs of nodes per site', '1')
  .action(async (opts) => (await import('./up.ts')).runUp(opts));

const cluster = program.command('cluster').description('a cluster of nodes: status and operator actions (nodes found in cluster.nodes of the config)');
const clusterOpts = (cmd: Command) => withConfigOptions(cmd, 'the cluster config file (cluster.nodes with their admin addresses)')
  .option('--token <token>', 'admin API bearer token (or TANDEM_ADMIN_TOKEN; default admin.token of the config)')
  .addOption(new Option('--json', 'machine-readable output'));
clusterOpts(cluster.command('status').description('every node (alive / suspect / dead / fenced / draining), heartbeat ages, queue depths, who delivers which spool, epochs'))
  .action(async (opts) => exitWith((await import('./cluster-command.ts')).runClusterStatus(opts)));
const clusterActions: Array<[action: 'fence' | 'unfence' | 'drain' | 'resume' | 'handback' | 'takeover', arg: string, description: string]> = [
  ['fence', '[node]', 'take a node out by hand: it refuses mail and stops delivering; a peer takes its spool over'],
  ['unfence', '[node]', 'let a fenced node back in (its spool comes back to it by handback)'],
  ['drain', '[node]', 'stop a node taking new mail (out of the balancer, new sessions 421); its queue is still delivered'],
  ['resume', '[node]', 'let a drained node take mail again'],
  ['handback', '[spool]', 'make the node holding SPOOL stop its secondary and release the claim now'],
  ['takeover', '[spool]', 'replicated storage: make a holder of SPOOL\'s copies deliver them now (its node dead; e.g. a lost site without a witness)'],
];
for (const [action, arg, description] of clusterActions) {
  clusterOpts(cluster.command(`${action} ${arg}`).description(description))
    .option('--site <site>', `every ${arg === '[node]' ? 'node' : 'spool'} of this site (cluster.nodes[].site), one after the other`)
    .action(async (name, opts) => exitWith((await import('./cluster-command.ts')).runClusterAction(action, name, opts)));
}

program.command('track')
  .description('where is a message? search the tracking logs of every node of the cluster; one timeline per message')
  .option('--from <addr>', 'sender: an address, or a domain (example.org or @example.org)')
  .option('--to <addr>', 'recipient (final or original): an address, or a domain')
  .option('--queue-id <id>', 'queue id')
  .option('--message-id <id>', 'Message-ID header (with or without <>)')
  .option('--outcome <event>', 'messages that had this event: delivered, deferred, bounced, expired, held, released, deleted, ...')
  .option('--since <time>', 'events since: a duration back from now (1h, 2d) or an ISO time')
  .option('--until <time>', 'events until: a duration back from now or an ISO time')
  .option('--limit <n>', 'at most this many messages (default 100)')
  .option('-c, --config <file>', 'the cluster config (asks the first node of cluster.nodes that answers)')
  .option('--admin <url>', 'ask this node (http(s)://host:port or host:port)')
  .option('--token <token>', 'admin API bearer token (or TANDEM_ADMIN_TOKEN; default admin.token of the config)')
  .addOption(new Option('--json', 'machine-readable output'))
  .action(async (opts) => exitWith((await import('./track-command.ts')).runTrackCommand(opts)));

const nodeCmd = program.command('node').description('a running node and its load balancer: drain, resume, health');
for (const [name, desc] of [
  ['drain', 'stop taking new mail (health 503 so the balancer removes the node, new sessions 421); deliveries go on'],
  ['resume', 'take new mail again after a drain'],
  ['health', 'the node\'s health as the balancer sees it (exit 0 only when ready)'],
] as const) {
  nodeCmd.command(name).description(desc)
    .option('--admin <url>', 'admin API of the node (http://host:port or host:port)')
    .option('--token <token>', 'admin API bearer token (or TANDEM_ADMIN_TOKEN)')
    .addOption(new Option('--json', 'machine-readable output'))
    .action(async (opts) => exitWith((await import('./node-command.ts')).runNodeCommand(name, opts)));
}

program.command('passwd')
  .description('password tools for smtp.auth_passwords')
  .command('hash')
  .description('read a password on stdin, print its scrypt hash for the password table')
  .action(async () => {
    const chunks: Buffer[] = [];
    for await (const c of process.stdin) chunks.push(c as Buffer);
    const pw = Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '');
    if (!pw) return usage('no password on stdin');
    const { hashPassword } = await import('../router/index.ts');
    console.log(await hashPassword(pw));
  });

const dir = program.command('dir').description('directory-based configuration: schema, base entries, import, and changes to domains, mailboxes, aliases, lists, routes');
const dirKinds = 'KIND: domain | mailbox | alias | list | route';
for (const [name, usageText, desc] of [
  ['schema', '', 'print the Tandem LDAP schema (slapd.conf form; --ldif: cn=config form)'],
  ['init', '', 'create the base entry and ou=domains, people, aliases, lists, routes on the master'],
  ['import', '', 'write the table files and domain lists of the config into the directory'],
  ['add', '<kind> <key> [values...]', `add an entry (${dirKinds}); alias/list values are addresses, a route's is a transport`],
  ['modify', '<kind> <key> [values...]', `replace an entry's values (${dirKinds})`],
  ['remove', '<kind> <key>', `remove an entry (${dirKinds})`],
  ['list', '[kind]', 'list entries (all kinds, or one)'],
] as const) {
  const cmd = dir.command(usageText ? `${name} ${usageText}` : name).description(desc);
  if (name === 'schema') cmd.option('--ldif', 'cn=config LDIF form');
  else withConfigOptions(cmd, 'node configuration with a directory: section');
  if (name === 'list') cmd.option('--json', 'machine-readable output');
  if (name === 'add' || name === 'modify') {
    cmd.option('--relay', 'a relay domain rather than a local one (domain)')
      .option('--maildir <path>', 'Maildir folder, relative to local.maildir_root (mailbox)')
      .option('--mail-host <host>', 'deliver by SMTP to this host instead (mailbox)');
  }
  cmd.action(async (...args: any[]) => {
    const command = args[args.length - 1] as Command;
    const opts = command.opts();
    const { runDirCommand } = await import('./dir-command.ts');
    process.exit(await runDirCommand(name, command.args as string[], { ...opts, config: configPath(opts), nodeId: nodeIdOption(opts) }));
  });
}

function usage(message: string): never {
  console.error(message);
  process.exit(EXIT.USAGE);
}

async function exitWith(code: Promise<number>): Promise<never> {
  process.exit(await code);
}

async function loadOrExit(file: string | undefined, overrides: ConfigOverrides): Promise<TandemConfig> {
  const [{ loadConfig }, { ConfigError }] = await Promise.all([import('../config/load.ts'), import('../util/errors.ts')]);
  try {
    return await loadConfig(file, overrides);
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(`tandem: configuration error in ${err.message}`);
      process.exit(EXIT.CONFIG);
    }
    throw err;
  }
}

/**
 * Start a node with JSON logs on stdout and wire the signals: SIGTERM/SIGINT stop it, SIGHUP
 * re-reads the config file (`load`) and applies what can change live (TandemNode.reload).
 */
async function runNode(config: TandemConfig, load: () => Promise<TandemConfig>, pidFile?: string): Promise<TandemNode> {
  const [{ pino }, { TandemNode }, { DuplicateNodeIdError }, { writeFile, unlink }] = await Promise.all([import('pino'), import('../node/node.ts'), import('../cluster/index.ts'), import('node:fs/promises')]);
  const logger = pino({ level: config.log.level, base: { node: config.node.id }, timestamp: pino.stdTimeFunctions.isoTime });
  // The signals are wired before the node starts: a SIGTERM that comes right after the `ready`
  // line (tandem up's Ctrl-C, a supervisor) must stop the node gracefully, not meet the default
  // action and kill it. A stop signalled during the start waits for the start to be through.
  let node: TandemNode | undefined;
  let started!: (n: TandemNode) => void;
  const running = new Promise<TandemNode>((resolve) => { started = resolve; });
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ event: 'signal', signal }, `${signal}: stopping`);
    const force = setTimeout(() => {
      logger.error({ event: 'stop-timeout' }, 'graceful stop took over 60 s; exiting (queued mail is safe in the spool)');
      process.exit(EXIT.FAILED);
    }, 60_000);
    force.unref();
    await (await running).stop();
    if (pidFile) await unlink(pidFile).catch(() => undefined);
    process.exit(EXIT.OK);
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
  process.on('SIGHUP', () => {
    node?.reload().catch((err) => logger.error({ event: 'reload-failed', err: String(err.message ?? err) }, `reload failed, old configuration kept: ${err.message ?? err}`));
  });
  // written before the node says "ready": whoever waits for that line finds this process's pid
  // here, not a pid file left by an earlier run (tandem up stops nodes restarted by hand by it)
  if (pidFile) await writeFile(pidFile, `${process.pid}\n`);
  try {
    node = await TandemNode.start(config, logger, load);
  } catch (err) {
    if (pidFile) await unlink(pidFile).catch(() => undefined);
    logger.fatal({ event: 'start-failed', err: String((err as Error)?.message ?? err) }, `cannot start: ${(err as Error)?.message ?? err}`);
    process.exitCode = err instanceof DuplicateNodeIdError ? EXIT.CONFIG : (err as { code?: string })?.code === 'SPOOL_LOCKED' ? EXIT.TEMPFAIL : EXIT.FAILED;
    await new Promise((r) => setTimeout(r, 50));
    process.exit();
  }
  started(node);
  return node;
}

/** `tandem help a b` is `tandem a b --help` (commander's own help command knows one level only). */
const argv = [...process.argv];
if (argv[2] === 'help' && argv.length > 3) argv.splice(2, 1, ...argv.splice(3), '--help');

program.parseAsync(argv).catch((err) => {
  console.error(`tandem: ${err?.message ?? err}`);
  process.exit(EXIT.FAILED);
});
