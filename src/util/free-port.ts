/**
 * util/free-port.ts — ask the kernel for a port nobody uses right now (bind port 0, read it,
 * close), for a configuration that must name its ports before the processes start (`tandem up`,
 * and the test harness).
 *
 * What can go wrong: between the call and the real bind another process may take the port;
 * that bind then fails loudly (a race the callers accept).
 */
import { createServer } from 'node:net';
import { createSocket } from 'node:dgram';

/** A currently unused TCP port on `host`. */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen({ host, port: 0, exclusive: true }, () => {
      const addr = srv.address();
      if (addr === null || typeof addr === 'string') {
        srv.close();
        reject(new Error(`freePort: unexpected address ${String(addr)}`));
        return;
      }
      srv.close(() => resolve(addr.port));
    });
  });
}

/** A currently unused UDP port on `host`. */
export function freeUdpPort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const sock = createSocket(host.includes(':') ? 'udp6' : 'udp4');
    sock.once('error', reject);
    sock.bind(0, host, () => {
      const { port } = sock.address();
      sock.close(() => resolve(port));
    });
  });
}
