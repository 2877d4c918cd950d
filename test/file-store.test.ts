// The file store's reads: small ones on the event loop's thread through the inline gate (page
// cache), large ones through libuv's pool; both return the file's bytes (src/store/file-store.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import type { InlineIoGate } from '../src/core/inline-io-gate.js';
import { openFileStore } from '../src/store/file-store.js';
import { makeTempDir } from './helpers/node-process.js';

test('file store reads: small reads go inline and large ones through the pool, both return the bytes on disk', async () => {
  const dir = makeTempDir('twinblock-file-store-');
  const file = path.join(dir, 'store.img');
  const data = randomBytes(4 * 1024 * 1024);
  writeFileSync(file, data);
  const store = await openFileStore(file, data.length);
  const gate = (store as unknown as { readGate: InlineIoGate }).readGate;
  try {
    const check = async (offset: number, length: number): Promise<void> => {
      assert.deepEqual(await store.read(offset, length), data.subarray(offset, offset + length), `read ${offset}+${length}`);
    };
    await check(2_097_152, 1_048_576);
    assert.equal(gate.inline, 0, 'a 1 MiB read goes through the pool');
    await check(0, 4096);
    assert.equal(gate.inline, 1, 'a small read goes inline while the gate is open (it starts open)');
    for (const [offset, length] of [[12_288, 512], [1_048_576, 65_536], [data.length - 4096, 4096]] as const) await check(offset, length);
  } finally {
    await store.close();
  }
});
