/**
 * router/passwords.ts — the SMTP AUTH password table and scrypt password hashes.
 *
 * Table lines: `user  scrypt$<N>$<r>$<p>$<salt base64>$<hash base64>` (table-file.ts syntax).
 * hashPassword uses N=16384, r=8, p=1, a 16-byte random salt and a 32-byte key. Verification
 * uses the parameters stored in the hash and timingSafeEqual. An unknown user still costs one
 * scrypt with the default parameters, so response time does not tell which users exist.
 * XXX: user names are compared case-insensitively (table keys are lower-cased) and passwords
 * are normalised to Unicode NFC and hashed as UTF-8 (not full SASLprep).
 * What can go wrong: a line with another hash format (crypt "$6$", "{SSHA}", plain text) or
 * out-of-range scrypt parameters → TableFormatError naming file:line, at load time (the hash
 * itself is never printed). verifyPassword throws on a malformed stored hash (a bug or a
 * table that was not loaded through PasswordTable).
 * Config keys: none directly (the caller passes the path, smtp.auth_passwords).
 */
import { randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from 'node:crypto';
import { loadTableEntries, TableFormatError } from './tables/table-file.ts';

const DEFAULT = { N: 16384, r: 8, p: 1, saltBytes: 16, keyBytes: 32 };
/** Limits on stored parameters, so a table line cannot make each AUTH cost gigabytes. */
const MAX_N = 2 ** 20;
const MAX_R = 32;
const MAX_P = 16;

interface ScryptHash {
  N: number;
  r: number;
  p: number;
  salt: Buffer;
  hash: Buffer;
}

/** Promise wrapper of crypto.scrypt with enough maxmem for the parameters. */
function scryptAsync(password: string, salt: Buffer, keyBytes: number, params: { N: number; r: number; p: number }): Promise<Buffer> {
  const options: ScryptOptions = { N: params.N, r: params.r, p: params.p, maxmem: 256 * params.N * params.r + 1024 * 1024 };
  return new Promise((resolve, reject) => {
    scrypt(password.normalize('NFC'), salt, keyBytes, options, (err, key) => (err ? reject(err) : resolve(key)));
  });
}

/** Parse "scrypt$N$r$p$salt$hash"; throws Error saying what is wrong (never echoing the hash). */
function parseScryptHash(stored: string): ScryptHash {
  const parts = stored.trim().split('$');
  if (parts.length !== 6 || parts[0] !== 'scrypt') {
    throw new Error('unsupported password hash format; expected scrypt$N$r$p$salt$hash (make one with hashPassword / the tandem CLI)');
  }
  const [N, r, p] = parts.slice(1, 4).map((n) => (/^\d{1,8}$/.test(n) ? Number(n) : NaN));
  if (!(N > 1 && N <= MAX_N && (N & (N - 1)) === 0)) throw new Error(`scrypt N must be a power of two from 2 to ${MAX_N}`);
  if (!(r >= 1 && r <= MAX_R)) throw new Error(`scrypt r must be from 1 to ${MAX_R}`);
  if (!(p >= 1 && p <= MAX_P)) throw new Error(`scrypt p must be from 1 to ${MAX_P}`);
  const base64 = /^[A-Za-z0-9+/]+={0,2}$/;
  if (!base64.test(parts[4]) || !base64.test(parts[5])) throw new Error('scrypt salt and hash must be base64');
  const salt = Buffer.from(parts[4], 'base64');
  const hash = Buffer.from(parts[5], 'base64');
  if (salt.length < 8) throw new Error('scrypt salt must be at least 8 bytes');
  if (hash.length < 16 || hash.length > 64) throw new Error('scrypt hash must be 16 to 64 bytes');
  return { N, r, p, salt, hash };
}

/** Hash a password for the table: scrypt$16384$8$1$<salt>$<hash>. */
export async function hashPassword(plain: string): Promise<string> {
  const salt = randomBytes(DEFAULT.saltBytes);
  const key = await scryptAsync(plain, salt, DEFAULT.keyBytes, DEFAULT);
  return `scrypt$${DEFAULT.N}$${DEFAULT.r}$${DEFAULT.p}$${salt.toString('base64')}$${key.toString('base64')}`;
}

/** Whether `plain` matches a stored scrypt hash (constant-time compare). */
export async function verifyPassword(plain: string, stored: string): Promise<boolean> {
  return verifyParsed(plain, parseScryptHash(stored));
}

async function verifyParsed(plain: string, stored: ScryptHash): Promise<boolean> {
  const key = await scryptAsync(plain, stored.salt, stored.hash.length, stored);
  return timingSafeEqual(key, stored.hash);
}

/** A dummy hash for unknown users: same cost as a default hash, matches no password. */
const DUMMY: ScryptHash = { ...DEFAULT, salt: Buffer.alloc(DEFAULT.saltBytes), hash: Buffer.alloc(DEFAULT.keyBytes) };

export class PasswordTable {
  private readonly users: ReadonlyMap<string, ScryptHash>;

  private constructor(users: Map<string, ScryptHash>) {
    this.users = users;
  }

  /** Load and check a password table; throws naming file:line on an unsupported hash. */
  static async load(file: string, opts: { name?: string; warn?: (msg: string, fields?: object) => void } = {}): Promise<PasswordTable> {
    const entries = await loadTableEntries(file, { name: opts.name ?? 'passwords', warn: opts.warn });
    const users = new Map<string, ScryptHash>();
    for (const [user, { value, line }] of entries) {
      try {
        users.set(user, parseScryptHash(value));
      } catch (err) {
        throw new TableFormatError(file, line, `user "${user}": ${(err as Error).message}`);
      }
    }
    return new PasswordTable(users);
  }

  get size(): number {
    return this.users.size;
  }

  /** Check a user's password; an unknown user costs the same scrypt and gives false. */
  async verify(user: string, pass: string): Promise<boolean> {
    const stored = this.users.get(user.toLowerCase());
    if (!stored) {
      await verifyParsed(pass, DUMMY);
      return false;
    }
    return verifyParsed(pass, stored);
  }
}
