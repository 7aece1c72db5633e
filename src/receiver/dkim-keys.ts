/**
 * receiver/dkim-keys.ts — the DKIM signing keys by From: domain: from dkim.keys (PEM files, read
 * and checked at start) and, with dkim.directory, from the directory's tandemDkimDomain entries.
 *
 * A key is an RSA key of at least 1024 bits (RFC 8301; 2048 recommended) or an Ed25519 key
 * (RFC 8463), in PEM. dkim.keys are read at start: an unreadable or unusable file stops the
 * start, naming the file. For a domain not in dkim.keys, the directory is asked (through the
 * directory's lookup cache: directory.cache_ttl, stale answers while it is down). The entry
 * carries the selector and either the key itself (tandemDkimPrivateKey) or the path of a PEM
 * file on the node (tandemDkimKeyFile), read when the entry is (re)loaded. An entry that does
 * not give a usable key, or a directory that cannot answer, is a TempLookupError naming the
 * entry (or the failure): the receiver answers 451 and the client keeps the message — mail from
 * that domain is not sent on unsigned, which its DMARC policy could make receivers refuse.
 * `tandem config check` uses checkSigningKey and loadDirectoryKey to report the same problems.
 * Config keys: dkim.keys, dkim.directory (via the caller).
 */
import { createPrivateKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { TempLookupError } from '../util/errors.ts';
import type { DirectoryDkimEntry } from '../router/directory/directory-source.ts';

export interface SigningKey {
  selector: string;
  /** PEM. */
  privateKey: string;
}

/** The directory's answer for a domain: its entry, a TempLookupError naming a bad entry, or none. */
export type DirectoryDkimLookup = (domain: string) => Promise<DirectoryDkimEntry | TempLookupError | undefined>;

/** Check a PEM private key for DKIM signing; throws an Error starting with `where`. */
export function checkSigningKey(pem: string, where: string): void {
  let key;
  try {
    key = createPrivateKey(pem);
  } catch (err) {
    throw new Error(`${where}: not a PEM private key (${(err as Error).message})`);
  }
  const type = key.asymmetricKeyType;
  if (type === 'ed25519') return;
  if (type !== 'rsa') throw new Error(`${where}: a ${type} key; DKIM signs with RSA or Ed25519`);
  const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
  if (bits < 1024) throw new Error(`${where}: an RSA key of ${bits} bits; DKIM needs at least 1024 (RFC 8301), 2048 recommended`);
}

/** The key of a directory entry, read and checked; throws TempLookupError naming the entry. */
export async function loadDirectoryKey(e: DirectoryDkimEntry): Promise<SigningKey> {
  let pem = e.privateKey;
  let where = `directory entry ${e.dn}: tandemDkimPrivateKey`;
  if (e.keyFile !== undefined) {
    where = `directory entry ${e.dn}: tandemDkimKeyFile ${e.keyFile}`;
    try {
      pem = await readFile(e.keyFile, 'utf8');
    } catch (err) {
      throw new TempLookupError(`${where}: cannot read it (${(err as Error).message})`);
    }
  }
  try {
    checkSigningKey(pem ?? '', where);
  } catch (err) {
    throw new TempLookupError((err as Error).message);
  }
  return { selector: e.selector, privateKey: pem! };
}

export class DkimKeys {
  private readonly fromConfig = new Map<string, SigningKey>();
  /** Keys of directory entries, per cached entry object (a reloaded entry is read again). */
  private readonly loaded = new WeakMap<DirectoryDkimEntry, Promise<SigningKey>>();

  constructor(keys: ReadonlyArray<{ domain: string; selector: string; key_file: string }>, private readonly directory?: DirectoryDkimLookup) {
    for (const k of keys) {
      const where = `dkim.keys: the key of ${k.domain} (${k.key_file})`;
      let pem: string;
      try {
        pem = readFileSync(k.key_file, 'utf8');
      } catch (err) {
        throw new Error(`${where}: cannot read it: ${(err as Error).message}`);
      }
      checkSigningKey(pem, where);
      this.fromConfig.set(k.domain.toLowerCase(), { selector: k.selector, privateKey: pem });
    }
  }

  /** Could any domain have a key? (Otherwise no message needs to be held for signing.) */
  get any(): boolean {
    return this.fromConfig.size > 0 || this.directory !== undefined;
  }

  /** The key to sign mail from `domain` with; undefined if it has none; TempLookupError when it cannot be known now. */
  async keyFor(domain: string): Promise<SigningKey | undefined> {
    const d = domain.toLowerCase();
    const configured = this.fromConfig.get(d);
    if (configured || !this.directory) return configured;
    const entry = await this.directory(d);
    if (entry instanceof TempLookupError) throw entry;
    if (!entry) return undefined;
    let key = this.loaded.get(entry);
    if (!key) {
      // a failure is not kept: a key file put right is used with the next message
      key = loadDirectoryKey(entry).catch((err) => {
        this.loaded.delete(entry);
        throw err;
      });
      this.loaded.set(entry, key);
    }
    return key;
  }
}
