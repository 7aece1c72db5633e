/**
 * router/tables/table-file.test.ts — tests of the Postfix table file reader: comments,
 * continuation lines, aliases-style "key: value", duplicates, errors with file:line.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { loadTable, loadTableEntries, TableFormatError } from './table-file.ts';

async function withFile(text: string, fn: (file: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'tandem-table-'));
  try {
    const file = path.join(dir, 'aliases');
    await writeFile(file, text);
    await fn(file);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

test('comments, blank lines, continuation lines and lower-cased keys', async () => {
  await withFile([
    '# a comment',
    '',
    '   # an indented comment',
    'Sales@Example.COM   bob@example.com,',
    '    carol@example.com',
    '\t dave@example.com',
    'single\tValue With Spaces  ',
  ].join('\n'), async (file) => {
    const table = await loadTable(file);
    assert.deepEqual([...table], [
      ['sales@example.com', 'bob@example.com, carol@example.com dave@example.com'],
      ['single', 'Value With Spaces'],
    ]);
  });
});

test('aliases(5) style "key: value" strips one colon; CRLF files work', async () => {
  await withFile('postmaster: root\r\nroot:: odd\r\n', async (file) => {
    const table = await loadTable(file);
    assert.equal(table.get('postmaster'), 'root');
    assert.equal(table.get('root:'), 'odd');
  });
});

test('colonKeys false keeps IPv6 keys intact', async () => {
  await withFile('2001:db8:: OK\n', async (file) => {
    const table = await loadTable(file, { colonKeys: false });
    assert.equal(table.get('2001:db8::'), 'OK');
  });
});

test('duplicate key: the later entry wins and a warning names both lines', async () => {
  await withFile('a x\nb y\na z\n', async (file) => {
    const warnings: string[] = [];
    const entries = await loadTableEntries(file, { warn: (msg) => warnings.push(msg) });
    assert.deepEqual(entries.get('a'), { value: 'z', line: 3 });
    assert.equal(warnings.length, 1);
    assert.match(warnings[0], /aliases:3: duplicate key "a" \(first at line 1\)/);
  });
});

test('missing value names the file and line', async () => {
  await withFile('a x\n# c\n\nx\n', async (file) => {
    await assert.rejects(loadTable(file), (err: unknown) => {
      assert.ok(err instanceof TableFormatError);
      assert.equal(err.line, 4);
      assert.equal(err.message, `${file}:4: missing value for key "x"`);
      return true;
    });
  });
});

test('valueRequired false allows bare keys', async () => {
  await withFile('example.com\nexample.org OK\n', async (file) => {
    const table = await loadTable(file, { valueRequired: false });
    assert.deepEqual([...table.keys()], ['example.com', 'example.org']);
    assert.equal(table.get('example.com'), '');
  });
});

test('continuation line at the start of the file is an error with its line', async () => {
  await withFile('# head\n  orphan value\n', async (file) => {
    await assert.rejects(loadTable(file), /aliases:2: continuation line/);
  });
});

test('a continuation supplies the value of a key on its own line', async () => {
  await withFile('key\n  value\n', async (file) => {
    assert.equal((await loadTable(file)).get('key'), 'value');
  });
});

test('missing file gives a clear error with the table name, path and code', async () => {
  await assert.rejects(loadTable('/nonexistent/tandem/x', { name: 'local_domains' }),
    /^Error: cannot read table local_domains \(\/nonexistent\/tandem\/x\): ENOENT/);
  // the code once, then what it means in words (not the system's "ENOENT: no such file …" after it)
  await assert.rejects(loadTable('/nonexistent/tandem/x', { name: 'local_domains' }), (err: Error) => {
    assert.equal(err.message.match(/ENOENT/g)?.length, 1, err.message);
    assert.match(err.message, /ENOENT \(no such file\); check the path/);
    return true;
  });
});
