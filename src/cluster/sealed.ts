/**
 * cluster/sealed.ts — signed cluster records: heartbeats (network and disk) and spool claims
 * carry an HMAC-SHA256 of their JSON with the cluster secret, so that a process without the
 * secret can neither forge nor alter them.
 *
 * Exports: Sealer (seal, open), UnsealError.
 * Wire form: "<hex hmac> <json>" — one line, the MAC over the JSON bytes exactly as sent.
 * What can go wrong: open() throws UnsealError with a stable `reason` ("malformed",
 * "bad-signature") that callers count in metrics; nothing else is trusted from such input.
 * Replay protection is the callers' business (sequence numbers, epochs).
 * Reads config key: cluster.secret.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';

export type UnsealReason = 'malformed' | 'bad-signature';

export class UnsealError extends Error {
  constructor(readonly reason: UnsealReason, message: string) {
    super(message);
    this.name = 'UnsealError';
  }
}

const MAC_HEX = 64;

export class Sealer {
  private readonly key: Buffer;

  constructor(secret: string) {
    this.key = Buffer.from(secret, 'utf8');
  }

  seal(record: object): string {
    const json = JSON.stringify(record);
    return `${this.mac(json)} ${json}`;
  }

  /** The record inside `text`, if its MAC is right; throws UnsealError otherwise. */
  open<T = Record<string, unknown>>(text: string): T {
    const cut = text.indexOf(' ');
    if (cut !== MAC_HEX || !/^[0-9a-f]+$/.test(text.slice(0, cut))) throw new UnsealError('malformed', 'not a sealed record');
    const json = text.slice(cut + 1).replace(/\n$/, '');
    const given = Buffer.from(text.slice(0, cut), 'hex');
    if (!timingSafeEqual(given, Buffer.from(this.mac(json), 'hex'))) throw new UnsealError('bad-signature', 'signature does not match the cluster secret');
    let value: unknown;
    try {
      value = JSON.parse(json);
    } catch {
      throw new UnsealError('malformed', 'signed but not JSON');
    }
    if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new UnsealError('malformed', 'signed but not a JSON object');
    return value as T;
  }

  private mac(json: string): string {
    return createHmac('sha256', this.key).update(json, 'utf8').digest('hex');
  }
}
