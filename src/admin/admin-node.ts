/**
 * admin/admin-node.ts — what the admin API, the console and the tracking routes need of a node:
 * the admin side's own interface. TandemNode implements it (node/node.ts `adminView()`), so
 * admin/ does not import the node module, and the node's parts stay private to it.
 */
import type { Logger } from 'pino';
import type { TandemConfig } from '../config/schema.ts';
import type { Spool } from '../spool/index.ts';
import type { QueueManager } from '../qmgr/index.ts';
import type { ClusterManager } from '../cluster/index.ts';
import type { Tracker } from '../track/tracker.ts';
import type { RouterHealth } from '../router/types.ts';
import type { Metrics } from './metrics.ts';

/** The node's state as /health (and the load balancer) sees it. */
export type NodeHealth = 'starting' | 'ready' | 'draining' | 'fenced' | 'returning' | 'stopping';

export interface AdminNode {
  readonly config: TandemConfig;
  readonly logger: Logger;
  readonly metrics: Metrics;
  /** The queue manager of our spool now (a new one while the spool is held by another node). */
  readonly qmgr: QueueManager;
  readonly spool: Spool;
  readonly cluster: ClusterManager | undefined;
  /** Search over the tracking log; undefined when tracking search is off. */
  readonly tracker: Tracker | undefined;
  health(): NodeHealth;
  /** Out of the balancer (health 503, new sessions 421); deliveries go on. */
  drain(): NodeHealth;
  resume(): NodeHealth;
  /** SIGHUP's work: re-read the config and apply what can change live. */
  reload(): Promise<{ applied: string[]; restartNeeded: string[] }>;
  replicationHealth(): { holder: string; connection: string; unprotected: number } | undefined;
  directoryHealth(): RouterHealth | undefined;
}
