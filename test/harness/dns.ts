/**
 * test/harness/dns.ts — a small authoritative DNS server on loopback (npm dns2, UDP) serving
 * TXT records from a map, for sender-authentication tests (SPF, DKIM, DMARC) that must not
 * touch the internet.
 *
 * Exports: startDnsServer(records, { servfail }) → { address "127.0.0.1:PORT", port, queries(), close() }
 *   records: name → TXT strings (long strings are split into 255-byte character-strings);
 *   names in `servfail` answer SERVFAIL (a broken DNS), every other name NXDOMAIN.
 */
import dns2 from 'dns2';
import { freeUdpPort } from './ports.ts';

const Packet = dns2.Packet as any;

export interface TestDns {
  address: string;
  port: number;
  queries(): string[];
  close(): Promise<void>;
}

export async function startDnsServer(records: Record<string, string[]>, opts: { servfail?: string[] } = {}): Promise<TestDns> {
  const seen: string[] = [];
  const lower = new Map(Object.entries(records).map(([k, v]) => [k.toLowerCase(), v]));
  const servfail = new Set((opts.servfail ?? []).map((n) => n.toLowerCase()));
  const server = dns2.createServer({
    udp: true,
    handle: (request: any, send: (r: any) => void) => {
      const response = Packet.createResponseFromRequest(request);
      const [q] = request.questions;
      const name = String(q.name).toLowerCase();
      seen.push(`${q.type === Packet.TYPE.TXT ? 'TXT' : q.type} ${name}`);
      if (servfail.has(name)) {
        response.header.rcode = Packet.RCODE.SERVFAIL;
      } else if (!lower.has(name)) {
        response.header.rcode = Packet.RCODE.NXDOMAIN;
      } else if (q.type === Packet.TYPE.TXT) {
        for (const text of lower.get(name)!) {
          const chunks = text.match(/.{1,255}/gs) ?? [''];
          response.answers.push({ name: q.name, type: Packet.TYPE.TXT, class: Packet.CLASS.IN, ttl: 60, data: chunks });
        }
      }
      send(response);
    },
  } as any);
  // dns2 takes port 0 as "no port given": ask for a free one
  const port = await freeUdpPort('127.0.0.1');
  await server.listen({ udp: { port, address: '127.0.0.1' } } as any);
  return {
    address: `127.0.0.1:${port}`,
    port,
    queries: () => seen,
    close: () => new Promise<void>((resolve) => { server.close(); resolve(); }),
  };
}
