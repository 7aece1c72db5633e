/**
 * qmgr/envelope-index.ts — what the operator's filters need of every queued message, in memory,
 * compact: the queue manager keeps one for its spool (in memory and on disk alike), so that
 * `tandem queue … --sender/--domain`, the console's list and counts, and qshape read no queue
 * file (a message's detail page and the action itself still do).
 *
 * Per message: queue id, state, sender, pending recipients, arrival, size, next attempt, last
 * reply. Memory (1,000,000 messages of one recipient: ~70 bytes each) is kept low by storing
 * columns in typed arrays, not an object per message:
 *   - a queue id of our format (queueid.ts) as two numbers and a node name number; any other
 *     id in a Map (rare: ids written by other software);
 *   - id → slot in an open-addressing hash table (Int32Array), not a Map of strings;
 *   - senders, recipient domains, node names and last replies interned (counted references:
 *     a value no message uses any more is dropped);
 *   - the pending recipients of a message as one block of bytes in an arena (local part UTF-8,
 *     domain as its interned number), rewritten in place when it shrinks (it only shrinks),
 *     the arena compacted when half of it is garbage.
 * Addresses are kept lower case (the filters are case-insensitive); times to the second.
 */
import type { QueueState } from '../spool/types.ts';
import type { QueueFile } from '../spool/index.ts';

export interface IndexedMessage {
  queueId: string;
  state: QueueState;
  /** Lower case; "" is the null sender. */
  sender: string;
  /** The recipients still pending, lower case. */
  recipients: string[];
  arrivedAt: number;
  size: number;
  nextAttemptAt?: number;
  lastReply?: string;
}

/** What the index holds of a queue file (its pending recipients, its retry time). */
export function indexedFromFile(info: Omit<QueueFile, 'message'>, state: QueueState): Omit<IndexedMessage, 'queueId'> {
  const env = info.envelope;
  return {
    state, sender: env.sender, recipients: info.pending.map((i) => env.recipients[i].address), arrivedAt: env.arrivedAt, size: info.size,
    ...(info.deferral ? { nextAttemptAt: info.deferral.nextAttemptAt, lastReply: info.deferral.lastReply } : {}),
  };
}

/** Which messages (every filter given must match); as QueueSelection (queue-listing.ts). */
export interface IndexFilter {
  ids?: string[];
  state?: QueueState;
  /** Exactly (case-insensitive); "" or "<>" the null sender. */
  sender?: string;
  senderDomain?: string;
  /** A pending recipient, exactly (case-insensitive). */
  recipient?: string;
  /** The domain of a pending recipient. */
  domain?: string;
  /** Arrived at least this long before `now`. */
  olderThanMs?: number;
}

export interface IndexShape {
  /** Per domain, the counts per age bucket. */
  rows: Map<string, number[]>;
  /** Messages counted. */
  messages: number;
}

const STATES: QueueState[] = ['incoming', 'active', 'deferred', 'hold', 'corrupt'];
const FREE = 255;
const FOREIGN = 0xffff;
const QUEUE_ID = /^([0-9A-Z]{9})\.([0-9A-Z]{8})\.([a-z0-9][a-z0-9_-]{0,31})$/;

/** Interned strings with counted references (id 0 is never used). */
class Pool {
  private readonly strs: Array<string | undefined> = [undefined];
  private readonly refs: number[] = [0];
  private readonly ids = new Map<string, number>();
  private readonly free: number[] = [];

  intern(s: string): number {
    let id = this.ids.get(s);
    if (id === undefined) {
      id = this.free.pop() ?? this.strs.length;
      this.strs[id] = s;
      this.refs[id] = 0;
      this.ids.set(s, id);
    }
    this.refs[id]++;
    return id;
  }

  release(id: number): void {
    if (id === 0 || --this.refs[id] > 0) return;
    this.ids.delete(this.strs[id]!);
    this.strs[id] = undefined;
    this.free.push(id);
  }

  lookup(s: string): number | undefined {
    return this.ids.get(s);
  }

  str(id: number): string {
    return this.strs[id] ?? '';
  }

  /** Ids of the strings `test` accepts. */
  matching(test: (s: string) => boolean): Set<number> {
    const out = new Set<number>();
    for (const [s, id] of this.ids) if (test(s)) out.add(id);
    return out;
  }
}

