/**
 * cluster/replication — shadow copies of queue files on another node before the 250
 * (docs/replication.md): the replica the node's receiver copies through, the holder and its store
 * on the other side, where copies are placed (placement.ts) and the cluster's certificates.
 */
export { Replica, replicationTls } from './replica.ts';
export { holdersOf, originsOf, takeoverRank, sitesOf, shadowRoot } from './placement.ts';
export { makeCa, makeNodeCert, opensslMissing, type Pem } from './certs.ts';
export { ShadowStore, ShadowRefusal } from './shadow-store.ts';
export type { StoreResult, DiscardResult, ShadowEntry, OriginIdentity } from './shadow-store.ts';
export { ShadowHolder } from './holder.ts';
export type { ShadowHolderOptions } from './holder.ts';
export { ShadowClient } from './client.ts';
export type { ShadowClientOptions, CopyOutcome, ShadowPolicy, ClientState } from './client.ts';
export { spoolIdentity, SPOOL_ID_FILE } from './identity.ts';
export { REFUSAL_REASONS, SHADOW_REFUSE_REPLY, DEFAULT_MAX_COPY_BYTES } from './protocol.ts';
export type { DiscardNotice, RefusalReason } from './protocol.ts';
