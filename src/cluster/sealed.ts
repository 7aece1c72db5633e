/**
 * cluster/sealed.ts — signed cluster records: heartbeats (network and disk) and spool claims
 * carry an HMAC-SHA256 of their JSON with the cluster secret, so that a process without the
 * secret can neither forge nor alter them.
 *
 * Wire form: "<hex hmac> <json>" — one line, the MAC over the JSON bytes exactly as sent.
 * What can go wrong: open() throws UnsealError with a stable `reason` ("malformed",
 * "bad-signature") that callers count in metrics; nothing else is trusted from such input.
 * Replay protection is the callers' business (sequence numbers, epochs).
 * Rotation: records are sealed with `cluster.secret` only, and opened with it or any of
 * `cluster.accept_secrets` (docs/ha.md "Rotating the cluster secret"); `openedWithAccepted`
 * counts the records that needed an accepted one (0 for a while: every peer has the new secret).
 * Reads config keys: cluster.secret, cluster.accept_secrets.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { TandemError } from '../util/errors.ts';

export type UnsealReason = 'malformed' | 'bad-signature';

export class UnsealError extends TandemError {
  readonly code = 'CLUSTER_UNSEAL';
  constructor(readonly reason: UnsealReason, message: string) {
    super(message);
    this.name = 'UnsealError';
  }
}

const MAC_HEX = 64;

export class Sealer {
  private readonly key: Buffer;
  private readonly accepted: Buffer[];
  /** Records that opened only with one of the accepted (not the signing) secrets. */
  openedWithAccepted = 0;

  constructor(secret: string, accepted: readonly string[] = []) {
    this.key = Buffer.from(secret, 'utf8');
    this.accepted = accepted.map((s) => Buffer.from(s, 'utf8'));
  }

  seal(record: object): string {
    const json = JSON.stringify(record);
    return `${mac(this.key, json)} ${json}`;
  }

  /** The record inside `text`, if its MAC is right; throws UnsealError otherwise. */
  open<T = Record<string, unknown>>(text: string): T {
    const cut = text.indexOf(' ');
    if (cut !== MAC_HEX || !/^[0-9a-f]+$/.test(text.slice(0, cut))) throw new UnsealError('malformed', 'not a sealed record');
    const json = text.slice(cut + 1).replace(/\n$/, '');
    const given = Buffer.from(text.slice(0, cut), 'hex');
    const matches = (key: Buffer) => timingSafeEqual(given, Buffer.from(mac(key, json), 'hex'));
    if (!matches(this.key)) {
      if (!this.accepted.some(matches)) throw new UnsealError('bad-signature', 'signature does not match the cluster secret');
      this.openedWithAccepted++;
    }
    let value: unknown;
    try {
      value = JSON.parse(json);
    } catch {
      throw new UnsealError('malformed', 'signed but not JSON');
    }
    if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new UnsealError('malformed', 'signed but not a JSON object');
    return value as T;
  }
}

function mac(key: Buffer, json: string): string {
  return createHmac('sha256', key).update(json, 'utf8').digest('hex');
}

/** The sealer of a cluster config: signs with `secret`, opens with it or an accepted one. */
export function clusterSealer(c: { secret?: string; accept_secrets?: readonly string[] }): Sealer {
  return new Sealer(c.secret!, c.accept_secrets ?? []);
}