function splitAddress(address: string): { local: string; domain: string } {
  const a = address.toLowerCase();
  const at = a.lastIndexOf('@');
  return at < 0 ? { local: a, domain: '' } : { local: a.slice(0, at), domain: a.slice(at + 1) };
}

const DIGITS = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ';

/** n (an integer) in base 36, upper case, zero-padded to `width` (Number#toString(36) is slow on doubles). */
function base36(n: number, width: number): string {
  let out = '';
  for (let i = 0; i < width; i++) {
    const d = n % 36;
    out = DIGITS[d] + out;
    n = (n - d) / 36;
  }
  return out;
}

function mix(t: number, c: number, node: number): number {
  let h = Math.imul((t % 0x100000000) ^ Math.floor(t / 0x100000000), 0x9e3779b1);
  h = Math.imul(h ^ (c % 0x100000000) ^ Math.floor(c / 0x100000000), 0x85ebca77);
  h ^= node;
  h ^= h >>> 15;
  return Math.imul(h, 0xc2b2ae3d) >>> 0;
}

export class EnvelopeIndex {
  private cap = 0;
  private used = 0; // slots ever handed out (high-water mark)
  private live = 0;
  private readonly freeSlots: number[] = [];
  // columns, one entry per slot
  private idT = new Float64Array(0);
  private idC = new Float64Array(0);
  private node = new Uint16Array(0);
  private st = new Uint8Array(0);
  private arrived = new Uint32Array(0);
  private bytes = new Uint32Array(0);
  private next = new Uint32Array(0);
  private sender = new Uint32Array(0);
  private reply = new Uint32Array(0);
  private rOff = new Uint32Array(0);
  // id → slot + 1 (0: empty), native ids only
  private table = new Int32Array(1024);
  private readonly foreign = new Map<string, number>();
  private readonly foreignOf = new Map<number, string>();
  private readonly nodes = new Pool();
  private readonly senders = new Pool();
  private readonly domains = new Pool();
  private readonly replies = new Pool();
  // pending recipients: per slot a block at rOff: [count u16] then per recipient [domain u32][length u16][local part]
  private arena = Buffer.alloc(64 * 1024);
  private arenaEnd = 0;
  private garbage = 0;
  private readonly stateCounts = new Array<number>(STATES.length).fill(0);

  /** Every queued message is in the index (its start-up scan is through). */
  complete = false;

  get size(): number {
    return this.live;
  }

  has(queueId: string): boolean {
    return this.slotOf(queueId) >= 0;
  }

  /** Add a message, or replace what is known of it. */
  set(queueId: string, m: Omit<IndexedMessage, 'queueId'>): void {
    let slot = this.slotOf(queueId);
    if (slot >= 0) {
      this.clear(slot);
      this.stateCounts[this.st[slot]]--;
    } else slot = this.newSlot(queueId);
    this.st[slot] = STATES.indexOf(m.state);
    this.stateCounts[this.st[slot]]++;
    this.sender[slot] = this.senders.intern(m.sender.toLowerCase());
    this.arrived[slot] = Math.max(0, Math.floor(m.arrivedAt / 1000));
    this.bytes[slot] = Math.min(m.size, 0xffffffff);
    this.next[slot] = m.nextAttemptAt ? Math.ceil(m.nextAttemptAt / 1000) : 0;
    this.reply[slot] = m.lastReply ? this.replies.intern(m.lastReply) : 0;
    this.writeRecipients(slot, m.recipients);
  }

  /** Change what is known of a message (nothing if it is not in the index). */
  update(queueId: string, m: { state?: QueueState; recipients?: string[]; nextAttemptAt?: number | null; lastReply?: string }): void {
    const slot = this.slotOf(queueId);
    if (slot < 0) return;
    if (m.state !== undefined) {
      this.stateCounts[this.st[slot]]--;
      this.st[slot] = STATES.indexOf(m.state);
      this.stateCounts[this.st[slot]]++;
    }
    if (m.nextAttemptAt !== undefined) this.next[slot] = m.nextAttemptAt ? Math.ceil(m.nextAttemptAt / 1000) : 0;
    if (m.lastReply !== undefined) {
      this.replies.release(this.reply[slot]);
      this.reply[slot] = this.replies.intern(m.lastReply);
    }
    if (m.recipients) this.writeRecipients(slot, m.recipients, { at: this.rOff[slot], len: this.releaseRecipients(slot) });
  }

