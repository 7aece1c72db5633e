/**
 * cluster/index.ts — the cluster package's public surface: the manager that runs heartbeats,
 * fencing, claims and takeovers (cluster-manager.ts), its metrics, replicated storage
 * (replication/: the replica, placement of copies, the cluster's certificates, the shadow
 * holder), the etcd witness and the sealed messages nodes exchange.
 */
export { ClusterManager, DuplicateNodeIdError } from './cluster-manager.ts';
export type { ClusterStatus, FenceReason } from './cluster-manager.ts';
export type { ClusterFault } from './cluster-faults.ts';
export { registerClusterMetrics } from './cluster-metrics.ts';
export { Replica, replicationTls, holdersOf, makeCa, makeNodeCert, opensslMissing, type Pem, ShadowHolder, ShadowStore } from './replication/index.ts';
export { EtcdWitness, WitnessError, type EtcdWitnessOptions, type WitnessEvent } from './witness/etcd-witness.ts';
export { Sealer } from './sealed.ts';
