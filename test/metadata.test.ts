// Node metadata beside the store (issue 5 item 3): what is saved loads back exactly; a file from
// before a field existed still loads; a damaged or foreign file is refused with a message that
// names the file and the field, never a crash deep in the core.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { MetadataError, MetadataFileStore } from '../src/node/metadata.js';
import type { PersistedState } from '../src/core/replica-types.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'twinblock-meta-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const identity = { volume: 'vol0', sizeBytes: 1 << 20, trackSizeBytes: 65536 };

const state: PersistedState = {
  history: [{ epoch: 1, node: 'a' }, { epoch: 3, node: 'b' }], role: 'secondary', cleanShutdown: true, diverging: false,
  storeTrusted: true, resyncIncomplete: false, outOfSync: Uint8Array.from([1, 0, 128, 0]), discardLocal: false, proposedEpoch: 4, syncLost: true,
};

function storeAt(name: string): MetadataFileStore {
  return new MetadataFileStore(path.join(dir, name), identity, 'a');
}

test('saved metadata loads back exactly; a missing file is a fresh store', async () => {
  const meta = storeAt('roundtrip.json');
  assert.equal(await meta.load(), null);
  await meta.save(state);
  assert.deepEqual(await meta.load(), state);
});

test('a file written before proposedEpoch existed loads with proposedEpoch 0', async () => {
  const meta = storeAt('old.json');
  await meta.save(state);
  const data = JSON.parse(readFileSync(meta.filePath, 'utf8')) as Record<string, unknown>;
  delete data['proposedEpoch'];
  writeFileSync(meta.filePath, JSON.stringify(data));
  assert.equal((await meta.load())?.proposedEpoch, 0);
});

test('damaged or foreign metadata is refused with the file and the field named', async () => {
  const meta = storeAt('bad.json');
  await meta.save(state);
  const good = JSON.parse(readFileSync(meta.filePath, 'utf8')) as Record<string, unknown>;
  const cases: [Record<string, unknown> | string, RegExp][] = [
    ['{"formatVersion": 1,', /is not valid JSON/],
    [{ ...good, history: [{ epoch: 'one', node: 'a' }] }, /bad\.json: history\.0\.epoch: .*moving the file away makes this store new/],
    [{ ...good, role: 'leader' }, /bad\.json: role: /],
    [{ ...good, cleanShutdown: undefined }, /bad\.json: cleanShutdown: /],
    [{ ...good, sizeBytes: 2 << 20 }, /belongs to another volume: sizeBytes 2097152 there, 1048576 in the config/],
    [{ ...good, formatVersion: 9 }, /has format 9/],
  ];
  for (const [content, message] of cases) {
    writeFileSync(meta.filePath, typeof content === 'string' ? content : JSON.stringify(content));
    await assert.rejects(meta.load(), (err: Error) => err instanceof MetadataError && message.test(err.message), String(message));
  }
});