  delete(queueId: string): void {
    const slot = this.slotOf(queueId);
    if (slot < 0) return;
    this.clear(slot);
    this.stateCounts[this.st[slot]]--;
    this.st[slot] = FREE;
    this.sender[slot] = 0;
    if (this.node[slot] === FOREIGN) {
      this.foreign.delete(this.foreignOf.get(slot)!);
      this.foreignOf.delete(slot);
    } else {
      this.nodes.release(this.node[slot]);
      this.unhash(slot);
    }
    this.freeSlots.push(slot);
    this.live--;
  }

  get(queueId: string): IndexedMessage | undefined {
    const slot = this.slotOf(queueId);
    return slot < 0 ? undefined : this.read(slot);
  }

  /** Messages by state (the four queue states, corrupt/ is not indexed). */
  counts(): Record<string, number> {
    return { incoming: this.stateCounts[0], active: this.stateCounts[1], deferred: this.stateCounts[2], hold: this.stateCounts[3] };
  }

  /** The ids of the messages that match, with their state. */
  select(f: IndexFilter, now = Date.now()): { selected: Array<{ queueId: string; state: QueueState }>; missing: string[] } {
    const { slots, missing } = this.matchingSlots(f, now);
    return { selected: slots.map((s) => ({ queueId: this.idOf(s), state: STATES[this.st[s]] })), missing };
  }

  /** Page `page` (from 1) of `size` of the messages that match, newest queue id first. */
  page(f: IndexFilter, page: number, size: number, now = Date.now()): { rows: IndexedMessage[]; total: number } {
    const { slots } = this.matchingSlots(f, now);
    const k = page * size;
    let top: number[];
    if (k > 1000) {
      top = slots.sort((a, b) => this.compare(b, a)).slice(k - size, k);
    } else {
      // one pass keeping the newest k (no sort of everything for the pages people look at)
      top = [];
      for (const s of slots) {
        if (top.length === k && this.compare(s, top[k - 1]) <= 0) continue;
        let lo = 0;
        let hi = top.length;
        while (lo < hi) {
          const mid = (lo + hi) >> 1;
          if (this.compare(top[mid], s) > 0) lo = mid + 1; else hi = mid;
        }
        top.splice(lo, 0, s);
        if (top.length > k) top.pop();
      }
      top = top.slice(k - size);
    }
    return { rows: top.map((s) => this.read(s)), total: slots.length };
  }

  /**
   * Counts per destination domain and age bucket: `edgesMin` are the upper ends of the buckets
   * in minutes (a last bucket takes the older ones); per pending recipient, or per message
   * (once per domain it has pending recipients in).
   */
  shape(opts: { edgesMin: number[]; perRecipient: boolean; state?: QueueState; now?: number }): IndexShape {
    const now = Math.floor((opts.now ?? Date.now()) / 1000);
    const n = opts.edgesMin.length + 1;
    const byDomain = new Map<number, number[]>();
    const want = opts.state ? STATES.indexOf(opts.state) : -1;
    const seen = new Set<number>();
    let messages = 0;
    for (let s = 0; s < this.used; s++) {
      const state = this.st[s];
      if (state === FREE || (want >= 0 && state !== want)) continue;
      messages++;
      const minutes = Math.max(0, now - this.arrived[s]) / 60;
      let b = opts.edgesMin.findIndex((m) => minutes <= m);
      if (b < 0) b = n - 1;
      seen.clear();
      this.eachRecipient(s, (dom) => {
        if (!opts.perRecipient) {
          if (seen.has(dom)) return;
          seen.add(dom);
        }
        let counts = byDomain.get(dom);
        if (!counts) byDomain.set(dom, (counts = new Array<number>(n).fill(0)));
        counts[b]++;
      });
    }
    const rows = new Map<string, number[]>();
    for (const [dom, counts] of byDomain) rows.set(this.domains.str(dom) || '(no domain)', counts);
    return { rows, messages };
  }

  // ---- matching ----

