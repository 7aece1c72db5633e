/**
 * maildir-owner.ts — who owns delivered Maildir folders and files, and with which mode
 * (config `local.maildir_owners`; the directory's uidNumber/gidNumber per mailbox).
 *
 * Keys are a mailbox address ("alice@example.com"), a domain ("example.com") or "*"; the most
 * specific key wins as a whole. User and group names are resolved once, when the lookup is
 * built, with `getent` (so NSS sources such as LDAP or sssd count, as for any daemon); numbers
 * are used as they are. Folders get the file mode with x added wherever r is set (0660 → 0770).
 *
 * What can go wrong: an unknown user or group name → an Error naming it, at start-up (the node
 * does not start with a config it cannot apply).
 * Config read: local.maildir_owners (passed in).
 */
import { execFileSync } from 'node:child_process';
import type { MailboxOwner } from '../router/types.ts';

/** Numeric owner, group and file mode; absent fields keep the defaults (the node's user, 0600). */
export interface MaildirOwnership {
  uid?: number;
  gid?: number;
  /** File mode, e.g. 0o660. */
  mode?: number;
}

/** The ownership for one delivery: the mailbox address, and the route's owner from the directory. */
export type OwnerLookup = (address: string, routeOwner?: MailboxOwner) => MaildirOwnership | undefined;

export interface MaildirOwnerConfig {
  owner?: string | number;
  group?: string | number;
  mode?: string;
}

/** Build the lookup from the config (names resolved now; see header). */
export function ownerLookup(config: Record<string, MaildirOwnerConfig>): OwnerLookup {
  const table = new Map<string, MaildirOwnership>();
  for (const [key, c] of Object.entries(config)) {
    const gid = c.group === undefined ? undefined : resolveGroup(c.group, `local.maildir_owners."${key}".group`);
    const uid = c.owner === undefined ? undefined : resolveUser(c.owner, `local.maildir_owners."${key}".owner`);
    table.set(key.toLowerCase(), {
      ...(uid !== undefined ? { uid } : {}),
      ...(gid !== undefined ? { gid } : {}),
      ...(c.mode !== undefined ? { mode: parseInt(c.mode, 8) } : {}),
    });
  }
  return (address, routeOwner) => {
    const lower = address.toLowerCase();
    const domain = lower.slice(lower.lastIndexOf('@') + 1);
    const configured = table.get(lower) ?? table.get(domain) ?? table.get('*');
    if (!configured && !routeOwner) return undefined;
    return { ...configured, ...routeOwner };
  };
}

/** Folder mode for a file mode: x wherever r is set. */
export function folderMode(fileMode: number): number {
  return fileMode | ((fileMode & 0o444) >> 2);
}

/** A user name or uid → uid. */
export function resolveUser(user: string | number, what: string): number {
  return resolveId(user, 'passwd', what);
}

/** A group name or gid → gid. */
export function resolveGroup(group: string | number, what: string): number {
  return resolveId(group, 'group', what);
}

function resolveId(value: string | number, database: 'passwd' | 'group', what: string): number {
  if (typeof value === 'number') return value;
  if (/^\d+$/.test(value)) return Number(value);
  let line = '';
  try {
    line = execFileSync('getent', [database, value], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).split('\n')[0];
  } catch {
    // getent exits 2 for an unknown name
  }
  const id = line.split(':')[2];
  if (!id || !/^\d+$/.test(id)) {
    throw new Error(`${what}: no ${database === 'passwd' ? 'user' : 'group'} named "${value}" on this machine (getent ${database} ${value})`);
  }
  return Number(id);
}
