/*
 * ports.ts - loopback ports and addresses for process-level tests.
 *
 * Exports:
 *   freePort(host = "127.0.0.1"), freeUdpPort(...)  a port below the kernel's ephemeral range,
 *       checked by binding it (TCP / UDP; the same functions `tandem up` uses, from
 *       src/util/free-port.ts: outgoing connections cannot take it before the process binds it).
 *   parseHostPort(text): HostPort                  "127.0.0.1:25", "[::1]:25" -> { host, port }
 *   formatHostPort(hp): string                     the reverse, brackets for IPv6
 *   HostPort
 *
 * Prefer binding port 0 in the process itself and reading the port it reports; use freePort
 * only when a port must be known before a process starts (a config file that cannot say 0).
 * What can go wrong: between freePort() and the process binding it, another process may take
 * the port (a race we accept for those few cases; the process then fails to start, loudly).
 */
export { freePort, freeUdpPort } from "../../src/util/free-port.ts";

export interface HostPort {
  host: string;
  port: number;
}

/** Parses "host:port" or "[v6]:port"; throws with the offending text. */
export function parseHostPort(text: string): HostPort {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(text.trim());
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new Error(`not a host:port address: ${JSON.stringify(text)}`);
  return { host: m[1] ?? m[2], port };
}

/** Formats a HostPort as "host:port", bracketing IPv6 hosts. */
export function formatHostPort(hp: HostPort): string {
  return hp.host.includes(":") ? `[${hp.host}]:${hp.port}` : `${hp.host}:${hp.port}`;
}
