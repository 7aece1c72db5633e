/**
 * receiver/proxy-front.ts — reads the PROXY protocol header (v1 text or v2 binary) of a
 * connection from a trusted load balancer before smtp-server sees the connection.
 *
 * How it sits in front of smtp-server: smtp-server (option useProxy) reads a v1 line itself and
 * takes the client address from it, but knows nothing of v2. installProxyFront replaces the
 * listening socket's 'connection' listener with one that, for a peer smtp-server would expect a
 * header from (its own isAddressAllowed on the same useProxy value, so the trust decision is
 * smtp-server's alone), reads the header: a v2 header is parsed (proxy-v2.ts) and replaced by the
 * equivalent v1 line; a v1 line is checked and left as it is. The bytes are pushed back
 * (socket.unshift) and smtp-server's own listener runs as before. Connections from other peers
 * go straight to smtp-server, so they can never claim an address.
 *
 * What can go wrong: a header that is neither v1 nor v2, or malformed, closes the connection
 * with one warning log line (event proxy-header-invalid) and "* BAD Invalid PROXY header" to the
 * peer, as smtp-server does for a bad v1 line; a peer that sends no complete header within
 * smtp.socket_timeout is closed (event proxy-header-timeout).
 * Config keys read (by the caller): smtp.proxy_protocol, smtp.socket_timeout.
 */
import type { Server, Socket } from 'node:net';
import type { Logger } from 'pino';
import { isAddressAllowed } from 'smtp-server/lib/smtp-connection.js';
import { parseProxyV2, proxyV1Line, isProxyV1Line, PROXY_V2_SIGNATURE, ProxyHeaderError } from './proxy-v2.ts';

/** Longest v1 line (spec: 107 bytes with CRLF). */
const MAX_V1_LINE = 107;
/** Longest v2 header: 16 fixed bytes and a 16-bit length. */
const MAX_V2_HEADER = 16 + 0xffff;
const V1_PREFIX = Buffer.from('PROXY ');

type Reading = { type: 'wait' } | { type: 'done'; replacement: Buffer };

/** Put the header reader in front of smtp-server's connection listener (see header). */
export function installProxyFront(server: Server, useProxy: boolean | string[], timeoutMs: number, logger: Logger): void {
  if (!useProxy) return;
  const original = server.listeners('connection') as Array<(socket: Socket) => void>;
  server.removeAllListeners('connection');
  server.on('connection', (socket: Socket) => {
    if (!isAddressAllowed(useProxy, socket.remoteAddress)) {
      for (const l of original) l.call(server, socket);
      return;
    }
    readHeader(socket, timeoutMs, logger, () => {
      for (const l of original) l.call(server, socket);
    });
  });
}

/** Read the header off `socket`, push back its v1 form and what followed, then call `handOver`. */
function readHeader(socket: Socket, timeoutMs: number, logger: Logger, handOver: () => void): void {
  let buf = Buffer.alloc(0);
  const peer = socket.remoteAddress;
  const onError = () => cleanup();
  const cleanup = () => {
    socket.off('readable', onReadable);
    socket.off('error', onError);
    socket.off('close', onClose);
    socket.off('timeout', onTimeout);
    socket.setTimeout(0);
  };
  const fail = (err: ProxyHeaderError) => {
    cleanup();
    logger.warn({ event: 'proxy-header-invalid', peer, code: err.code, err: err.message },
      `closing connection from ${peer}: invalid PROXY header (${err.message}); check that the balancer sends PROXY v1 or v2 (send-proxy-v2) and only to this port`);
    socket.on('error', () => undefined);
    socket.end('* BAD Invalid PROXY header\r\n');
    setTimeout(() => socket.destroy(), 1000).unref();
  };
  const onReadable = () => {
    let chunk: Buffer | null;
    while ((chunk = socket.read() as Buffer | null) !== null) {
      buf = Buffer.concat([buf, chunk]);
      let r: Reading;
      try {
        r = examine(buf);
      } catch (err) {
        if (err instanceof ProxyHeaderError) return fail(err);
        throw err;
      }
      if (r.type === 'done') {
        cleanup();
        socket.unshift(r.replacement);
        handOver();
        return;
      }
    }
  };
  const onClose = () => cleanup();
  const onTimeout = () => {
    cleanup();
    logger.info({ event: 'proxy-header-timeout', peer }, `closing connection from ${peer}: no PROXY header within ${timeoutMs} ms`);
    socket.destroy();
  };
  socket.on('readable', onReadable);
  socket.on('close', onClose);
  socket.on('error', onError);
  socket.on('timeout', onTimeout);
  socket.setTimeout(timeoutMs);
}

/** Decide from the bytes so far: wait for more, or the bytes to hand to smtp-server. */
function examine(buf: Buffer): Reading {
  const n = Math.min(buf.length, PROXY_V2_SIGNATURE.length);
  if (buf.subarray(0, n).equals(PROXY_V2_SIGNATURE.subarray(0, n))) {
    const r = parseProxyV2(buf);
    if (r.type === 'incomplete') {
      if (buf.length > MAX_V2_HEADER) throw new ProxyHeaderError('PROXY_LENGTH', 'PROXY v2 header longer than the protocol allows');
      return { type: 'wait' };
    }
    return { type: 'done', replacement: Buffer.concat([Buffer.from(proxyV1Line(r.header), 'latin1'), buf.subarray(r.length)]) };
  }
  const m = Math.min(buf.length, V1_PREFIX.length);
  if (!buf.subarray(0, m).equals(V1_PREFIX.subarray(0, m))) {
    throw new ProxyHeaderError('PROXY_SIGNATURE', 'the connection does not start with a PROXY v1 or v2 header');
  }
  const lf = buf.indexOf(0x0a);
  if (lf < 0) {
    if (buf.length >= MAX_V1_LINE) throw new ProxyHeaderError('PROXY_V1_SYNTAX', `PROXY v1 line longer than ${MAX_V1_LINE} bytes`);
    return { type: 'wait' };
  }
  const line = buf.subarray(0, lf + 1).toString('latin1');
  if (lf + 1 > MAX_V1_LINE || !isProxyV1Line(line)) throw new ProxyHeaderError('PROXY_V1_SYNTAX', `malformed PROXY v1 line ${JSON.stringify(line.slice(0, 120))}`);
  return { type: 'done', replacement: buf };
}
