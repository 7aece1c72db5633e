/**
 * cluster/standby-warmup.ts — the standby secondary's rehearsal: one message delivered, by the
 * code a takeover runs, before the standby says it is ready.
 *
 * Exports: warmDeliveryPath.
 *
 * A standby has its modules loaded but has run none of their code: V8 compiles each function
 * on its first call, and a takeover's first delivery paid for the spool scan, the queue
 * manager, the SMTP client (nodemailer) and the queue file's removal all at once, in a process
 * that gets a small share of a busy machine's CPU. Here the standby runs that path once, off the
 * takeover path: a spool in a fresh temporary folder, one small message committed to it, a
 * QueueManager that scans it and hands it to the SMTP channel, an SMTP server (smtp-server) in
 * this process on 127.0.0.1, port 0, that accepts it, and the queue file removed. Then
 * everything is closed and the folder removed. It touches no real spool, no lock, no claim, no
 * tracking log and no network beyond the loopback connection to itself.
 *
 * What can go wrong: nothing that matters — any failure (no loopback, a full /tmp) is reported
 * to `onError` and the standby is ready all the same, only colder. Bounded by WARMUP_LIMIT_MS.
 * A standby killed mid-rehearsal (the node's group killed) leaves its folder in the temp dir
 * (`tandem-standby-warmup-*`, a few KiB).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { SMTPServer } from 'smtp-server';
import { configSchema } from '../config/schema.ts';
import { Spool } from '../spool/index.ts';
import { ChannelSet } from '../channels/index.ts';
import { QueueManager } from '../qmgr/index.ts';
import { TrackingLog } from '../track/tracking-log.ts';
import type { Route, Router } from '../router/types.ts';

/** The rehearsal gives up after this long (a standby is ready regardless). */
const WARMUP_LIMIT_MS = 10_000;

const MESSAGE = Buffer.from([
  'From: <warmup@standby.invalid>',
  'To: <warmup@standby.invalid>',
  'Subject: standby warm-up',
  'Message-ID: <warmup@standby.invalid>',
  '',
  'The standby secondary rehearses a delivery before it is needed.',
  '',
].join('\r\n'));

/**
 * Deliver one message through spool → queue manager → SMTP channel → this process's own server.
 * Resolves true when the server had it and the queue manager was done with it (its file removed).
 */
export async function warmDeliveryPath(onError: (err: Error) => void): Promise<boolean> {
  const dir = await mkdtemp(path.join(tmpdir(), 'tandem-standby-warmup-'));
  let received!: () => void;
  const accepted = new Promise<void>((resolve) => { received = resolve; });
  const server = new SMTPServer({
    authOptional: true, disabledCommands: ['STARTTLS', 'AUTH'], logger: false,
    onData(stream, _session, cb) {
      stream.resume();
      stream.on('end', () => { cb(null); received(); });
    },
  });
  let qmgr: QueueManager | undefined;
  let channels: ChannelSet | undefined;
  let limit: NodeJS.Timeout | undefined;
  let delivered = false;
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    const { port } = server.server.address() as { port: number };
    const config = configSchema.parse({ node: { id: 'warmup', hostname: 'standby.invalid' } });
    const route: Route = { type: 'smtp', host: '127.0.0.1', port, mx: false };
    const router = { routeAddress: async () => route } as unknown as Router;
    const spool = await Spool.open(dir, { nodeId: 'warmup' });
    const queueId = spool.newQueueId();
    await spool.commit({
      queueId, nodeId: 'warmup', sender: 'warmup@standby.invalid', arrivedAt: Date.now(),
      recipients: [{ address: 'warmup@standby.invalid', original: 'warmup@standby.invalid' }],
      messageId: '<warmup@standby.invalid>', client: { address: '127.0.0.1', helo: 'localhost' },
    }, MESSAGE);
    channels = new ChannelSet({ heloName: 'standby.invalid', connectTimeout: 5000, commandTimeout: 5000, requireTls: false, tlsRejectUnauthorized: false });
    const ch = channels;
    qmgr = new QueueManager({ config, spool, router, tracking: new TrackingLog('', 'warmup'), logger: pino({ level: 'silent' }), channelFor: (r) => ch.channelFor(r) });
    await qmgr.start({ cleanTmp: false });
    await Promise.race([accepted, new Promise((_, reject) => { limit = setTimeout(() => reject(new Error(`standby warm-up: no delivery within ${WARMUP_LIMIT_MS / 1000} s`)), WARMUP_LIMIT_MS); })]);
    await qmgr.stop(); // waits for the attempt to be recorded (the file removed)
    delivered = Object.values(await spool.counts()).every((n) => n === 0);
  } catch (err) {
    onError(err as Error);
  } finally {
    clearTimeout(limit);
    await qmgr?.stop().catch(() => undefined);
    await channels?.close().catch(() => undefined);
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await rm(dir, { recursive: true, force: true }).catch(() => undefined);
  }
  return delivered;
}
