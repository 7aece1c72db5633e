/**
 * test/harness/auth-flood.ts — an AUTH brute-force attacker and a legitimate sender, for the
 * AUTH flood test and bench/auth-flood.ts.
 *
 * Exports:
 *   startAuthFlood(port, { connections, from }) → { attempts(), replies(), stop() }
 *       `connections` raw sessions (from the loopback addresses in `from`, round robin), each:
 *       greeting, EHLO, STARTTLS, EHLO, then AUTH PLAIN with a wrong password again and again
 *       as fast as the replies come; a closed session is opened again. Counts the replies by code.
 *   timeTo250(port, count, to) → milliseconds from connect to the 250 after DATA for `count`
 *       messages sent one after another from 127.0.0.1 (nodemailer's SMTP connection).
 */
import { performance } from 'node:perf_hooks';
import { RawSmtpClient } from './raw-smtp.ts';
import { sendMail } from './smtp-client.ts';

export interface AuthFlood {
  attempts(): number;
  replies(): Map<number, number>;
  stop(): Promise<void>;
}

const wrong = Buffer.from('\0alice\0not-the-password', 'utf8').toString('base64');

export async function startAuthFlood(port: number, opts: { connections: number; from: string[] }): Promise<AuthFlood> {
  let stopped = false;
  let attempts = 0;
  const replies = new Map<number, number>();
  const open = new Set<RawSmtpClient>();
  const one = async (from: string): Promise<void> => {
    while (!stopped) {
      let c: RawSmtpClient | undefined;
      try {
        c = await RawSmtpClient.connect(port, '127.0.0.1', 10_000, from);
        open.add(c);
        if ((await c.readReply(30_000)).type !== 'reply') continue;
        await c.command('EHLO attacker.test', 30_000);
        const st = await c.command('STARTTLS', 30_000);
        if (st.type !== 'reply' || st.code !== 220) continue;
        await c.startTls();
        await c.command('EHLO attacker.test', 30_000);
        while (!stopped) {
          const r = await c.command(`AUTH PLAIN ${wrong}`, 30_000);
          if (r.type !== 'reply') break;
          attempts++;
          replies.set(r.code, (replies.get(r.code) ?? 0) + 1);
          if (r.code === 421) break;
        }
      } catch {
        // refused or reset: open another
      } finally {
        if (c) {
          open.delete(c);
          c.close();
        }
      }
    }
  };
  const runs = Array.from({ length: opts.connections }, (_, i) => one(opts.from[i % opts.from.length]));
  return {
    attempts: () => attempts,
    replies: () => replies,
    async stop() {
      stopped = true;
      for (const c of open) c.close();
      await Promise.all(runs);
    },
  };
}

export async function timeTo250(port: number, count: number, to: string): Promise<number[]> {
  const times: number[] = [];
  for (let i = 0; i < count; i++) {
    const t0 = performance.now();
    const r = await sendMail(port, 'legit@client.test', [to], `Subject: legit ${i}\r\n\r\nhello\r\n`);
    if (!r.ok) throw new Error(`the legitimate message was refused: ${r.response}`);
    times.push(performance.now() - t0);
  }
  return times;
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}
