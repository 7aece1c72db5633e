/**
 * node/worker-ipc.ts — the messages between the node's main process and its SMTP workers
 * (smtp-workers.ts, smtp-worker-main.ts), over node:cluster's IPC channel (structured clone,
 * serialization "advanced"), and a small request/response helper used on both sides.
 *
 * main → worker: init (config, listeners, worker number), state (what the listeners may do),
 *   reload (the new config, answered when applied), stop (answered once the listeners are
 *   closed and the commits under way are done), req metrics (the worker's prom-client JSON).
 * worker → main: hello (listening for messages: send init), stopped (its last message), ready (bound addresses), listen-failed, queued (a message committed: after its
 *   commit and its fsynced `received` line, before the 250 is sent), req (mayCommit, and the
 *   client limits: connect, message, recipient, authBlocked), note (release, authFailed, counted
 *   without an answer), res.
 */
import type { TandemConfig } from '../config/schema.ts';
import type { Envelope } from '../spool/types.ts';
import type { ListenerSpec, AcceptState } from '../receiver/index.ts';

export type HostPort = { host: string; port: number };

export type ToWorker =
  | { t: 'init'; config: TandemConfig; listeners: ListenerSpec[]; worker: number; state: AcceptState }
  | { t: 'state'; state: AcceptState }
  | { t: 'stop' }
  | Request
  | Response;

export type FromWorker =
  | { t: 'hello' }
  | { t: 'stopped' }
  | { t: 'ready'; addresses: Record<string, HostPort> }
  | { t: 'listen-failed'; listener: string; code: string | undefined; message: string }
  | { t: 'queued'; queueId: string; size: number; hold: boolean; envelope?: Envelope; message?: Uint8Array }
  | { t: 'note'; op: 'connect' | 'release' | 'authFailed'; address: string }
  | Request
  | Response;

export interface Request { t: 'req'; id: number; op: string; arg?: unknown }
export interface Response { t: 'res'; id: number; value?: unknown; error?: string }

/** Requests over one IPC channel, answered by id; all pending ones fail when the channel closes. */
export class Rpc {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve(v: unknown): void; reject(e: Error): void; timer?: NodeJS.Timeout }>();

  constructor(private readonly send: (msg: Request, done: (err: Error | null) => void) => void) {}

  ask<T>(op: string, arg?: unknown, timeoutMs?: number): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      const entry: { resolve(v: unknown): void; reject(e: Error): void; timer?: NodeJS.Timeout } = { resolve: resolve as (v: unknown) => void, reject };
      if (timeoutMs !== undefined) entry.timer = setTimeout(() => this.settle({ t: 'res', id, error: `no answer to ${op} in ${timeoutMs} ms` }), timeoutMs).unref();
      this.pending.set(id, entry);
      this.send({ t: 'req', id, op, ...(arg !== undefined ? { arg } : {}) }, (err) => {
        if (err) this.settle({ t: 'res', id, error: `${op}: ${err.message}` });
      });
    });
  }

  /** An answer came in. */
  settle(res: Response): void {
    const p = this.pending.get(res.id);
    if (!p) return;
    this.pending.delete(res.id);
    clearTimeout(p.timer);
    if (res.error !== undefined) p.reject(new Error(res.error));
    else p.resolve(res.value);
  }

  /** The other side is gone. */
  failAll(why: string): void {
    for (const id of [...this.pending.keys()]) this.settle({ t: 'res', id, error: why });
  }
}

/** Answer a request with `fn`'s result (or its error). */
export async function answer(req: Request, fn: () => unknown, send: (res: Response) => void): Promise<void> {
  try {
    const value = await fn();
    send({ t: 'res', id: req.id, ...(value !== undefined ? { value } : {}) });
  } catch (err) {
    send({ t: 'res', id: req.id, error: String((err as Error)?.message ?? err) });
  }
}
