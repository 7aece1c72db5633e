/**
 * config/schema.ts — the one documented configuration file, as a zod schema.
 *
 * TandemConfig is the parsed, typed config with units converted: durations in ms, sizes in
 * bytes, addresses as {host, port}.
 * Every key has a default here and a line in docs/configuration.md; keep both in step.
 */
import { z } from 'zod';
import { parseDuration, parseSize, formatDuration } from '../util/units.ts';
import { NODE_ID_PATTERN, NODE_ID_RULE, DKIM_SELECTOR_PATTERN } from '../util/names.ts';

/** "host:port", "[::1]:25" → {host, port}; port 0 = any free port. */
export function parseHostPort(text: string, defaultPort?: number): { host: string; port: number } {
  const m = /^\[([^\]]+)\](?::(\d+))?$/.exec(text) ?? /^([^:\s]+)(?::(\d+))?$/.exec(text);
  if (!m || (m[2] === undefined && defaultPort === undefined)) {
    throw new Error(`"${text}" is not HOST:PORT (IPv6 as [::1]:25)`);
  }
  const port = m[2] === undefined ? defaultPort! : Number(m[2]);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`port ${m[2]} is out of range 0-65535`);
  return { host: m[1], port };
}

const duration = (def: string) =>
  z.union([z.string(), z.number()]).default(def).transform((v, ctx) => {
    try { return parseDuration(v); } catch (e) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, message: (e as Error).message }); return z.NEVER;
    }
  });
/** A duration between min and max (given as durations too, e.g. "100ms", "60s"). */
const boundedDuration = (def: string, min: string, max: string) =>
  duration(def).superRefine((v, ctx) => {
    if (v < parseDuration(min) || v > parseDuration(max)) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, message: `must be between ${min} and ${max} (got ${formatDuration(v)})` });
    }
  });
const size = (def: string) =>
  z.union([z.string(), z.number()]).default(def).transform((v, ctx) => {
    try { return parseSize(v); } catch (e) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, message: (e as Error).message }); return z.NEVER;
    }
  });
const optionalSize = () =>
  z.union([z.string(), z.number()]).optional().transform((v, ctx) => {
    if (v === undefined) return undefined;
    try { return parseSize(v); } catch (e) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, message: (e as Error).message }); return z.NEVER;
    }
  });
const hostPort = (defaultPort?: number) =>
  z.string().transform((v, ctx) => {
    try { return parseHostPort(v, defaultPort); } catch (e) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, message: (e as Error).message }); return z.NEVER;
    }
  });

/** Owner, group and file mode of delivered Maildir files (local.maildir_owners). */
const maildirOwner = z.object({
  /** User name or numeric uid. */
  owner: z.union([z.string().min(1), z.number().int().min(0)]).optional(),
  /** Group name or numeric gid. */
  group: z.union([z.string().min(1), z.number().int().min(0)]).optional(),
  /** File mode in octal ("0660"); folders get it with x added where r is set ("0770"). */
  mode: z.string().regex(/^0?[0-7]{3}$/, 'an octal file mode such as "0600" or "0660"').optional(),
}).strict();

const nodeId = z.string().regex(NODE_ID_PATTERN, NODE_ID_RULE);

