/**
 * track/index-db.ts — a node's searchable index of its tracking log, in SQLite (better-sqlite3).
 *
 * The log stays the source of truth: the index holds every field of each line (the searched
 * ones in indexed columns, see SCHEMA) and where it stopped reading (file identity and offset). sync() reads what
 * was appended since, in chunks (one transaction each, the event loop is given back between
 * them so heartbeats go on); a log replaced by rotation is finished from its rotated name
 * (`<log>.1`) when that is the same file, then read from the start. A missing index is rebuilt
 * from the log; an unreadable one is moved aside (`.corrupt-<time>`) and rebuilt; one made by
 * another version of this code (`PRAGMA user_version` other than SCHEMA_VERSION, or no version:
 * the first release) is deleted and rebuilt from the log (`rebuilt` says why).
 * Only lines of this node (`node` = our id) are indexed: several nodes may write one log file
 * (a shared folder), each answers for its own lines and the cluster search merges them.
 * Search: by queue id, Message-ID, sender and recipient (exact address, or a domain given as
 * "@domain" or "domain"), outcome (an event type the message had) and time range; the answer
 * is every indexed event of each message found (newest messages first), plus the cluster
 * events (takeover, handback, ...) about their spools up to their last event, so the merged
 * timeline can show a takeover (search.ts keeps those within each message's life).
 * Retention: prune(maxAgeMs) deletes events older than that (whole messages whose last event
 * is older, and old cluster events).
 * What can go wrong: a torn last line (skipped until its newline arrives); a line that is not
 * JSON (counted in `skipped`, not indexed); a full disk (the SQLite error propagates to sync()'s
 * caller, which logs it and tries again later).
 */
import Database from 'better-sqlite3';
import { existsSync, mkdirSync, renameSync, statSync, unlinkSync } from 'node:fs';
import path from 'node:path';
import { open } from 'node:fs/promises';

export interface TrackQuery {
  queueId?: string;
  messageId?: string;
  /** Sender: an address, or "@domain" / "domain" for every sender of that domain. */
  from?: string;
  /** Recipient (original or final): an address, or a domain. */
  to?: string;
  /** An event the message had: delivered, deferred, bounced, held, ... */
  outcome?: string;
  /** Epoch ms: messages with an event in [since, until]. */
  since?: number;
  until?: number;
  /** At most this many messages (default 100, at most 1000). */
  limit?: number;
}

export type IndexedEvent = Record<string, unknown> & { t: string; node: string; event: string; queueId?: string };

export interface TrackedMessage {
  queueId: string;
  events: IndexedEvent[];
}

/** Read and indexed per transaction: ~250 lines, tens of milliseconds of the event loop at most. */
const CHUNK_BYTES = 64 << 10;
const MAX_LIMIT = 1000;

/**
 * Compact on purpose (a busy node logs millions of lines): per message one `messages` row
 * (Message-ID and sender, indexed), per event one `events` row with the fields not already in
 * `messages` (`rest`, JSON), and each recipient of a message once in `rcpts`.
 */
