/**
 * cli/node-command.ts — `tandem node drain|resume|health --admin URL [--token T] [--json]`:
 * take a running node out of the load balancer and back (admin API POST /drain, /resume), or
 * ask its health (GET /health, what the balancer checks).
 *
 * Exit codes (cli/exit-codes.ts): 0 done / health "ready"; 1 the node is reachable but not
 * ready (health) or cannot change now (starting, stopping: HTTP 409); 2 usage or a wrong token;
 * 69 the admin API is not reachable.
 * Reads no config keys; the token comes from --token or TANDEM_ADMIN_TOKEN (admin.token).
 */
import { EXIT } from './exit-codes.ts';

export type NodeOp = 'drain' | 'resume' | 'health';
interface NodeOpts { admin?: string; token?: string; json?: boolean }

export async function runNodeCommand(op: NodeOp, opts: NodeOpts): Promise<number> {
  if (!opts.admin) {
    console.error(`tandem node ${op}: say which node: --admin HOST:PORT (its admin.listen)`);
    return EXIT.USAGE;
  }
  const base = opts.admin.includes('://') ? opts.admin : `http://${opts.admin}`;
  const token = opts.token ?? process.env.TANDEM_ADMIN_TOKEN;
  let res: Response;
  try {
    res = await fetch(base + (op === 'health' ? '/health' : `/${op}`), {
      method: op === 'health' ? 'GET' : 'POST',
      headers: token ? { authorization: `Bearer ${token}` } : {},
    });
  } catch (err) {
    console.error(`tandem node ${op}: the node's admin API at ${base} is not reachable (${(err as any)?.cause?.code ?? (err as Error).message}); is the node running, and is that its admin.listen?`);
    return EXIT.UNAVAILABLE;
  }
  const body = await res.json().catch(() => ({})) as { state?: string; node?: string; error?: string };
  if (res.status === 401 || res.status === 403) {
    console.error(`tandem node ${op}: ${body.error ?? `HTTP ${res.status}`}`);
    return EXIT.USAGE;
  }
  if (opts.json) console.log(JSON.stringify({ ...body, httpStatus: res.status }));
  if (op === 'health') {
    if (!opts.json) console.log(`${body.node ?? base}: ${body.state ?? `HTTP ${res.status}`}`);
    return res.status === 200 ? EXIT.OK : EXIT.FAILED;
  }
  if (!res.ok) {
    console.error(`tandem node ${op}: ${body.error ?? `HTTP ${res.status}`}`);
    return EXIT.FAILED;
  }
  if (!opts.json) {
    console.log(op === 'drain'
      ? `${body.node}: draining — the balancer's health check now fails (503), new mail gets 421, queued mail is still delivered`
      : `${body.node}: ready — accepting mail again`);
  }
  return EXIT.OK;
}
