/**
 * cluster/cluster-metrics.ts — the cluster's Prometheus metrics, read from the cluster
 * manager's status at each scrape.
 *
 * Names:
 *   tandem_cluster_peer_status{peer,status}           1 for the peer's current status
 *   tandem_cluster_heartbeat_age_seconds{peer,kind}   kind = network | disk
 *   tandem_cluster_fenced                             1 while this node is fenced
 *   tandem_cluster_claims_held                        spools this node delivers for dead nodes
 *   tandem_cluster_secondary_queue_messages{spool,state}
 *   tandem_cluster_takeovers_total, tandem_cluster_handbacks_total,
 *   tandem_cluster_claims_broken_total, tandem_cluster_fences_total
 *   tandem_cluster_rejected_total{kind,reason}        forged, replayed or stale heartbeats/claims
 *   tandem_cluster_config_faults{kind}                configuration faults in force (secret-mismatch, …)
 * Replicated storage only:
 *   tandem_replication_unprotected_messages           accepted with one copy (holder unreachable, policy accept)
 *   tandem_replication_holder_up                      1 while the connection to our shadow holder is up
 *   tandem_replication_copies_held{origin}            copies this node keeps for each origin
 *   tandem_replication_discard_lag_seconds{quantile}  discard notice lag (0.5, 0.99 of recent batches)
 *   tandem_replication_copies_total{result}           copies made (ok) and not made (failed)
 */
import client from 'prom-client';
import type { ClusterStatus } from './cluster-manager.ts';
import type { FaultKind } from './cluster-faults.ts';

const STATUSES = ['alive', 'suspect', 'draining', 'fenced', 'unauthenticated', 'dead'];
const FAULT_KINDS: FaultKind[] = ['secret-mismatch', 'clock-skew', 'unknown-node', 'contested-claim', 'lock-taken'];

export function registerClusterMetrics(registry: client.Registry, status: () => ClusterStatus): void {
  const gauge = (name: string, help: string, labelNames: string[], fill: (g: client.Gauge, s: ClusterStatus) => void) =>
    new client.Gauge({ name, help, labelNames, registers: [registry], collect() { this.reset(); fill(this, status()); } });
  gauge('tandem_cluster_peer_status', 'Peer status as this node sees it (1 = current)', ['peer', 'status'], (g, s) => {
    for (const p of s.peers) for (const st of STATUSES) g.set({ peer: p.id, status: st }, p.status.type === st ? 1 : 0);
  });
  gauge('tandem_cluster_heartbeat_age_seconds', 'Time since the peer last beat', ['peer', 'kind'], (g, s) => {
    for (const p of s.peers) {
      g.set({ peer: p.id, kind: 'network' }, p.netAgeMs / 1000);
      g.set({ peer: p.id, kind: 'disk' }, p.diskAgeMs / 1000);
    }
  });
  gauge('tandem_cluster_config_faults', 'Configuration faults between the nodes in force, by kind (docs/ha.md "Configuration faults")', ['kind'], (g, s) => {
    for (const kind of FAULT_KINDS) g.set({ kind }, s.faults.filter((f) => f.kind === kind).length);
  });
  gauge('tandem_cluster_fenced', '1 while this node is fenced', [], (g, s) => g.set(s.fenced ? 1 : 0));
  gauge('tandem_cluster_claims_held', 'Spools of other nodes this node delivers', [], (g, s) => g.set(s.secondaries.length));
  gauge('tandem_cluster_secondary_queue_messages', 'Messages in the queues of this node\'s secondary processes', ['spool', 'state'], (g, s) => {
    for (const sec of s.secondaries) for (const [state, n] of Object.entries(sec.queue)) g.set({ spool: sec.spool, state }, n);
  });
  gauge('tandem_replication_unprotected_messages', 'Messages accepted with one copy only (shadow holder unreachable)', [], (g, s) => { if (s.replication) g.set(s.replication.unprotected); });
  gauge('tandem_replication_holder_up', '1 while the connection to this node\'s shadow holder is up', [], (g, s) => { if (s.replication) g.set(s.replication.connection === 'up' ? 1 : 0); });
  gauge('tandem_replication_copies_held', 'Copies this node keeps for other nodes', ['origin'], (g, s) => {
    for (const [origin, n] of Object.entries(s.replication?.holding ?? {})) g.set({ origin }, n);
  });
  gauge('tandem_replication_discard_lag_seconds', 'Time from a delivery to the holder applying its discard notice (recent batches)', ['quantile'], (g, s) => {
    const lag = s.replication?.discardLagMs;
    if (lag?.p50 !== undefined) g.set({ quantile: '0.5' }, lag.p50 / 1000);
    if (lag?.p99 !== undefined) g.set({ quantile: '0.99' }, lag.p99 / 1000);
  });
  gauge('tandem_replication_copies_total', 'Shadow copies made (ok) and not made (failed) since start', ['result'], (g, s) => {
    if (!s.replication) return;
    g.set({ result: 'ok' }, s.replication.copied);
    g.set({ result: 'failed' }, s.replication.copyFailures);
  });
  const counter = (name: string, help: string, key: keyof ClusterStatus['counters']) =>
    new client.Counter({ name, help, registers: [registry], collect() { this.reset(); this.inc(status().counters[key]); } });
  counter('tandem_cluster_takeovers_total', 'Spools this node claimed from dead nodes', 'takeovers');
  counter('tandem_cluster_handbacks_total', 'Spools this node handed back', 'handbacks');
  counter('tandem_cluster_claims_broken_total', 'Claims on this node\'s spool broken because their holder was dead', 'claimsBroken');
  counter('tandem_cluster_fences_total', 'Times this node fenced itself', 'fences');
  new client.Counter({
    name: 'tandem_cluster_rejected_total', help: 'Heartbeats and claim records dropped (forged, replayed, stale)', labelNames: ['kind', 'reason'], registers: [registry],
    collect() {
      this.reset();
      const s = status();
      for (const [reason, n] of Object.entries(s.rejected.heartbeats)) this.inc({ kind: 'heartbeat', reason }, n);
      this.inc({ kind: 'disk-heartbeat', reason: 'bad-signature' }, s.rejected.diskHeartbeats);
      this.inc({ kind: 'claim', reason: 'bad-signature' }, s.rejected.claims);
    },
  });
}
