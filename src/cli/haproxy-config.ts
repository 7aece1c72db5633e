/**
 * cli/haproxy-config.ts — an HAProxy configuration for Tandem nodes (used by `tandem up`; the
 * test harness; the commented production example is deploy/haproxy.cfg).
 *
 * TCP mode; round robin; HTTP health check of each node's admin /health (200 only when the node
 * accepts mail, so a draining, fenced or starting node is taken out at once); PROXY protocol v2
 * to the SMTP port (the nodes must list the balancer in smtp.proxy_protocol); `option
 * redispatch` so a connection to a node that just died is retried on another; SMTP-sized
 * client/server timeouts; `noreuseport` so a port already in use fails loudly instead of being
 * shared silently.
 */
export interface HaproxyBackend {
  name: string;
  smtp: { host: string; port: number };
  admin: { host: string; port: number };
}

const hp = (a: { host: string; port: number }) => (a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`);

export interface HaproxyConfigOptions {
  listen: string;
  backends: HaproxyBackend[];
  /** Runtime API socket (state queries, drain by hand). */
  statsSocket?: string;
  /** Health-check interval (default 500 ms; a node is out after 2 failed checks). */
  checkInterMs?: number;
  /** PROXY protocol v2 to the nodes (default true). */
  proxyV2?: boolean;
  /**
   * Connect to the nodes from this address (HAProxy `source`), so that the nodes can tell the
   * balancer (which sends a PROXY header) from a client connecting straight to them.
   */
  source?: string;
}

export function haproxyConfig(opts: HaproxyConfigOptions): string {
  const inter = opts.checkInterMs ?? 500;
  const proxy = opts.proxyV2 ?? true ? ' send-proxy-v2' : '';
  return [
    'global',
    '    noreuseport',
    '    log stdout format raw local0 info',
    ...(opts.statsSocket ? [`    stats socket ${opts.statsSocket} mode 600 level admin`] : []),
    '',
    'defaults',
    '    mode tcp',
    '    log global',
    '    option tcplog',
    '    timeout connect 2s',
    '    timeout check 1s',
    '    timeout client 5m',
    '    timeout server 5m',
    '    retries 3',
    '    option redispatch',
    '',
    'frontend smtp_in',
    `    bind ${opts.listen}`,
    '    default_backend tandem_nodes',
    '',
    'backend tandem_nodes',
    '    balance roundrobin',
    '    option httpchk GET /health',
    '    http-check expect status 200',
    ...(opts.source ? [`    source ${opts.source}`] : []),
    ...opts.backends.map((b) => `    server ${b.name} ${hp(b.smtp)}${proxy} check port ${b.admin.port} addr ${b.admin.host} inter ${inter}ms fall 2 rise 2`),
    '',
  ].join('\n');
}
