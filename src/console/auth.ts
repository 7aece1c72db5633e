/**
 * console/auth.ts — who may use the web console: login, sessions, roles, CSRF tokens.
 *
 * Login: the admin token (user field "admin" or empty; role operator) or a user of
 * admin.console.users (scrypt hash as made by `tandem passwd hash`; role operator or
 * read-only). An unknown user still costs one scrypt, so timing does not tell which exist.
 * Sessions live in memory (a restart logs everyone out): a random 256-bit id in an HttpOnly,
 * SameSite=Strict cookie (Secure under admin.tls) scoped to /console; a session ends after
 * admin.console.session_idle without a request and admin.console.session_max after login.
 * Each session has its own CSRF token, required (form field `_csrf`, compared in constant
 * time) by every state-changing request.
 * Failed logins are throttled per client address and per user (login-throttle.ts,
 * admin.console.login): a blocked attempt is refused before its password is checked.
 */
import { randomBytes, timingSafeEqual, createHash } from 'node:crypto';
import { verifyPassword, hashPassword } from '../router/passwords.ts';
import type { TandemConfig } from '../config/schema.ts';
import { LoginThrottle, type LoginBlock } from './login-throttle.ts';

export type Role = 'operator' | 'read-only';

export interface Session {
  id: string;
  user: string;
  role: Role;
  csrf: string;
  created: number;
  seen: number;
}

export const SESSION_COOKIE = 'tandem_console';

/**
 * What a login attempt came to: a session; or refused, with `blocked` when the address or
 * user is throttled — before the password was checked (`checked` false), or because this
 * failure started a delay or a lockout.
 */
export type LoginResult =
  | { ok: true; session: Session }
  | { ok: false; checked: boolean; blocked?: LoginBlock };

/** Equal strings in constant time (hashes first, so lengths do not leak). */
function same(a: string, b: string): boolean {
  const h = (s: string) => createHash('sha256').update(s).digest();
  return timingSafeEqual(h(a), h(b));
}

export class ConsoleAuth {
  private sessions = new Map<string, Session>();
  private dummyHash?: Promise<string>;
  private readonly throttle: LoginThrottle;

  constructor(private readonly c: TandemConfig['admin'], private readonly now: () => number = Date.now) {
    const l = c.console.login;
    this.throttle = new LoginThrottle({ freeFailures: l.free_failures, lockoutAfter: l.lockout_after, baseDelay: l.delay, lockout: l.lockout, now });
  }

  /** Whether anyone can log in at all (an admin token or at least one user). */
  get enabled(): boolean {
    return this.c.console.enabled && (!!this.c.token || this.c.console.users.length > 0);
  }

  /**
   * A login from the client at `address`. The attempt is counted as a failure before its
   * password is checked (scrypt takes a while), and forgiven if it was right: attempts sent in
   * parallel are throttled too, not only those that wait for the previous answer.
   */
  async login(user: string, password: string, address: string): Promise<LoginResult> {
    const name = user.trim() || 'admin';
    const blocked = this.throttle.blocked(address, name);
    if (blocked) return { ok: false, checked: false, blocked };
    const ifWrong = this.throttle.failed(address, name);
    const session = await this.check(name, password);
    if (!session) return { ok: false, checked: true, ...(ifWrong ? { blocked: ifWrong } : {}) };
    this.throttle.succeeded(address, name);
    return { ok: true, session };
  }

  private async check(name: string, password: string): Promise<Session | undefined> {
    let role: Role | undefined;
    if (name === 'admin' && this.c.token && same(password, this.c.token)) role = 'operator';
    const u = this.c.console.users.find((x) => x.name === name);
    if (!role) {
      if (u) { if (await verifyPassword(password, u.password)) role = u.role; } else {
        this.dummyHash ??= hashPassword(randomBytes(16).toString('hex'));
        await verifyPassword(password, await this.dummyHash);
      }
    }
    if (!role) return undefined;
    this.expire();
    const s: Session = { id: randomBytes(32).toString('base64url'), user: name, role, csrf: randomBytes(32).toString('base64url'), created: this.now(), seen: this.now() };
    this.sessions.set(s.id, s);
    return s;
  }

  /** The live session for a Cookie header, touched; undefined when none or expired. */
  session(cookieHeader: string | undefined): Session | undefined {
    const id = parseCookie(cookieHeader)[SESSION_COOKIE];
    if (!id) return undefined;
    const s = this.sessions.get(id);
    if (!s) return undefined;
    const t = this.now();
    if (t - s.seen > this.c.console.session_idle || t - s.created > this.c.console.session_max) {
      this.sessions.delete(id);
      return undefined;
    }
    s.seen = t;
    return s;
  }

  checkCsrf(s: Session, token: unknown): boolean {
    return typeof token === 'string' && same(token, s.csrf);
  }

  logout(s: Session): void {
    this.sessions.delete(s.id);
  }

  cookie(s: Session | undefined, secure: boolean): string {
    const attrs = `Path=/console; HttpOnly; SameSite=Strict${secure ? '; Secure' : ''}`;
    return s ? `${SESSION_COOKIE}=${s.id}; ${attrs}` : `${SESSION_COOKIE}=; ${attrs}; Max-Age=0`;
  }

  private expire(): void {
    const t = this.now();
    for (const [id, s] of this.sessions) {
      if (t - s.seen > this.c.console.session_idle || t - s.created > this.c.console.session_max) this.sessions.delete(id);
    }
  }
}

function parseCookie(header: string | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of (header ?? '').split(';')) {
    const i = part.indexOf('=');
    if (i > 0) out[part.slice(0, i).trim()] = part.slice(i + 1).trim();
  }
  return out;
}
