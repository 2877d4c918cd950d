// The file store's reads: small ones on the event loop's thread through the inline gate (page
// cache), large ones through libuv's pool; both return the file's bytes (src/store/file-store.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { openFileStore } from '../src/store/file-store.js';
import type { StoreReadStats } from '../src/store/store.js';
import { makeTempDir } from './helpers/node-process.js';

test('file store reads: small reads go inline and large ones through the pool, both return the bytes on disk', async () => {
  const dir = makeTempDir('twinblock-file-store-');
  const file = path.join(dir, 'store.img');
  const data = randomBytes(4 * 1024 * 1024);
  writeFileSync(file, data);
  const store = await openFileStore(file, data.length);
  const stats = (): StoreReadStats => store.readStats!();
  try {
    const check = async (offset: number, length: number): Promise<void> => {
      assert.deepEqual(await store.read(offset, length), data.subarray(offset, offset + length), `read ${offset}+${length}`);
    };
    await check(2_097_152, 1_048_576);
    assert.equal(stats().inlineReads, 0, 'a 1 MiB read goes through the pool');
    assert.equal(stats().inlineNow, true, 'the gate starts open');
    await check(0, 4096);
    assert.equal(stats().inlineReads, 1, 'a small read goes inline while the gate is open');
    for (const [offset, length] of [[12_288, 512], [1_048_576, 65_536], [data.length - 4096, 4096]] as const) await check(offset, length);
    // Inline too, from 512 B to 64 KiB, unless two slow reads (a machine far too busy) closed it.
    assert.ok(stats().inlineReads === 4 || stats().gateCloses > 0, JSON.stringify(stats()));
  } finally {
    await store.close();
  }
});
