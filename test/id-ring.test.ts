// IdRing (src/core/id-ring.ts): values by increasing id, checked against a Map doing the same.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { IdRing } from '../src/core/id-ring.js';

test('an IdRing gets, deletes and iterates as a Map does, through growth and wrap-around', () => {
  // Each step: set the next id (after a gap of 0-3 ids), or delete a live id (oldest-first bias, as
  // acks and replies come), or clear.
  const step = fc.oneof(
    { weight: 6, arbitrary: fc.record({ op: fc.constant('set' as const), gap: fc.nat(3) }) },
    { weight: 5, arbitrary: fc.record({ op: fc.constant('delete' as const), pick: fc.nat(1000), oldest: fc.boolean() }) },
    { weight: 1, arbitrary: fc.constant({ op: 'clear' as const }) },
  );
  fc.assert(fc.property(fc.array(step, { maxLength: 400 }), (steps) => {
    const ring = new IdRing<string>();
    const model = new Map<number, string>();
    let nextId = 1;
    let maxLive = 0;
    for (const s of steps) {
      if (s.op === 'set') {
        nextId += s.gap;
        ring.set(nextId, `v${nextId}`);
        model.set(nextId, `v${nextId}`);
        nextId++;
      } else if (s.op === 'delete') {
        const live = [...model.keys()];
        const id = live.length === 0 ? nextId + 5 : s.oldest ? live[0]! : live[s.pick % live.length]!;
        assert.equal(ring.delete(id), model.delete(id));
      } else {
        ring.clear();
        model.clear();
      }
      maxLive = Math.max(maxLive, model.size);
      assert.equal(ring.size, model.size);
      assert.deepEqual([...ring.entries()], [...model.entries()]);
      for (let id = nextId - 40; id < nextId + 2; id++) assert.equal(ring.get(id), model.get(id));
    }
  }), { numRuns: 300 });
});

test('an IdRing refuses an id not above every id set before, and starts small again once empty', () => {
  const ring = new IdRing<number>();
  ring.set(5, 5);
  assert.throws(() => ring.set(5, 5), /ids must increase/);
  assert.throws(() => ring.set(3, 3), /ids must increase/);
  // One old id stays while 10,000 newer ones come and go: the ring spans them all ...
  for (let id = 6; id < 10_006; id++) {
    ring.set(id, id);
    if (id > 6) ring.delete(id - 1);
  }
  assert.equal(ring.size, 2);
  assert.equal(ring.get(5), 5);
  assert.equal(ring.get(10_005), 10_005);
  // ... and once nothing is live it is small again, and ids go on from where they were.
  ring.delete(5);
  ring.delete(10_005);
  assert.equal(ring.size, 0);
  assert.equal((ring as unknown as { slots: unknown[] }).slots.length, 16);
  assert.throws(() => ring.set(10_005, 0), /ids must increase/);
  ring.set(10_006, 1);
  assert.deepEqual([...ring.values()], [1]);
});

test('deleting entries while iterating an IdRing visits each live entry once', () => {
  const ring = new IdRing<number>();
  for (let id = 1; id <= 40; id++) ring.set(id, id);
  const seen: number[] = [];
  for (const [id] of ring) {
    seen.push(id);
    ring.delete(id);
  }
  assert.deepEqual(seen, Array.from({ length: 40 }, (_, i) => i + 1));
  assert.equal(ring.size, 0);
});
