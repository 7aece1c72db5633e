/**
 * cli/admin-client.ts — how the CLI talks to a running node's admin API.
 *
 * adminCall never throws for a node that is down: it returns {reachable: false, error}, which the
 * commands turn into exit code 69 with a message naming the address.
 */

export type AdminReply = { reachable: true; status: number; body: any } | { reachable: false; error: string };

/** "http://host:port" for a HOST:PORT or URL given by the user, or a listen address from a config. */
export function adminBase(addr: string | { host: string; port: number }): string {
  if (typeof addr === 'string') return addr.includes('://') ? addr : `http://${addr}`;
  const h = addr.host === '0.0.0.0' ? '127.0.0.1' : addr.host === '::' ? '::1' : addr.host;
  return `http://${h.includes(':') ? `[${h}]` : h}:${addr.port}`;
}

export async function adminCall(base: string, method: string, path: string, token?: string, timeoutMs = 5000, body?: unknown): Promise<AdminReply> {
  try {
    const headers: Record<string, string> = { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body !== undefined ? { 'content-type': 'application/json' } : {}) };
    const res = await fetch(base + path, { method, headers, ...(body !== undefined ? { body: JSON.stringify(body) } : {}), signal: AbortSignal.timeout(timeoutMs) });
    return { reachable: true, status: res.status, body: await res.json().catch(() => ({})) };
  } catch (err) {
    return { reachable: false, error: String((err as any)?.cause?.code ?? (err as Error).message) };
  }
}
