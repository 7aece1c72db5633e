/**
 * router/tables/table-file.ts — read Postfix-style lookup table text files (`key value`).
 *
 * loadTableEntries keeps each value's line, for callers that check values and must name it.
 *
 * Format (as Postfix postmap(1) source files, plus aliases(5) `key: value`):
 *  - blank lines, whitespace-only lines and lines whose first non-blank character is `#` are ignored;
 *  - a line starting with whitespace continues the previous entry (joined with one space);
 *  - key = first whitespace-delimited token, lower-cased; one trailing `:` is stripped (aliases
 *    style) unless `colonKeys: false` (network tables, where `2001:db8::` ends in a colon);
 *  - value = the rest of the logical line, trimmed;
 *  - a duplicate key: the later entry wins and `warn` is called with both line numbers.
 *
 * What can go wrong: the file cannot be read → Error "cannot read table NAME (PATH): ENOENT (no such file); ...";
 * a bad line → TableFormatError "PATH:LINE: what is wrong" (continuation line with nothing to
 * continue, missing value when one is required).
 * Config keys: none (callers pass the paths from tables.*).
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { TandemError } from '../../util/errors.ts';

/** A table line that cannot be used; names the file and the line. */
export class TableFormatError extends TandemError {
  readonly code = 'TABLE_FORMAT';
  readonly file: string;
  readonly line: number;
  constructor(file: string, line: number, message: string) {
    super(`${file}:${line}: ${message}`);
    this.name = 'TableFormatError';
    this.file = file;
    this.line = line;
  }
}

export interface TableLoadOptions {
  /** Name used in the "cannot read" message, e.g. "local_domains". Default: the file's base name. */
  name?: string;
  /** Called for duplicate keys. Default: ignore. */
  warn?: (msg: string, fields?: object) => void;
  /** Whether every key needs a value (default true). Domain and network lists set false. */
  valueRequired?: boolean;
  /** Whether to strip one trailing ':' from keys (aliases(5) style). Default true. */
  colonKeys?: boolean;
}

export interface TableEntry {
  value: string;
  /** Line number (1-based) where the entry starts, for error messages. */
  line: number;
}

/** Read a table file into key → { value, line }. */
export async function loadTableEntries(file: string, opts: TableLoadOptions = {}): Promise<Map<string, TableEntry>> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const name = opts.name ?? path.basename(file);
    const why = e.code === 'ENOENT' ? 'ENOENT (no such file)' : e.code === 'EACCES' ? 'EACCES (permission denied)' : e.code === 'EISDIR' ? 'EISDIR (a folder, not a file)' : e.message;
    throw new Error(`cannot read table ${name} (${file}): ${why}; check the path given for it in the config file and the file permissions`, { cause: err });
  }
  return parseTableText(text, file, opts);
}

/** Read a table file into key → value. */
export async function loadTable(file: string, opts: TableLoadOptions = {}): Promise<Map<string, string>> {
  const entries = await loadTableEntries(file, opts);
  return new Map([...entries].map(([key, entry]) => [key, entry.value]));
}

/** Parse table text; `file` is only used in messages. Exported for the tests of other table kinds. */
function parseTableText(text: string, file: string, opts: TableLoadOptions = {}): Map<string, TableEntry> {
  const valueRequired = opts.valueRequired ?? true;
  const colonKeys = opts.colonKeys ?? true;
  const entries = new Map<string, TableEntry>();
  const logical: { text: string; line: number }[] = [];

  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i];
    const trimmed = raw.trim();
    if (trimmed === '' || trimmed.startsWith('#')) continue;
    if (/^\s/.test(raw)) {
      const previous = logical.at(-1);
      if (!previous) throw new TableFormatError(file, i + 1, 'continuation line (starts with whitespace) but there is no entry before it to continue');
      previous.text += ' ' + trimmed;
    } else {
      logical.push({ text: trimmed, line: i + 1 });
    }
  }

  for (const { text: entryText, line } of logical) {
    const m = /^(\S+)\s*(.*)$/s.exec(entryText)!;
    let key = m[1].toLowerCase();
    const value = m[2].trim();
    if (colonKeys && key.endsWith(':') && key.length > 1) key = key.slice(0, -1);
    if (valueRequired && value === '') throw new TableFormatError(file, line, `missing value for key "${key}"`);
    const earlier = entries.get(key);
    if (earlier) {
      opts.warn?.(`${file}:${line}: duplicate key "${key}" (first at line ${earlier.line}); the later entry wins`, { file, line, key });
    }
    entries.set(key, { value, line });
  }
  return entries;
}