  private matchingSlots(f: IndexFilter, nowMs: number): { slots: number[]; missing: string[] } {
    const missing: string[] = [];
    let candidates: number[] | undefined;
    if (f.ids) {
      candidates = [];
      for (const id of new Set(f.ids)) {
        const s = this.slotOf(id);
        if (s >= 0) candidates.push(s); else missing.push(id);
      }
    }
    const state = f.state ? STATES.indexOf(f.state) : -1;
    let sender: number | undefined;
    if (f.sender !== undefined) {
      const want = f.sender === '<>' ? '' : f.sender.replace(/^<(.*)>$/, '$1').toLowerCase();
      sender = this.senders.lookup(want) ?? -1;
    }
    const senderIn = f.senderDomain !== undefined ? this.senders.matching((s) => s.includes('@') && s.slice(s.lastIndexOf('@') + 1) === f.senderDomain!.replace(/^@/, '').toLowerCase()) : undefined;
    let rcptDomain: number | undefined;
    let rcptLocal: Uint8Array | undefined;
    if (f.recipient !== undefined) {
      const { local, domain } = splitAddress(f.recipient.replace(/^<(.*)>$/, '$1'));
      rcptDomain = this.domains.lookup(domain) ?? -1;
      rcptLocal = Buffer.from(local, 'utf8');
    }
    const domain = f.domain !== undefined ? this.domains.lookup(f.domain.replace(/^@/, '').toLowerCase()) ?? -1 : undefined;
    const arrivedBy = f.olderThanMs !== undefined ? (nowMs - f.olderThanMs) / 1000 : undefined;
    const slots: number[] = [];
    const st = this.st;
    const senders = this.sender;
    const arrived = this.arrived;
    const a = this.arena;
    const rOff = this.rOff;
    const wantDomain = domain ?? rcptDomain;
    const test = (s: number): boolean => {
      const x = st[s];
      if (x === FREE || x === 4 || (state >= 0 && x !== state)) return false;
      if (sender !== undefined && senders[s] !== sender) return false;
      if (senderIn && !senderIn.has(senders[s])) return false;
      if (arrivedBy !== undefined && arrived[s] > arrivedBy) return false;
      if (wantDomain === undefined) return true;
      // the recipients' block, read inline (this runs for every queued message)
      let o = rOff[s];
      const n = a[o] | (a[o + 1] << 8);
      o += 2;
      let domainOk = domain === undefined;
      let rcptOk = rcptDomain === undefined;
      for (let i = 0; i < n && !(domainOk && rcptOk); i++) {
        const dom = (a[o] | (a[o + 1] << 8) | (a[o + 2] << 16) | (a[o + 3] << 24)) >>> 0;
        const len = a[o + 4] | (a[o + 5] << 8);
        if (dom === domain) domainOk = true;
        if (dom === rcptDomain && len === rcptLocal!.length && a.compare(rcptLocal!, 0, len, o + 6, o + 6 + len) === 0) rcptOk = true;
        o += 6 + len;
      }
      return domainOk && rcptOk;
    };
    if (candidates) {
      for (const s of candidates) if (test(s)) slots.push(s);
    } else {
      for (let s = 0; s < this.used; s++) if (test(s)) slots.push(s);
    }
    return { slots, missing };
  }

  /** How many messages match (select() without making their ids). */
  count(f: IndexFilter, now = Date.now()): number {
    const only = Object.keys(f).filter((k) => f[k as keyof IndexFilter] !== undefined);
    if (only.length === 0) return this.live;
    if (only.length === 1 && f.state) return this.stateCounts[STATES.indexOf(f.state)]; // kept as it changes
    return this.matchingSlots(f, now).slots.length;
  }

  private eachRecipient(slot: number, fn: (domain: number, at: number, len: number) => void): void {
    this.someRecipient(slot, (d, at, len) => { fn(d, at, len); return false; });
  }

  private someRecipient(slot: number, fn: (domain: number, at: number, len: number) => boolean): boolean {
    const a = this.arena;
    let o = this.rOff[slot];
    const n = a.readUInt16LE(o);
    o += 2;
    for (let i = 0; i < n; i++) {
      const dom = a.readUInt32LE(o);
      const len = a.readUInt16LE(o + 4);
      if (fn(dom, o + 6, len)) return true;
      o += 6 + len;
    }
    return false;
  }

  // ---- storage ----