export const configSchema = z.object({
  node: z.object({
    id: nodeId.default('node1'),
    /** Our name in the greeting, Received: headers, EHLO and DSNs. */
    hostname: z.string().min(1).default('localhost'),
  }).strict().default({}),
  smtp: z.object({
    listen: hostPort(25).default('127.0.0.1:2525'),
    banner: z.string().default('Tandem'),
    /**
     * PROXY protocol (v1 text or v2 binary, e.g. HAProxy send-proxy-v2) from a load balancer:
     * false, true (from any client — only safe when nothing but the balancer can reach the
     * listener), or the balancer addresses to trust.
     */
    proxy_protocol: z.union([z.boolean(), z.array(z.string().min(1)).min(1)], { errorMap: () => ({ message: 'use false, true, or a list of load-balancer addresses' }) }).default(false),
    max_message_size: size('10240000'),
    max_recipients: z.number().int().min(1).max(100000).default(1000),
    max_connections: z.number().int().min(1).max(100000).default(100),
    /**
     * How long a connection beyond max_connections waits, not greeted, for a free slot (as
     * Postfix's clients wait in the listen queue) before its 421; 0 = 421 at once.
     */
    connection_wait: boundedDuration('10s', '0s', '300s'),
    max_line_length: z.number().int().min(1000).max(1_000_000).default(4096),
    socket_timeout: duration('300s'),
    /** Pause before the 220 greeting; a client that talks during it gets 421 (0 = greet at once). */
    greeting_delay: boundedDuration('0s', '0s', '60s'),
    /**
     * SMTP worker processes sharing the listening sockets (node/smtp-workers.ts): auto = one per
     * CPU, 1 = sessions in the node's own process (no workers). Queue manager, cluster and admin
     * API stay in the node's main process either way.
     */
    workers: z.union([z.literal('auto'), z.number().int().min(1).max(256)], { errorMap: () => ({ message: 'use auto or a number of processes from 1 to 256' }) }).default(1),
    tls: z.object({ cert: z.string(), key: z.string() }).strict().optional(),
    /** Table of user → scrypt hash; AUTH is offered only after STARTTLS. */
    auth_passwords: z.string().optional(),
    /** Per-client limits and session timeouts (receiver/client-limits.ts, session-guard.ts); 0 = no limit. */
    limits: z.object({
      client_connections: z.number().int().min(0).max(100000).default(50),
      network_connections: z.number().int().min(0).max(100000).default(0),
      connection_rate: z.number().int().min(0).max(1_000_000).default(0),
      message_rate: z.number().int().min(0).max(1_000_000).default(0),
      recipient_rate: z.number().int().min(0).max(10_000_000).default(0),
      rate_window: boundedDuration('60s', '1s', '1h'),
      /** Relay networks are not held to the connection and rate limits (Postfix smtpd_client_event_limit_exceptions). */
      exempt_relay_networks: z.boolean().default(true),
      /** Stress mode from this share of max_connections on a listener (percent); 0 = never. */
      stress_percent: z.number().int().min(0).max(100).default(80),
      stress_timeout: boundedDuration('10s', '1s', '1h'),
      min_data_rate: z.number().int().min(0).max(1_000_000_000).default(500),
      /** Errors after which every reply is delayed by error_sleep_time (Postfix smtpd_soft_error_limit); 0 = never. */
      soft_error_limit: z.number().int().min(0).max(10000).default(10),
      error_sleep_time: boundedDuration('1s', '0s', '60s'),
      hard_error_limit: z.number().int().min(1).max(10000).default(20),
      junk_command_limit: z.number().int().min(1).max(100000).default(100),
    }).strict().default({}),
    /** AUTH throttling (receiver/auth-throttle.ts). */
    auth_limits: z.object({
      max_failures: z.number().int().min(1).max(1000).default(3),
      failure_delay: boundedDuration('1s', '0s', '60s'),
      /** Failed AUTHs per client address per limits.rate_window; 0 = no limit. */
      failure_rate: z.number().int().min(0).max(1_000_000).default(30),
      hash_concurrency: z.number().int().min(1).max(64).default(1),
      hash_queue: z.number().int().min(1).max(100000).default(32),
    }).strict().default({}),
    /** One header field with its continuation lines (Postfix header_size_limit). */
    max_header_size: size('102400'),
    max_headers: z.number().int().min(10).max(1_000_000).default(1000),
    /** Received: headers before a message is refused as a loop (Postfix hopcount_limit). */
    max_hops: z.number().int().min(1).max(1000).default(50),
    /** Accept user%host@relay-domain and bang paths from clients that may not relay. */
    allow_untrusted_routing: z.boolean().default(false),
    /**
     * Several listeners (e.g. 25 relay with STARTTLS, 587 submission with AUTH, 465 implicit
     * TLS), each with its own policy; unset = one listener on smtp.listen (receiver/listeners.ts).
     */
    listeners: z.array(z.object({
      name: z.string().regex(/^[a-z0-9][a-z0-9_-]{0,31}$/, 'listener names are 1-32 characters: a-z, 0-9, "_" and "-"'),
      listen: hostPort(25),
      /** starttls: offered when smtp.tls is set; implicit: TLS from the first byte (465); none. */
      tls: z.enum(['none', 'starttls', 'implicit']).default('starttls'),
      /** offered: AUTH after TLS when smtp.auth_passwords is set; required: MAIL only after AUTH (submission). */
      auth: z.enum(['none', 'offered', 'required']).default('offered'),
      proxy_protocol: z.union([z.boolean(), z.array(z.string().min(1)).min(1)]).optional(),
      max_connections: z.number().int().min(1).max(100000).optional(),
      /** Sender authentication on this listener; default sender_auth.policy. */
      sender_auth: z.enum(['off', 'record', 'enforce']).optional(),
    }).strict()).min(1).optional(),
  }).strict().default({}),
  spool: z.object({
    /** The node's spool is <root>/<node id>. */
    root: z.string().default('./var/spool'),
    /** New mail is refused (452 4.3.1 at MAIL) below this much free space; default 1.5 × smtp.max_message_size. */
    min_free: optionalSize(),
  }).strict().default({}),
  relay: z.object({
    /** Smarthost for all non-local mail, like Postfix relayhost. */
    host: hostPort(25).optional(),
    /** Clients in these networks may relay to any domain. */
    networks: z.array(z.string()).default(['127.0.0.0/8', '::1/128']),
    domains: z.array(z.string()).default([]),
  }).strict().default({}),
  tables: z.object({
    local_domains: z.string().optional(),
    virtual_mailboxes: z.string().optional(),
    aliases: z.string().optional(),
    transport: z.string().optional(),
    relay_domains: z.string().optional(),
    relay_networks: z.string().optional(),
  }).strict().default({}),
  local: z.object({
    domains: z.array(z.string()).default([]),
    /** Relative mailbox paths in virtual_mailboxes are under this folder. */
    maildir_root: z.string().default('./var/mail'),
    /**
     * Owner, group and mode of Maildir folders and files, by mailbox address, domain or "*"
     * (the most specific key wins; the directory's uidNumber/gidNumber override owner/group).
     */
    maildir_owners: z.record(z.string().min(1), maildirOwner).default({}),
    /** Alias/list expansion limits per RCPT: final addresses, and nesting depth. */
    max_alias_expansion: z.number().int().min(1).max(1_000_000).default(1000),
    max_alias_depth: z.number().int().min(1).max(100).default(20),
  }).strict().default({}),
  queue: z.object({
    max_lifetime: duration('5d'),
    /** Send a delay DSN once when a message has waited this long; 0 = never. */
    delay_warning: duration('0s'),
    min_backoff: duration('300s'),
    max_backoff: duration('4000s'),
    destination_concurrency: z.number().int().min(1).max(1000).default(20),
    total_concurrency: z.number().int().min(1).max(10000).default(100),
    /** Recipients per delivery transaction to one destination. */
    destination_recipient_limit: z.number().int().min(1).max(10000).default(50),
    /** Messages being delivered: at most this many bytes of them at once (a streamed message counts as 256 KiB). */
    max_active_bytes: size('256MiB'),
    /**
     * Messages the queue manager keeps in memory (Postfix's qmgr_message_active_limit); the rest
     * of the queue stays on disk and is read in as room frees up.
     */
    active_message_limit: z.number().int().min(10).max(10_000_000).default(20_000),
  }).strict().default({}),
  delivery: z.object({
    connect_timeout: duration('30s'),
    command_timeout: duration('300s'),
    /**
     * TLS to next hops, as Postfix smtp_tls_security_level: "may" = STARTTLS when offered,
     * certificate not checked, plaintext if the handshake fails; "encrypt" = TLS required;
     * "verify" = TLS required and the certificate must verify. Mail that cannot meet it is deferred.
     */
    tls_security_level: z.enum(['may', 'encrypt', 'verify']).default('may'),
  }).strict().default({}),
  tracking: z.object({
    /** Message tracking log (JSON lines); "" disables it. */
    path: z.string().default('./var/log/tracking.log'),
    /** Keep a search index of the log (GET /track, `tandem track`, the console's Tracking page). */
    search: z.boolean().default(true),
    /** The node's search index of its log (SQLite); default `<path>.<node id>.index.db`. Rebuilt from the log if lost. */
    index: z.string().optional(),
    /** Index rows and rotated log files older than this are deleted; 0 = kept forever. */
    max_age: duration('30d'),
    /** Rotate the log when it reaches this size (<path>.1, .2, …); 0 = never (logrotate's job). */
    rotate_size: size('0'),
    /** Rotated log files kept. */
    rotate_keep: z.number().int().min(1).max(1000).default(10),
    /**
     * How long a line nobody waits for (routed, delivered, deferred, …) may stay unsynced: its
     * fdatasync is shared with the lines of that moment. The `received` line is synced before
     * the 250 whatever this says. 0 = an fdatasync started after every line.
     */
    sync_delay: boundedDuration('100ms', '0s', '10s'),
  }).strict().default({}),
  admin: z.object({
    listen: hostPort().optional(),
    /** Bearer token for the admin API; without it only loopback clients may use it. */
    token: z.string().optional(),
    /** HTTPS for the admin API and the console (PEM files); ca: the CA that signed the peers' certificates. */
    tls: z.object({ cert: z.string(), key: z.string(), ca: z.string().optional() }).strict().optional(),
    /** The web console (docs/console.md): its users besides the admin token, and session lifetime. */
    console: z.object({
      enabled: z.boolean().default(true),
      users: z.array(z.object({
        name: z.string().regex(/^[A-Za-z0-9._@-]{1,64}$/, 'user names are 1-64 characters: letters, digits, ".", "_", "@", "-"'),
        /** scrypt hash from `tandem passwd hash`. */
        password: z.string().startsWith('scrypt$', 'use a hash from `tandem passwd hash` (scrypt$...)'),
        role: z.enum(['operator', 'read-only']).default('read-only'),
      }).strict()).default([]),
      /** A session ends this long after its last request. */
      session_idle: duration('30m'),
      /** … and at most this long after login. */
      session_max: duration('12h'),
      /** Failed logins, counted per client address and per user (console/login-throttle.ts). */
      login: z.object({
        /** Failures without delay (typing mistakes). */
        free_failures: z.number().int().min(0).max(100).default(3),
        /** After them each failure blocks further logins for `delay`, doubled each time… */
        delay: duration('1s'),
        /** … and this many failures lock the address or user out for `lockout`. */
        lockout_after: z.number().int().min(1).max(1000).default(10),
        lockout: duration('15m'),
      }).strict().default({}),
    }).strict().default({}),
  }).strict().default({}),
  cluster: z.object({
    /** Every node of the cluster, in order (the takeover order after the partner). */
    nodes: z.array(z.object({
      id: nodeId,
      /** UDP address this node receives heartbeats on (and sends them from). */
      heartbeat: hostPort(),
      /** The node's SMTP and admin addresses, for `tandem cluster status` and `tandem up`. */
      smtp: hostPort(25).optional(),
      admin: hostPort().optional(),
      site: z.string().min(1).default('default'),
      /** Takes this node's spool over first when the node dies. */
      partner: nodeId.optional(),
      /** storage: replicated — the address this node's shadow holder listens on (TLS, HTTP/2). */
      replication: hostPort().optional(),
    }).strict()).min(2, 'a cluster has at least two nodes'),
    /**
     * shared: every spool on one shared storage (NFS, SAN) under spool.root, with disk
     * heartbeats and claims there. replicated: each node's spool on its own disk, every message
     * copied to a second node (its shadow holder) before the 250 (docs/ha.md "Storage modes").
     */
    storage: z.enum(['shared', 'replicated']).default('shared'),
    /**
     * A witness that decides takeovers by quorum (docs/witness.md): a takeover needs the
     * heartbeats to say dead AND the witness's lock; with no quorum nothing is taken over.
     */
    witness: z.object({
      etcd: z.object({
        /** Client URLs of every etcd member, e.g. http://10.0.0.9:2379. */
        endpoints: z.array(z.string().regex(/^https?:\/\/[^\s/]+\/?$/, 'use http://host:port')).min(1),
        /** Key prefix: one cluster per prefix. */
        prefix: z.string().regex(/^\/[^\s]*$/, 'a key prefix starting with /').default('/tandem'),
        /** Bound on one attempt of an etcd call on one member. */
        operation_timeout: boundedDuration('1s', '100ms', '30s'),
      }).strict(),
    }).strict().optional(),
    /** storage: replicated only. */
    replication: z.object({
      /** PEM files: the cluster CA, and this node's certificate (CN = node id) and key. */
      tls: z.object({ ca: z.string().min(1), cert: z.string().min(1), key: z.string().min(1) }).strict(),
      /**
       * No copy could be made (holder down): refuse answers 451 4.4.0 (the client retries);
       * accept answers 250 with one copy, shown as unprotected until the holder is back.
       */
      on_holder_unreachable: z.enum(['refuse', 'accept']).default('accept'),
      /**
       * A second copy of every message at a node of another site (cluster.nodes[].site), made
       * before the 250 like the first: a whole site can be lost (docs/sites.md).
       */
      remote_copy: z.boolean().default(false),
      /** Where this node keeps the copies it holds for others (default <spool.root>/.shadow). */
      shadow_dir: z.string().min(1).optional(),
      /** Copies in flight at once on the connection to the holder. */
      max_in_flight: z.number().int().min(1).max(1024).default(64),
      /** A copy not acknowledged within this long counts as not made. */
      ack_timeout: boundedDuration('5s', '100ms', '60s'),
      /** Discard notices are sent in batches this often. */
      discard_interval: boundedDuration('100ms', '10ms', '10s'),
    }).strict().optional(),
    /** Shared secret for heartbeat and claim signatures (HMAC-SHA256); at least 16 characters. */
    secret: z.string().min(16, 'use at least 16 characters (e.g. `openssl rand -hex 32`)').optional(),
    secret_file: z.string().optional(),
    /**
     * Secrets accepted on what peers sign, besides `secret` (which alone signs): a rotation
     * window (docs/ha.md "Rotating the cluster secret"). Read from the files at load.
     */
    accept_secrets: z.array(z.string().min(16, 'use at least 16 characters')).max(4).default([]),
    accept_secret_files: z.array(z.string()).max(4).default([]),
    heartbeat_interval: duration('250ms'),
    /** A node that could not renew its disk heartbeat for this long stops accepting and delivering. */
    fence_after: duration('1500ms'),
    /** A peer whose network and disk heartbeats have both been silent this long is dead. */
    dead_after: duration('2500ms'),
    /** Hand a claimed spool back as soon as its node is alive again. */
    auto_handback: z.boolean().default(true),
    /** Keep one secondary process forked and idle, so that a takeover starts delivering without a fork (docs/ha.md). */
    standby_secondary: z.boolean().default(true),
  }).strict().optional(),
  /** Directory-based routing (docs/directory.md); beside or instead of the tables. */
  directory: z.object({
    servers: z.array(z.object({
      url: z.string().regex(/^ldaps?:\/\/[^\s/]+\/?$/, 'use ldap://host:port or ldaps://host:port'),
      role: z.enum(['master', 'shadow']).default('shadow'),
      /** The site (data centre) the server is in; the node reads and writes its own site's first. */
      site: z.string().min(1).optional(),
    }).strict()).min(1).max(16),
    /** This node's site for the directory; default: its cluster.nodes[].site (docs/directory.md "Sites"). */
    site: z.string().min(1).optional(),
    base_dn: z.string().min(1),
    bind_dn: z.string().optional(),
    bind_password: z.string().optional(),
    bind_password_file: z.string().optional(),
    /** Never 0: ldapts takes 0 as "no timeout", and a hung server would then block lookups. */
    connect_timeout: boundedDuration('1s', '100ms', '60s'),
    operation_timeout: boundedDuration('2s', '100ms', '60s'),
    /** A server that failed is skipped this long before it is tried again. */
    server_backoff: boundedDuration('5s', '100ms', '1h'),
    cache_ttl: boundedDuration('60s', '0s', '1h'),
    negative_cache_ttl: boundedDuration('30s', '0s', '1h'),
    /** While every server is down, cached found answers are used up to this long past their TTL. */
    max_stale: boundedDuration('24h', '0s', '7d'),
    cache_max_entries: z.number().int().min(100).max(10_000_000).default(100_000),
  }).strict().optional(),
  /** SPF, DKIM, DMARC and ARC verification of inbound mail (receiver/sender-auth.ts). */
  sender_auth: z.object({
    /** off; record (Authentication-Results only); enforce (also DMARC p=reject → 550, p=quarantine → hold). */
    policy: z.enum(['off', 'record', 'enforce']).default('off'),
    /** DNS servers as host or host:port; empty = the system's (/etc/resolv.conf). */
    dns_servers: z.array(z.string().min(1)).default([]),
    dns_timeout: boundedDuration('5s', '100ms', '60s'),
    dns_cache_ttl: boundedDuration('5m', '0s', '1d'),
    dns_cache_entries: z.number().int().min(1).max(10_000_000).default(10_000),
  }).strict().default({}),
  /** Spam and virus scanning before the 250 with Rspamd (receiver/content-filter.ts). */
  content_filter: z.object({
    /** Rspamd's normal worker, e.g. http://127.0.0.1:11333. */
    rspamd_url: z.string().regex(/^https?:\/\/[^\s/]+\/?$/, 'use http://host:port'),
    timeout: boundedDuration('15s', '100ms', '5m'),
    /** true: accept unscanned when Rspamd fails; false: answer 451 (the client retries). */
    fail_open: z.boolean().default(true),
    /** What "add header" / "rewrite subject" does: mark with X-Spam: Yes, or hold the message. */
    on_spam: z.enum(['header', 'hold']).default('header'),
    /** Scan mail from authenticated clients too. */
    scan_authenticated: z.boolean().default(false),
  }).strict().optional(),
  /** DKIM signing of mail from trusted clients, by From: domain. */
  dkim: z.object({
    keys: z.array(z.object({
      domain: z.string().min(1),
      selector: z.string().regex(DKIM_SELECTOR_PATTERN, 'a DNS label (or dotted labels)'),
      /** PEM private key (RSA or Ed25519); the public key goes in DNS at <selector>._domainkey.<domain>. */
      key_file: z.string().min(1),
    }).strict()).default([]),
    /**
     * Also sign with the keys of the directory's tandemDkimDomain entries (needs directory:);
     * dkim.keys first for a domain in both.
     */
    directory: z.boolean().default(false),
  }).strict().default({}),
  log: z.object({
    level: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal']).default('info'),
  }).strict().default({}),
}).strict().superRefine((c, ctx) => {
  if (c.queue.max_backoff < c.queue.min_backoff) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['queue', 'max_backoff'], message: `must be at least queue.min_backoff (${formatDuration(c.queue.min_backoff)})` });
  }
  if (c.cluster) checkCluster(c.node.id, c.cluster, ctx);
  if (c.directory && c.directory.servers.filter((s) => s.role === 'master').length > 2) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['directory', 'servers'], message: 'at most two servers can be masters (writes go to the first, to the second only while the first is down)' });
  }
  if (c.dkim.directory && !c.directory) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['dkim', 'directory'], message: 'needs a directory: section (the keys are read from its tandemDkimDomain entries)' });
  }
  if (c.directory) checkDirectorySites(c, ctx);
  if (c.directory?.bind_password !== undefined && c.directory.bind_password_file !== undefined) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['directory', 'bind_password_file'], message: 'set bind_password or bind_password_file, not both' });
  }
  c.smtp.listeners?.forEach((l, i) => {
    const issue = (message: string) => ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['smtp', 'listeners', i], message });
    if (l.tls === 'implicit' && !c.smtp.tls) issue(`listener "${l.name}": tls: implicit needs smtp.tls (cert and key)`);
    if (l.auth === 'required' && !c.smtp.auth_passwords) issue(`listener "${l.name}": auth: required needs smtp.auth_passwords`);
    if (c.smtp.listeners!.findIndex((o) => o.name === l.name) !== i) issue(`listener name "${l.name}" appears twice`);
  });
  if (c.cluster?.storage === 'replicated' && typeof c.smtp.workers === 'number' && c.smtp.workers > 1) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['smtp', 'workers'], message: 'SMTP workers need cluster.storage: shared (the shadow copy before the 250 is made by the main process); use 1 or auto (auto runs no workers with replicated storage)' });
  }
  if (c.smtp.auth_passwords && !c.smtp.tls) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['smtp', 'auth_passwords'], message: 'AUTH is offered only after STARTTLS: set smtp.tls (cert and key) too' });
  }
});

