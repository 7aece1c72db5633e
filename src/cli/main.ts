/**
 * cli/main.ts — the `tandem` command.
 *
 *   tandem start --config FILE [--node-id ID] [--listen H:P] [--spool DIR] [--relay-host H:P] [--admin H:P]
 *   tandem demo [--dir DIR] [--listen H:P]      a node on an embedded default (no external server)
 *   tandem config check FILE                    validate the config and every table it names
 *   tandem queue list|show ID|hold ID|release ID|delete ID|flush   (--admin, --config or --spool)
 *   tandem node drain|resume|health --admin URL [--token T]   take a node out of the balancer and back
 *   tandem passwd hash                          hash a password from stdin for smtp.auth_passwords
 *   tandem cluster status|fence NODE|unfence NODE|handback SPOOL --config FILE [--json]
 *   tandem up [--nodes N] [--dir DIR] [--listen H:P] [--no-haproxy]   a local cluster to try
 *   tandem dir schema|init|import|add|modify|remove|list   directory changes (dir-command.ts)
 *
 * Exit codes (for scripts, after sysexits.h): 0 ok; 1 the operation failed (e.g. no such
 * message); 2 usage; 69 node unreachable; 75 spool busy (a running node owns it: use --admin),
 * or directory master unavailable (retry later); 78 configuration error.
 */
import { Command, Option } from 'commander';
import { pino } from 'pino';
import { loadConfig, type ConfigOverrides } from '../config/load.ts';
import { ConfigError } from '../util/errors.ts';
import { TandemNode } from '../node/node.ts';
import { runQueueCommand } from './queue-command.ts';
import { runNodeCommand } from './node-command.ts';
import { checkConfig } from './config-check.ts';
import { prepareDemo } from './demo.ts';
import { hashPassword } from '../router/index.ts';
import { EXIT } from './exit-codes.ts';
import { SpoolLockedError } from '../spool/index.ts';
import { runClusterStatus, runClusterAction } from './cluster-command.ts';
import { runUp } from './up.ts';
import { runDirCommand } from './dir-command.ts';


const program = new Command('tandem')
  .description('Tandem: an active-active high-availability message switch')
  .showHelpAfterError()
  .exitOverride((err) => process.exit(err.exitCode === 0 ? 0 : EXIT.USAGE));

program.command('start')
  .description('run a node in the foreground (JSON logs on stdout; SIGTERM stops, SIGHUP reloads tables)')
  .option('-c, --config <file>', 'configuration file (YAML)')
  .option('--node-id <id>', 'node id (node.id)')
  .option('--listen <host:port>', 'SMTP listen address (smtp.listen)')
  .option('--spool <dir>', 'spool root; the node spool is <dir>/<node id> (spool.root)')
  .option('--relay-host <host:port>', 'send all non-local mail to this smarthost (relay.host)')
  .option('--admin <host:port>', 'admin HTTP API address (admin.listen)')
  .action(async (opts) => {
    const overrides: ConfigOverrides = { nodeId: opts.nodeId, listen: opts.listen, spool: opts.spool, relayHost: opts.relayHost, admin: opts.admin };
    await runNode(await configOrExit(opts.config, overrides));
  });

program.command('demo')
  .description('run a node on an embedded default: local domain example.test delivered into Maildirs')
  .option('--dir <dir>', 'where the demo keeps its config, spool and Maildirs', './var/demo')
  .option('--listen <host:port>', 'SMTP listen address', '127.0.0.1:2525')
  .option('--admin <host:port>', 'admin HTTP API address', '127.0.0.1:8025')
  .action(async (opts) => {
    const demo = await prepareDemo(opts.dir);
    const config = await configOrExit(demo.configFile, { listen: opts.listen, admin: opts.admin });
    const node = await runNode(config);
    const smtp = node.smtpAddress!;
    process.stderr.write(demo.instructions(smtp, node.adminAddress));
  });

const configCmd = program.command('config').description('configuration tools');
configCmd.command('check <file>')
  .description('validate a configuration file and load every table it names')
  .action(async (file) => {
    const result = await checkConfig(file);
    for (const line of result.lines) console.log(line);
    process.exit(result.ok ? EXIT.OK : EXIT.CONFIG);
  });

const queue = program.command('queue').description('inspect and change a queue (running node via --admin or --config; stopped node via --spool)');
const queueTarget = (cmd: Command) => cmd
  .option('-c, --config <file>', 'config file: use its admin.listen, else its spool')
  .option('--admin <url>', 'admin API of a running node (http://host:port or host:port)')
  .option('--token <token>', 'admin API bearer token (or TANDEM_ADMIN_TOKEN)')
  .option('--spool <dir>', 'a node spool folder (<root>/<node id>), when its node is stopped')
  .addOption(new Option('--json', 'machine-readable output'));
for (const [name, desc, needsId] of [
  ['list', 'list queued messages', false],
  ['show', 'show one message: envelope, recipients and their status', true],
  ['hold', 'hold a message (no delivery until released)', true],
  ['release', 'release a held message', true],
  ['delete', 'delete a message (no DSN is sent)', true],
  ['flush', 'try every deferred message now', false],
] as const) {
  const cmd = queue.command(needsId ? `${name} <id>` : name).description(desc);
  queueTarget(cmd).action(async (...args: any[]) => {
    const id = needsId ? (args[0] as string) : undefined;
    const opts = args[needsId ? 1 : 0];
    process.exit(await runQueueCommand(name, id, opts));
  });
}