const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS messages (
  queue_id TEXT PRIMARY KEY,
  message_id TEXT,
  sender TEXT COLLATE NOCASE,
  sender_domain TEXT COLLATE NOCASE,
  last INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS messages_message_id ON messages (message_id) WHERE message_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS messages_sender ON messages (sender) WHERE sender IS NOT NULL;
CREATE INDEX IF NOT EXISTS messages_sender_domain ON messages (sender_domain) WHERE sender_domain IS NOT NULL;
CREATE INDEX IF NOT EXISTS messages_last ON messages (last);
CREATE TABLE IF NOT EXISTS events (
  id INTEGER PRIMARY KEY,
  t INTEGER NOT NULL,
  event TEXT NOT NULL,
  queue_id TEXT,
  spool TEXT,
  rest TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_queue ON events (queue_id, t) WHERE queue_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_t ON events (t);
CREATE INDEX IF NOT EXISTS events_cluster ON events (spool, t) WHERE queue_id IS NULL;
CREATE TABLE IF NOT EXISTS rcpts (
  recipient TEXT NOT NULL,
  queue_id TEXT NOT NULL,
  domain TEXT NOT NULL,
  PRIMARY KEY (recipient, queue_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS rcpts_domain ON rcpts (domain);
CREATE INDEX IF NOT EXISTS rcpts_queue ON rcpts (queue_id);
`;

/**
 * The schema's version, kept in the file as `PRAGMA user_version`: bump it with any change to
 * SCHEMA or to what the columns hold, and every node rebuilds its index from the log on start.
 * (0 is SQLite's default: an index of the first release, or a file not yet set up.)
 */
export const SCHEMA_VERSION = 2; // 2: events_cluster (a search walked every event to find none)

/** Fields kept in columns (not repeated in `rest`). */
const COLUMNS = new Set(['t', 'node', 'event', 'queueId', 'messageId', 'sender']);

const lower = (s: unknown) => (typeof s === 'string' && s ? s.toLowerCase() : undefined);
const domainOf = (addr: string) => addr.slice(addr.lastIndexOf('@') + 1);

export class TrackingIndex {
  private db: Database.Database;
  private syncing?: Promise<void>;
  /** Lines read that were not JSON (not indexed). */
  skipped = 0;
  private readonly nodeTag: string;
  /** Why the file at dbFile was not used as it was and the index is rebuilt from the log (for the node's log). */
  readonly rebuilt?: string;

  /** Open (or create, or rebuild) the index of `logFile` at `dbFile`, for lines of `nodeId`. */
  constructor(readonly dbFile: string, readonly logFile: string, readonly nodeId: string) {
    const { db, rebuilt } = openDb(dbFile);
    this.db = db;
    if (rebuilt) this.rebuilt = rebuilt;
    this.nodeTag = `"node":${JSON.stringify(nodeId)},`;
  }

  private meta(key: string): string | undefined {
    return (this.db.prepare('SELECT value FROM meta WHERE key = ?').get(key) as { value: string } | undefined)?.value;
  }

  private setMeta(key: string, value: string | number): void {
    this.db.prepare('INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value').run(key, String(value));
  }

  /** Index what was appended to the log since the last call (concurrent calls share one run). */
  sync(): Promise<void> {
    this.syncing ??= this.readNew().finally(() => { this.syncing = undefined; });
    return this.syncing;
  }

  private async readNew(): Promise<void> {
    let st;
    try { st = statSync(this.logFile); } catch { return; }
    const ino = `${st.dev}:${st.ino}`;
    let offset = Number(this.meta('offset') ?? 0);
    const known = this.meta('inode');
    if (known !== undefined && known !== ino) {
      // rotated: finish the old file if it is still at <log>.1, then start the new one
      const rotated = `${this.logFile}.1`;
      try {
        const r = statSync(rotated);
        if (`${r.dev}:${r.ino}` === known) await this.readFrom(rotated, offset);
      } catch { /* gone: what was not indexed of it is lost to the index, not to the log files */ }
      offset = 0;
    } else if (st.size < offset) {
      offset = 0; // truncated in place
    }
    this.setMeta('inode', ino);
    this.setMeta('offset', offset);
    await this.readFrom(this.logFile, offset);
  }

  /** Index complete lines of `file` from `offset`, saving the offset after each chunk. */
  private async readFrom(file: string, offset: number): Promise<void> {
    const fh = await open(file, 'r');
    try {
      const buf = Buffer.alloc(CHUNK_BYTES);
      let carry = Buffer.alloc(0);
      for (;;) {
        const { bytesRead } = await fh.read(buf, 0, CHUNK_BYTES, offset + carry.length);
        if (bytesRead === 0) break;
        const data = carry.length ? Buffer.concat([carry, buf.subarray(0, bytesRead)]) : buf.subarray(0, bytesRead);
        const end = data.lastIndexOf(0x0a);
        if (end < 0) {
          carry = Buffer.from(data);
          continue;
        }
        const text = data.subarray(0, end).toString('utf8');
        offset += end + 1;
        carry = Buffer.from(data.subarray(end + 1));
        this.insertLines(text.split('\n'), offset);
        // give the event loop back between chunks (a rebuild of a large log must not stall heartbeats)
        await new Promise((r) => setImmediate(r));
      }
    } finally {
      await fh.close();
    }
  }

  private insertLines(lines: string[], newOffset: number): void {
    const insEvent = this.db.prepare('INSERT INTO events (t, event, queue_id, spool, rest) VALUES (?, ?, ?, ?, ?)');
    const upMessage = this.db.prepare(`INSERT INTO messages (queue_id, message_id, sender, sender_domain, last) VALUES (?, ?, ?, ?, ?)
      ON CONFLICT (queue_id) DO UPDATE SET message_id = coalesce(message_id, excluded.message_id), sender = coalesce(sender, excluded.sender),
        sender_domain = coalesce(sender_domain, excluded.sender_domain), last = max(last, excluded.last)`);
    const insRcpt = this.db.prepare('INSERT OR IGNORE INTO rcpts (recipient, queue_id, domain) VALUES (?, ?, ?)');
    const tx = this.db.transaction(() => {
      for (const line of lines) {
        if (!line.startsWith('{')) { if (line.trim()) this.skipped++; continue; }
        // another node's line (a shared log file) is skipped without parsing it: TrackingLog writes
        // {"t":"<24-character ISO time>","node":…, so the node is at a fixed place
        if (line.startsWith('"node":', 32) && !line.startsWith(this.nodeTag, 32)) continue;
        let ev: Record<string, unknown>;
        try { ev = JSON.parse(line); } catch { this.skipped++; continue; }
        if (ev.node !== this.nodeId || typeof ev.event !== 'string') continue;
        const t = Date.parse(String(ev.t));
        if (Number.isNaN(t)) { this.skipped++; continue; }
        const queueId = typeof ev.queueId === 'string' ? ev.queueId : null;
        const rest: Record<string, unknown> = {};
        for (const [k, v] of Object.entries(ev)) if (!COLUMNS.has(k)) rest[k] = v;
        insEvent.run(t, ev.event, queueId, typeof ev.spool === 'string' && !queueId ? ev.spool : null, JSON.stringify(rest));
        if (!queueId) continue;
        const sender = typeof ev.sender === 'string' ? ev.sender : null;
        upMessage.run(queueId, typeof ev.messageId === 'string' && ev.messageId ? ev.messageId : null, sender, sender === null ? null : domainOf(sender.toLowerCase()), t);
        if (ev.event === 'dsn') continue; // its recipient is the DSN's (the original sender)
        for (const a of [ev.recipient, ev.original, ...(Array.isArray(ev.recipients) ? ev.recipients : [])]) {
          const l = lower(a);
          if (l) insRcpt.run(l, queueId, domainOf(l));
        }
      }
      this.setMeta('offset', newOffset);
    });
    tx();
  }

  /** Messages matching the query, newest first, each with all its events; and the cluster events about their spools. */
  search(q: TrackQuery): { messages: TrackedMessage[]; clusterEvents: IndexedEvent[] } {
    const where: string[] = [];
    const args: unknown[] = [];
    if (q.queueId) { where.push('m.queue_id = ?'); args.push(q.queueId); }
    if (q.messageId) {
      const id = q.messageId.trim();
      where.push('m.message_id IN (?, ?)');
      args.push(id, id.startsWith('<') ? id : `<${id}>`);
    }
    const addr = (text: string) => {
      const s = text.trim().toLowerCase();
      return s.includes('@') && !s.startsWith('@') ? { exact: s } : { domain: s.replace(/^@/, '') };
    };
    if (q.from) {
      const a = addr(q.from);
      if (a.exact) { where.push('m.sender = ?'); args.push(a.exact); } else { where.push('m.sender_domain = ?'); args.push(a.domain); }
    }
    if (q.to) {
      const a = addr(q.to);
      if (a.exact) { where.push('m.queue_id IN (SELECT queue_id FROM rcpts WHERE recipient = ?)'); args.push(a.exact); }
      else { where.push('m.queue_id IN (SELECT queue_id FROM rcpts WHERE domain = ?)'); args.push(a.domain); }
    }
    // time and outcome: the message had such an event (in that time)
    const ev: string[] = [];
    if (q.since !== undefined) { ev.push('e.t >= ?'); args.push(q.since); }
    if (q.until !== undefined) { ev.push('e.t <= ?'); args.push(q.until); }
    if (q.outcome) { ev.push('e.event = ?'); args.push(q.outcome); }
    if (ev.length) where.push(`EXISTS (SELECT 1 FROM events e WHERE e.queue_id = m.queue_id AND ${ev.join(' AND ')})`);
    const limit = Math.min(Math.max(1, q.limit ?? 100), MAX_LIMIT);
    // with a key to look up, start from its index and sort the few found ("+" keeps SQLite from
    // walking every message newest-first instead); with only a time range, walk newest-first
    const selective = !!(q.queueId || q.messageId || q.from || q.to);
    const found = this.db.prepare(`SELECT m.queue_id AS id, m.message_id AS messageId, m.sender AS sender FROM messages m
      ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY ${selective ? '+m.last' : 'm.last'} DESC LIMIT ?`).all(...args, limit) as Array<{ id: string; messageId: string | null; sender: string | null }>;
    if (found.length === 0) return { messages: [], clusterEvents: [] };
    const messages = new Map<string, TrackedMessage & { messageId: string | null; sender: string | null }>(found.map((f) => [f.id, { queueId: f.id, messageId: f.messageId, sender: f.sender, events: [] }]));
    const rows = this.db.prepare('SELECT queue_id AS id, t, event, rest FROM events WHERE queue_id IN (SELECT value FROM json_each(?)) ORDER BY t, id')
      .all(JSON.stringify(found.map((f) => f.id))) as Array<{ id: string; t: number; event: string; rest: string }>;
    let last = -Infinity;
    for (const r of rows) {
      const m = messages.get(r.id)!;
      m.events.push({ t: new Date(r.t).toISOString(), node: this.nodeId, event: r.event, queueId: r.id,
        ...(m.messageId && r.event !== 'dsn' ? { messageId: m.messageId } : {}), ...(m.sender !== null ? { sender: m.sender } : {}), ...JSON.parse(r.rest) });
      last = Math.max(last, r.t);
    }
    // the cluster events about these messages' spools up to their last event (a takeover by
    // this node comes before its first event of a message it took over)
    const spools = [...new Set(found.map((f) => f.id.slice(f.id.lastIndexOf('.') + 1)))];
    const clusterEvents = (this.db.prepare('SELECT t, event, rest FROM events WHERE queue_id IS NULL AND spool IN (SELECT value FROM json_each(?)) AND t <= ? ORDER BY t DESC, id DESC LIMIT 200')
      .all(JSON.stringify(spools), last) as Array<{ t: number; event: string; rest: string }>).reverse()
      .map((r) => ({ t: new Date(r.t).toISOString(), node: this.nodeId, event: r.event, ...JSON.parse(r.rest) }) as IndexedEvent);
    return { messages: [...messages.values()].map(({ queueId, events }) => ({ queueId, events })), clusterEvents };
  }

  /** Delete messages whose last event is older than maxAgeMs, and older cluster events. Returns how many events went. */
  prune(maxAgeMs: number, now = Date.now()): number {
    const cut = now - maxAgeMs;
    const tx = this.db.transaction(() => {
      const old = 'SELECT queue_id FROM messages WHERE last < ?';
      this.db.prepare(`DELETE FROM rcpts WHERE queue_id IN (${old})`).run(cut);
      const a = this.db.prepare(`DELETE FROM events WHERE queue_id IN (${old})`).run(cut).changes;
      this.db.prepare('DELETE FROM messages WHERE last < ?').run(cut);
      const b = this.db.prepare('DELETE FROM events WHERE queue_id IS NULL AND t < ?').run(cut).changes;
      return a + b;
    });
    return tx();
  }

  /** Rows and bytes on disk, for the console and the benchmark. */
  stats(): { events: number; bytes: number; offset: number } {
    const events = (this.db.prepare('SELECT COUNT(*) AS n FROM events').get() as { n: number }).n;
    let bytes = 0;
    for (const f of [this.dbFile, `${this.dbFile}-wal`]) { try { bytes += statSync(f).size; } catch { /* none */ } }
    return { events, bytes, offset: Number(this.meta('offset') ?? 0) };
  }

  async close(): Promise<void> {
    await this.syncing?.catch(() => undefined);
    this.db.close();
  }
}

/** Open the database; a file SQLite cannot read is moved aside and a new one built. */
function openDb(file: string): { db: Database.Database; rebuilt?: string } {
  mkdirSync(path.dirname(file), { recursive: true });
  const tryOpen = () => {
    const db = new Database(file);
    try {
      db.pragma('journal_mode = WAL');
      db.pragma('synchronous = NORMAL');
      // the recipient, sender and Message-ID indexes take inserts in random order: with the
      // default 16 MiB cache a large index is rewritten from disk page by page
      db.pragma('cache_size = -65536');
      db.pragma('mmap_size = 268435456');
      db.pragma('temp_store = MEMORY');
      const version = db.pragma('user_version', { simple: true }) as number;
      const tables = (db.prepare("SELECT count(*) AS n FROM sqlite_schema WHERE type = 'table'").get() as { n: number }).n;
      if (tables > 0 && version !== SCHEMA_VERSION) return { db, stale: version };
      db.transaction(() => {
        db.exec(SCHEMA);
        db.pragma(`user_version = ${SCHEMA_VERSION}`);
      })();
      return { db };
    } catch (err) {
      db.close();
      throw err;
    }
  };
  const moveAside = (to?: string) => {
    for (const ext of ['', '-wal', '-shm']) {
      try { if (to) renameSync(file + ext, to + ext); else unlinkSync(file + ext); } catch { /* none */ }
    }
  };
  let opened;
  try {
    opened = tryOpen();
  } catch (err) {
    if (!existsSync(file) || !/SQLITE_(NOTADB|CORRUPT)/.test(String((err as { code?: string }).code))) throw err;
    moveAside(`${file}.corrupt-${Date.now()}`);
    const { db } = tryOpen();
    return { db, rebuilt: 'the index file was damaged (moved aside)' };
  }
  if (opened.stale === undefined) return { db: opened.db };
  // another version's index: nothing in it is lost (the log is the record), so it is replaced
  opened.db.close();
  moveAside();
  const { db } = tryOpen();
  return { db, rebuilt: `the index file has schema version ${opened.stale}, this node uses ${SCHEMA_VERSION}` };
}
