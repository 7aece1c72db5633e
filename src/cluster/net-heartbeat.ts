/**
 * cluster/net-heartbeat.ts — signed UDP heartbeats between the nodes of a cluster.
 *
 * Each node binds its cluster.nodes[].heartbeat address and sends one datagram to every peer
 * each cluster.heartbeat_interval: {node, boot, seq, sent, state, queue, claims}, sealed with the
 * cluster secret (sealed.ts). A datagram is dropped and counted (by reason) when it is not
 * sealed with the secret ("malformed", "bad-signature"), names a node that is not a peer
 * ("unknown-node"), is older than what that peer already sent — an earlier boot, or a sequence
 * number already seen ("replay") — or was sent more than MAX_SKEW_MS ago by the wall clock
 * ("stale"; the nodes' clocks must agree within that, as NTP gives).
 * XXX: a captured datagram can be replayed to a node that has not seen a later one from that
 * peer (e.g. one that just started) within MAX_SKEW_MS; at worst that delays a takeover by as
 * much, since a dead peer's disk heartbeat must also be silent.
 * What can go wrong: the bind fails (address in use, not local) — start() rejects and the node
 * does not start; send errors (peer address unreachable) are ignored: silence is the signal.
 * Reads config keys: cluster.nodes[].heartbeat, cluster.heartbeat_interval.
 */
import dgram from 'node:dgram';
import { isIPv6 } from 'node:net';
import type { Sealer } from './sealed.ts';
import { UnsealError } from './sealed.ts';
import type { NetworkInfo } from './membership.ts';

export interface Heartbeat extends NetworkInfo {
  node: string;
  seq: number;
  /** Wall clock of the sender (ms), for the staleness check only. */
  sent: number;
}

export type HeartbeatRejectReason = 'malformed' | 'bad-signature' | 'unknown-node' | 'replay' | 'stale';

/** What a dropped datagram tells about its sender, for the operator (never for a decision). */
export interface RejectInfo {
  /** The configured peer whose heartbeat address sent it, or that it names (stale, replay). */
  peer?: string;
  /** The node it names when that is not a peer (unknown-node). */
  claimed?: string;
  /** Our wall clock minus the sender's (stale): how far the clocks are apart. */
  skewMs?: number;
}

const MAX_SKEW_MS = 10_000;

export class NetHeartbeat {
  private socket?: dgram.Socket;
  private seq = 0;
  private readonly lastSeen = new Map<string, { boot: number; seq: number }>();
  readonly rejected: Record<HeartbeatRejectReason, number> = { malformed: 0, 'bad-signature': 0, 'unknown-node': 0, replay: 0, stale: 0 };

  constructor(
    private readonly self: { id: string; address: { host: string; port: number } },
    private readonly peers: Array<{ id: string; address: { host: string; port: number } }>,
    private readonly sealer: Sealer,
    private readonly onHeartbeat: (hb: Heartbeat) => void,
    private readonly onReject: (reason: HeartbeatRejectReason, from: string, info: RejectInfo) => void = () => {},
    private readonly wallClock: () => number = Date.now, // the real clock: the production io's (heartbeats carry wall time)
  ) {}

  async start(): Promise<{ host: string; port: number }> {
    const socket = dgram.createSocket(isIPv6(this.self.address.host) ? 'udp6' : 'udp4');
    this.socket = socket;
    socket.on('message', (msg, rinfo) => this.receive(msg, `${rinfo.address}:${rinfo.port}`));
    socket.on('error', () => undefined);
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.bind(this.self.address.port, this.self.address.host, () => {
        socket.off('error', reject);
        resolve();
      });
    });
    const a = socket.address();
    return { host: a.address, port: a.port };
  }

  /** Send one heartbeat to every peer. */
  send(info: Omit<Heartbeat, 'node' | 'seq' | 'sent'>): void {
    const socket = this.socket;
    if (!socket) return;
    const hb: Heartbeat = { ...info, node: this.self.id, seq: ++this.seq, sent: this.wallClock() };
    const bytes = Buffer.from(this.sealer.seal(hb));
    for (const p of this.peers) socket.send(bytes, p.address.port, p.address.host, () => undefined);
  }

  close(): void {
    this.socket?.close();
    this.socket = undefined;
  }

  private receive(msg: Buffer, from: string): void {
    let hb: Heartbeat;
    try {
      hb = this.sealer.open<Heartbeat>(msg.toString('utf8'));
    } catch (err) {
      return this.reject(err instanceof UnsealError ? err.reason : 'malformed', from, { peer: this.peerAt(from) });
    }
    if (typeof hb.node !== 'string' || typeof hb.boot !== 'number' || typeof hb.seq !== 'number' || typeof hb.sent !== 'number') return this.reject('malformed', from, { peer: this.peerAt(from) });
    if (!this.peers.some((p) => p.id === hb.node)) return this.reject('unknown-node', from, { claimed: hb.node });
    const last = this.lastSeen.get(hb.node);
    if (last && (hb.boot < last.boot || (hb.boot === last.boot && hb.seq <= last.seq))) return this.reject('replay', from, { peer: hb.node });
    const skewMs = this.wallClock() - hb.sent;
    if (Math.abs(skewMs) > MAX_SKEW_MS) return this.reject('stale', from, { peer: hb.node, skewMs });
    this.lastSeen.set(hb.node, { boot: hb.boot, seq: hb.seq });
    this.onHeartbeat(hb);
  }

  private reject(reason: HeartbeatRejectReason, from: string, info: RejectInfo): void {
    this.rejected[reason]++;
    this.onReject(reason, from, info);
  }

  /** The peer whose heartbeat address is `from` ("host:port"), if any. */
  private peerAt(from: string): string | undefined {
    return this.peers.find((p) => `${p.address.host}:${p.address.port}` === from)?.id;
  }
}