  private read(slot: number): IndexedMessage {
    const recipients: string[] = [];
    this.eachRecipient(slot, (dom, at, len) => {
      const local = this.arena.toString('utf8', at, at + len);
      const d = this.domains.str(dom);
      recipients.push(d ? `${local}@${d}` : local);
    });
    return {
      queueId: this.idOf(slot), state: STATES[this.st[slot]], sender: this.senders.str(this.sender[slot]), recipients,
      arrivedAt: this.arrived[slot] * 1000, size: this.bytes[slot],
      ...(this.next[slot] ? { nextAttemptAt: this.next[slot] * 1000 } : {}),
      ...(this.reply[slot] ? { lastReply: this.replies.str(this.reply[slot]) } : {}),
    };
  }

  /** Release what a slot refers to (not its id, not its state). */
  private clear(slot: number): void {
    this.senders.release(this.sender[slot]);
    this.replies.release(this.reply[slot]);
    this.reply[slot] = 0;
    this.releaseRecipients(slot);
  }

  /** Release a slot's recipients; their block becomes garbage (returns its length). */
  private releaseRecipients(slot: number): number {
    let len = 2;
    this.eachRecipient(slot, (dom, _at, l) => {
      this.domains.release(dom);
      len += 6 + l;
    });
    this.garbage += len;
    this.arena.writeUInt16LE(0, this.rOff[slot]); // an empty block until rewritten
    return len;
  }

  /** Write a slot's recipients: in `reuse` (the block just released) when they fit, else in a new block. */
  private writeRecipients(slot: number, recipients: string[], reuse?: { at: number; len: number }): void {
    const parts = recipients.map((r) => {
      const { local, domain } = splitAddress(r);
      return { dom: this.domains.intern(domain), local, bytes: Math.min(Buffer.byteLength(local), 0xffff) };
    });
    const len = 2 + parts.reduce((n, p) => n + 6 + p.bytes, 0);
    let at: number;
    if (reuse && len <= reuse.len) {
      at = reuse.at;
      this.garbage -= len;
    } else at = this.alloc(len, slot);
    this.rOff[slot] = at;
    const a = this.arena;
    a.writeUInt16LE(parts.length, at);
    let o = at + 2;
    for (const p of parts) {
      a.writeUInt32LE(p.dom, o);
      a.writeUInt16LE(p.bytes, o + 4);
      a.write(p.local, o + 6, p.bytes, 'utf8');
      o += 6 + p.bytes;
    }
  }

  /** Room for a block of `len` bytes, for `slot` (whose old block, if any, is garbage). */
  private alloc(len: number, slot: number): number {
    if (this.arenaEnd + len > this.arena.length) {
      if (this.garbage > this.arenaEnd / 2) this.compact(len, slot);
      if (this.arenaEnd + len > this.arena.length) {
        const bigger = Buffer.alloc(Math.max(this.arena.length * 2, this.arenaEnd + len));
        this.arena.copy(bigger, 0, 0, this.arenaEnd);
        this.arena = bigger;
      }
    }
    const at = this.arenaEnd;
    this.arenaEnd += len;
    return at;
  }

  /** Copy the live blocks (not `skip`'s) to the start of a new arena. */
  private compact(extra: number, skip: number): void {
    const liveBytes = this.arenaEnd - this.garbage;
    const next = Buffer.alloc(Math.max(64 * 1024, Math.ceil((liveBytes + extra) * 1.5)));
    let end = 0;
    for (let s = 0; s < this.used; s++) {
      if (this.st[s] === FREE || s === skip) continue;
      const from = this.rOff[s];
      let o = from + 2;
      const n = this.arena.readUInt16LE(from);
      for (let i = 0; i < n; i++) o += 6 + this.arena.readUInt16LE(o + 4);
      this.arena.copy(next, end, from, o);
      this.rOff[s] = end;
      end += o - from;
    }
    this.arena = next;
    this.arenaEnd = end;
    this.garbage = 0;
  }

  private newSlot(queueId: string): number {
    let slot = this.freeSlots.pop();
    if (slot === undefined) {
      if (this.used === this.cap) this.grow();
      slot = this.used++;
    }
    this.live++;
    if (this.parse(queueId)) {
      this.idT[slot] = this.pT;
      this.idC[slot] = this.pC;
      this.node[slot] = this.nodes.intern(this.pNode);
      this.rehashIfFull();
      this.hashIn(slot);
    } else {
      this.node[slot] = FOREIGN;
      this.foreign.set(queueId, slot);
      this.foreignOf.set(slot, queueId);
    }
    this.st[slot] = FREE; // until set() fills it (compact() skips it)
    this.sender[slot] = 0;
    this.reply[slot] = 0;
    return slot;
  }

