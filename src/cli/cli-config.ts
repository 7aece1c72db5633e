/**
 * cli/cli-config.ts — which configuration file and node a command means.
 *
 * The file: --config FILE, else $TANDEM_CONFIG, else /etc/tandem/tandem.yaml when it exists (so
 * commands on a server need no flag). The node: --node-id ID, else $TANDEM_NODE_ID, else node.id
 * of the file — what lets every node of a cluster share one file (docs/ha.md). Every command that
 * takes --config takes --node-id too.
 */
import { existsSync } from 'node:fs';
import type { Command } from 'commander';
import { loadConfig, type ConfigOverrides } from '../config/load.ts';
import type { TandemConfig } from '../config/schema.ts';
import { ConfigError } from '../util/errors.ts';

export const DEFAULT_CONFIG = '/etc/tandem/tandem.yaml';

export interface CliConfigOptions {
  config?: string;
  nodeId?: string;
}

/** The config file meant, or undefined when none is given and the default does not exist. */
export function configPath(opts: CliConfigOptions): string | undefined {
  return opts.config ?? (process.env.TANDEM_CONFIG || undefined) ?? (existsSync(DEFAULT_CONFIG) ? DEFAULT_CONFIG : undefined);
}

export function nodeIdOption(opts: CliConfigOptions): string | undefined {
  return opts.nodeId ?? (process.env.TANDEM_NODE_ID || undefined);
}

/** Add -c/--config and --node-id to a command. */
export function withConfigOptions(cmd: Command, what = 'configuration file (YAML)'): Command {
  return cmd
    .option('-c, --config <file>', `${what}; default $TANDEM_CONFIG, else ${DEFAULT_CONFIG}`)
    .option('--node-id <id>', 'this node\'s id in a cluster file shared by every node (node.id); default $TANDEM_NODE_ID');
}

/**
 * Load the config the command means, as a tool (a shared cluster file needs no node id) unless
 * `asNode`. Throws ConfigError; a missing file (nothing given, no default) is one too.
 */
export async function loadCliConfig(opts: CliConfigOptions, extra: ConfigOverrides = {}, asNode = false): Promise<TandemConfig> {
  const file = configPath(opts);
  if (!file) throw new ConfigError('(no file)', `give the configuration with --config FILE (or TANDEM_CONFIG); ${DEFAULT_CONFIG} does not exist`);
  const nodeId = nodeIdOption(opts);
  return loadConfig(file, { ...extra, ...(nodeId ? { nodeId } : {}) }, { anyNode: !asNode });
}