program.command('up')
  .description('bring up a local cluster on this machine: N node processes over one spool root, HAProxy in front when installed; Ctrl-C stops it')
  .option('--nodes <n>', 'how many nodes', '2')
  .option('--dir <dir>', 'where the cluster keeps its config, spools, Maildirs and logs', './var/up')
  .option('--listen <host:port>', 'the front door: HAProxy (or node a without HAProxy; the others take the next ports)', '127.0.0.1:2525')
  .option('--no-haproxy', 'do not start HAProxy even when it is installed')
  .action(async (opts) => runUp(opts));

const cluster = program.command('cluster').description('a cluster of nodes: status and operator actions (nodes found in --config cluster.nodes)');
const clusterOpts = (cmd: Command) => cmd
  .requiredOption('-c, --config <file>', 'the cluster config file (cluster.nodes with their admin addresses)')
  .option('--token <token>', 'admin API bearer token (or TANDEM_ADMIN_TOKEN; default admin.token of the config)')
  .addOption(new Option('--json', 'machine-readable output'));
clusterOpts(cluster.command('status').description('every node (alive / suspect / dead / fenced / draining), heartbeat ages, queue depths, who delivers which spool, epochs'))
  .action(async (opts) => process.exit(await runClusterStatus(opts)));
clusterOpts(cluster.command('fence <node>').description('take a node out by hand: it refuses mail and stops delivering; a peer takes its spool over'))
  .action(async (node, opts) => process.exit(await runClusterAction('fence', node, opts)));
clusterOpts(cluster.command('unfence <node>').description('let a fenced node back in (its spool comes back to it by handback)'))
  .action(async (node, opts) => process.exit(await runClusterAction('unfence', node, opts)));
clusterOpts(cluster.command('handback <spool>').description('make the node holding SPOOL stop its secondary and release the claim now'))
  .action(async (spool, opts) => process.exit(await runClusterAction('handback', spool, opts)));

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
    .action(async (opts) => process.exit(await runNodeCommand(name, opts)));
}

program.command('passwd')
  .description('password tools for smtp.auth_passwords')
  .command('hash')
  .description('read a password on stdin, print its scrypt hash for the password table')
  .action(async () => {
    const chunks: Buffer[] = [];
    for await (const c of process.stdin) chunks.push(c as Buffer);
    const pw = Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '');
    if (!pw) { console.error('no password on stdin'); process.exit(EXIT.USAGE); }
    console.log(await hashPassword(pw));
  });

const dir = program.command('dir').description('directory-based configuration: schema, base entries, import, and changes to domains, mailboxes, aliases, lists, routes');
const dirKinds = 'KIND: domain | mailbox | alias | list | route';
for (const [name, usage, desc] of [
  ['schema', '', 'print the Tandem LDAP schema (slapd.conf form; --ldif: cn=config form)'],
  ['init', '', 'create the base entry and ou=domains, people, aliases, lists, routes on the master'],
  ['import', '', 'write the table files and domain lists of the config into the directory'],
  ['add', '<kind> <key> [values...]', `add an entry (${dirKinds}); alias/list values are addresses, a route's is a transport`],
  ['modify', '<kind> <key> [values...]', `replace an entry's values (${dirKinds})`],
  ['remove', '<kind> <key>', `remove an entry (${dirKinds})`],
  ['list', '[kind]', 'list entries (all kinds, or one)'],
] as const) {
  const cmd = dir.command(usage ? `${name} ${usage}` : name).description(desc)
    .option('-c, --config <file>', 'node configuration with a directory: section')
    .option('--json', 'machine-readable output (list)')
    .option('--ldif', 'cn=config LDIF form (schema)')
    .option('--relay', 'a relay domain rather than a local one (domain)')
    .option('--maildir <path>', 'Maildir folder, relative to local.maildir_root (mailbox)')
    .option('--mail-host <host>', 'deliver by SMTP to this host instead (mailbox)');
  cmd.action(async (...args: any[]) => {
    const command = args[args.length - 1] as Command;
    const positional = (command.args as string[]);
    process.exit(await runDirCommand(name, positional, command.opts()));
  });
}

async function configOrExit(file: string | undefined, overrides: ConfigOverrides) {
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

/** Start a node with JSON logs on stdout and wire the signals. */
async function runNode(config: Awaited<ReturnType<typeof loadConfig>>): Promise<TandemNode> {
  const logger = pino({ level: config.log.level, base: { node: config.node.id }, timestamp: pino.stdTimeFunctions.isoTime });
  let node: TandemNode;
  try {
    node = await TandemNode.start(config, logger);
  } catch (err) {
    logger.fatal({ event: 'start-failed', err: String((err as Error)?.message ?? err) }, `cannot start: ${(err as Error)?.message ?? err}`);
    process.exitCode = err instanceof SpoolLockedError ? EXIT.TEMPFAIL : EXIT.FAILED;
    await new Promise((r) => setTimeout(r, 50));
    process.exit();
  }
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
    await node.stop();
    process.exit(EXIT.OK);
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
  process.on('SIGHUP', () => {
    node.reload().catch((err) => logger.error({ event: 'reload-failed', err: String(err.message ?? err) }, `reload failed, old tables kept: ${err.message ?? err}`));
  });
  return node;
}

program.parseAsync(process.argv).catch((err) => {
  console.error(`tandem: ${err?.message ?? err}`);
  process.exit(EXIT.FAILED);
});