  private grow(): void {
    const cap = Math.max(1024, this.cap * 2);
    const g = <T extends Float64Array | Uint32Array | Uint16Array | Uint8Array>(a: T, make: new (n: number) => T): T => {
      const b = new make(cap);
      b.set(a);
      return b;
    };
    this.idT = g(this.idT, Float64Array);
    this.idC = g(this.idC, Float64Array);
    this.node = g(this.node, Uint16Array);
    this.st = g(this.st, Uint8Array);
    this.arrived = g(this.arrived, Uint32Array);
    this.bytes = g(this.bytes, Uint32Array);
    this.next = g(this.next, Uint32Array);
    this.sender = g(this.sender, Uint32Array);
    this.reply = g(this.reply, Uint32Array);
    this.rOff = g(this.rOff, Uint32Array);
    this.cap = cap;
  }

  private idOf(slot: number): string {
    if (this.node[slot] === FOREIGN) return this.foreignOf.get(slot)!;
    return `${base36(this.idT[slot], 9)}.${base36(this.idC[slot], 8)}.${this.nodes.str(this.node[slot])}`;
  }

  /** Queue id order (what sorting the id strings gives). */
  private compare(a: number, b: number): number {
    if (this.node[a] !== FOREIGN && this.node[b] !== FOREIGN) {
      if (this.idT[a] !== this.idT[b]) return this.idT[a] - this.idT[b];
      if (this.idC[a] !== this.idC[b]) return this.idC[a] - this.idC[b];
      if (this.node[a] === this.node[b]) return 0;
    }
    const x = this.idOf(a);
    const y = this.idOf(b);
    return x < y ? -1 : x > y ? 1 : 0;
  }

  // ---- id → slot (linear probing; deletion by backward shift) ----

  // the last id parsed (set() parses once for slotOf and newSlot)
  private pId = '';
  private pT = 0;
  private pC = 0;
  private pNode = '';

  /** Parse an id of our format into pT, pC, pNode; false for any other id. */
  private parse(queueId: string): boolean {
    if (queueId === this.pId) return true;
    const m = QUEUE_ID.exec(queueId);
    if (!m) return false;
    this.pId = queueId;
    this.pT = parseInt(m[1], 36);
    this.pC = parseInt(m[2], 36);
    this.pNode = m[3];
    return true;
  }

  private slotOf(queueId: string): number {
    if (!this.parse(queueId)) return this.foreign.get(queueId) ?? -1;
    const node = this.nodes.lookup(this.pNode);
    if (node === undefined) return -1;
    const t = this.pT;
    const c = this.pC;
    const mask = this.table.length - 1;
    for (let i = mix(t, c, node) & mask; ; i = (i + 1) & mask) {
      const v = this.table[i];
      if (v === 0) return -1;
      const s = v - 1;
      if (this.idT[s] === t && this.idC[s] === c && this.node[s] === node) return s;
    }
  }

  private hashIn(slot: number): void {
    const mask = this.table.length - 1;
    let i = mix(this.idT[slot], this.idC[slot], this.node[slot]) & mask;
    while (this.table[i] !== 0) i = (i + 1) & mask;
    this.table[i] = slot + 1;
  }

  private hashed = 0;
  private rehashIfFull(): void {
    if (++this.hashed * 2 <= this.table.length) return;
    const old = this.table;
    this.table = new Int32Array(old.length * 2);
    for (const v of old) if (v !== 0) this.hashIn(v - 1);
  }

  private unhash(slot: number): void {
    const mask = this.table.length - 1;
    let i = mix(this.idT[slot], this.idC[slot], this.node[slot]) & mask;
    while (this.table[i] !== slot + 1) i = (i + 1) & mask;
    this.table[i] = 0;
    this.hashed--;
    // move back the entries after it that belong before the hole
    for (let j = (i + 1) & mask; this.table[j] !== 0; j = (j + 1) & mask) {
      const s = this.table[j] - 1;
      const home = mix(this.idT[s], this.idC[s], this.node[s]) & mask;
      if (((j - home) & mask) >= ((j - i) & mask)) {
        this.table[i] = this.table[j];
        this.table[j] = 0;
        i = j;
      }
    }
  }
}