export type TandemConfig = z.output<typeof configSchema>;
export type ClusterConfig = NonNullable<TandemConfig['cluster']>;
export type ClusterNodeConfig = ClusterConfig['nodes'][number];

/**
 * The node's own site for directory reads and writes: directory.site, else this node's
 * cluster.nodes[].site; undefined when no server has a site (no preference).
 */
export function directorySite(c: Pick<TandemConfig, 'node' | 'cluster' | 'directory'>): string | undefined {
  if (!c.directory?.servers.some((s) => s.site !== undefined)) return undefined;
  return c.directory.site ?? c.cluster?.nodes.find((n) => n.id === c.node.id)?.site;
}

/** Sites on every directory server or on none, and the node's own site among them. */
function checkDirectorySites(c: TandemConfig, ctx: z.RefinementCtx): void {
  const d = c.directory!;
  const issue = (path: (string | number)[], message: string) => ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['directory', ...path], message });
  const sites = [...new Set(d.servers.flatMap((s) => (s.site !== undefined ? [s.site] : [])))];
  if (sites.length === 0) {
    if (d.site !== undefined) issue(['site'], 'no server in directory.servers has a site: give each server its site, or remove directory.site');
    return;
  }
  d.servers.forEach((s, i) => { if (s.site === undefined) issue(['servers', i, 'site'], `${s.url} has no site while others do (${sites.join(', ')}): give every server its site, or none`); });
  if (d.site !== undefined) {
    if (!sites.includes(d.site)) issue(['site'], `this node's site "${d.site}" (directory.site) has no directory server; the servers' sites are ${sites.join(', ')}`);
  } else if (!c.cluster) {
    issue(['site'], `directory.servers have sites (${sites.join(', ')}): set directory.site to this node's site (or cluster.nodes[].site in a cluster)`);
  } else {
    // a cluster file may be shared by every node: each one's site must have servers
    for (const n of c.cluster.nodes) {
      if (!sites.includes(n.site)) issue(['servers'], `node ${n.id}'s site "${n.site}" (cluster.nodes[].site) has no directory server; the servers' sites are ${sites.join(', ')} (or set directory.site)`);
    }
  }
}

