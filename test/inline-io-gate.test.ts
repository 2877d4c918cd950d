// The gate that lets a file store read small spans on the event loop's own thread while reads come
// from the page cache, and sends them to libuv's pool once reads look like device reads
// (src/core/inline-io-gate.ts). Pure: time is passed in.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_INLINE_READ_GATE, InlineIoGate } from '../src/core/inline-io-gate.js';

const S = DEFAULT_INLINE_READ_GATE;
const FAST = S.slowMs / 10;
const SLOW = (S.slowMs + S.hardSlowMs) / 2; // slow, but not alone enough to close the gate

test('inline io gate: open at first, for small operations only', () => {
  const g = new InlineIoGate();
  assert.equal(g.allows(4096, 0), true);
  assert.equal(g.allows(S.maxInlineBytes, 0), true);
  assert.equal(g.allows(S.maxInlineBytes + 512, 0), false, 'a large read always goes to the pool');
});

test('inline io gate: one operation slower than hardSlowMs alone (a preemption) leaves it open; after another slow one it closes for the minimum backoff', () => {
  const g = new InlineIoGate();
  g.done(S.hardSlowMs + 1, 900);
  for (let i = 0; i < S.windowOps; i++) g.done(FAST, 901 + i / 100);
  assert.equal(g.closes, 0, 'a lone very slow read among fast ones is the scheduler, not the disk');
  g.done(SLOW, 999);
  g.done(S.hardSlowMs + 1, 1000);
  assert.equal(g.closes, 1);
  assert.equal(g.hardCloses, 1, 'counted as closed on one very slow operation');
  assert.equal(g.allows(4096, 1000 + S.minBackoffMs - 1), false);
  assert.equal(g.allows(4096, 1000 + S.minBackoffMs), true);
});

test('inline io gate: a few slow operations (preemption) keep it open; windowSlowLimit of windowOps close it', () => {
  const g = new InlineIoGate();
  let now = 0;
  // Fewer than the limit per window, window after window: never closes.
  for (let w = 0; w < 10; w++) {
    for (let i = 0; i < S.windowOps; i++) g.done(i < S.windowSlowLimit - 1 ? SLOW : FAST, now++);
  }
  assert.equal(g.closes, 0, 'sporadic slow reads do not close the gate');
  assert.equal(g.slow, 10 * (S.windowSlowLimit - 1));
  for (let i = 0; i < S.windowSlowLimit; i++) g.done(SLOW, now++);
  assert.equal(g.closes, 1, 'reads that keep being slow (device reads) close it');
  assert.equal(g.hardCloses, 0, 'closed by the window, not by one operation');
  assert.equal(g.allows(4096, now), false);
});

test('inline io gate: the backoff doubles while the gate keeps closing, up to the maximum, and starts over later', () => {
  const g = new InlineIoGate();
  let now = 0;
  const backoffs: number[] = [];
  const twoVerySlow = (at: number): void => {
    g.done(S.hardSlowMs + 1, at);
    g.done(S.hardSlowMs + 1, at);
  };
  for (let i = 0; i < 10; i++) {
    twoVerySlow(now);
    backoffs.push(g.closedUntilMs - now);
    now = g.closedUntilMs; // closes again as soon as it reopens
  }
  assert.deepEqual(backoffs.slice(0, 3), [S.minBackoffMs, 2 * S.minBackoffMs, 4 * S.minBackoffMs]);
  assert.equal(Math.max(...backoffs), S.maxBackoffMs, 'capped');
  now += S.forgetAfterMs + 1;
  twoVerySlow(now);
  assert.equal(g.closedUntilMs - now, S.minBackoffMs, 'after a quiet spell the backoff starts over');
});