/** The rules between cluster keys: ids unique, partners known, fence before dead. */
function checkCluster(self: string, c: ClusterConfig, ctx: z.RefinementCtx): void {
  const issue = (path: (string | number)[], message: string) => ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['cluster', ...path], message });
  const ids = c.nodes.map((n) => n.id);
  ids.forEach((id, i) => { if (ids.indexOf(id) !== i) issue(['nodes', i, 'id'], `node id "${id}" appears twice`); });
  c.nodes.forEach((n, i) => {
    if (n.partner !== undefined && (!ids.includes(n.partner) || n.partner === n.id)) issue(['nodes', i, 'partner'], `"${n.partner}" is not another node of cluster.nodes`);
  });
  if (!ids.includes(self)) issue(['nodes'], `this node (node.id "${self}") is not in cluster.nodes; start it with --node-id ID`);
  if (c.storage === 'replicated') {
    if (!c.replication) issue(['replication'], 'storage: replicated needs a replication: section (tls: ca, cert, key)');
    c.nodes.forEach((n, i) => { if (!n.replication) issue(['nodes', i, 'replication'], `storage: replicated needs each node's replication address (host:port of its shadow holder)`); });
    if (c.replication?.remote_copy && new Set(c.nodes.map((n) => n.site)).size < 2) issue(['replication', 'remote_copy'], 'a remote copy needs nodes in at least two sites (cluster.nodes[].site)');
  }
  if (!c.secret === !c.secret_file) issue(['secret'], 'set exactly one of cluster.secret and cluster.secret_file');
  if (c.fence_after >= c.dead_after) issue(['fence_after'], `must be shorter than cluster.dead_after (${formatDuration(c.dead_after)}): a node fences itself before its peers take its spool`);
  else if (c.dead_after - c.fence_after < 2 * c.heartbeat_interval) issue(['dead_after'], `must exceed cluster.fence_after by at least two heartbeat intervals (${formatDuration(c.fence_after + 2 * c.heartbeat_interval)}): the margin covers the time the peers and the secondaries need to see a beat`);
  if (c.heartbeat_interval * 3 > c.fence_after) issue(['heartbeat_interval'], `must be at most a third of cluster.fence_after (${formatDuration(c.fence_after)})`);
}
