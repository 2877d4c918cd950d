// The resync that yields to host writes (issue 14 item 6): the pure controller and the plan that
// uses it. Time is passed in, so every step is exact.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { sleep } from './helpers/acked-writer.js';
import { cleanupAll, makeTempDir, qemuIo } from './helpers/node-process.js';
import { pairLogs, startPair } from './helpers/pair-process.js';
import { ensureTools } from './helpers/tools.js';
import { TrackBitmap } from '../src/core/bitmap.js';
import { ResyncPlan } from '../src/core/resync.js';
import { ResyncThrottle, THROTTLE_PROBE_EVERY_MS, THROTTLE_QUIET_MS, THROTTLE_STEP_MS } from '../src/core/resync-throttle.js';

const MiB = 1024 * 1024;
const KiB = 1024;
const settings = { ceilingBytesPerSec: 160 * MiB, floorBytesPerSec: 4 * MiB, yieldChunkBytes: 128 * KiB, yieldWindowChunks: 2 };
const full = { chunkBytes: MiB, windowChunks: 4 };

/**
 * Host writes every millisecond from `fromMs` for `forMs`, each acknowledged after `rttMs(t)`, the
 * rate asked every millisecond (as the plan does); returns the rate at the end of each step.
 */
function drive(throttle: ResyncThrottle, fromMs: number, forMs: number, rttMs: (t: number) => number): number[] {
  const rates: number[] = [];
  for (let t = fromMs; t < fromMs + forMs; t++) {
    throttle.hostWrite(t);
    throttle.roundTrip(t, rttMs(t));
    const rate = throttle.rateAt(t);
    if ((t - fromMs) % THROTTLE_STEP_MS === THROTTLE_STEP_MS - 1) rates.push(rate);
  }
  return rates;
}

/** The round trip without the resync: 0.2 ms, one in ten at 0.4 ms (its 90th percentile). */
const calm = (t: number): number => (t % 10 === 0 ? 0.4 : 0.2);

describe('ResyncThrottle', () => {
  test('no host writes: full speed and full chunks', () => {
    const throttle = new ResyncThrottle(settings);
    assert.equal(throttle.rateAt(0), settings.ceilingBytesPerSec);
    assert.deepEqual(throttle.shape(0, full), full);
    assert.equal(throttle.yielding(0), false);
    assert.equal(throttle.pausedUntilMs(0), null);
  });

  test('host writes start: a probe (paused) to measure the host alone, then the floor, then the rate is earned back while the tail holds', () => {
    const throttle = new ResyncThrottle(settings);
    throttle.hostWrite(1000);
    assert.equal(throttle.rateAt(1000), 0, 'a probe first: the resync pauses');
    assert.equal(throttle.pausedUntilMs(1000), 1000 + THROTTLE_STEP_MS);
    assert.deepEqual(throttle.shape(1000, full), { chunkBytes: 128 * KiB, windowChunks: 2 });
    const rates = drive(throttle, 1001, 6000, calm);
    assert.equal(rates[0], settings.floorBytesPerSec, 'after the probe: the floor');
    const running = rates.filter((r) => r > 0);
    assert.ok(running.every((r, i) => i === 0 || r >= running[i - 1]!), `never down while the tail holds: ${running.join(' ')}`);
    assert.equal(running.at(-1), settings.ceilingBytesPerSec);
    // A probe every few seconds: a step at rate 0, then back to the rate it had.
    const probes = rates.map((r, i) => (r === 0 ? i : -1)).filter((i) => i >= 0);
    assert.ok(probes.length >= 1 && probes.length <= Math.ceil(6000 / THROTTLE_PROBE_EVERY_MS), `probes at steps ${probes.join(', ')}`);
    for (const i of probes) assert.ok(rates[i + 1] === undefined || rates[i + 1]! >= rates[i - 1]!, 'a probe resumes at the rate before it');
  });

  test('the resync grows the tail: the rate halves, and settles where the tail holds, never below the floor', () => {
    const throttle = new ResyncThrottle(settings);
    drive(throttle, 0, 5000, calm); // earned the ceiling
    assert.equal(throttle.rateAt(5000), settings.ceilingBytesPerSec);
    // Above a quarter of the ceiling the resync makes one round trip in five take 3 ms; at most
    // that, and during probes, the host sees its calm round trips.
    const quarter = settings.ceilingBytesPerSec / 4;
    const hurt = (t: number): number => (throttle.rateAt(t) > quarter && t % 5 === 0 ? 3 : calm(t));
    const rates = drive(throttle, 5001, 6000, hurt).filter((r) => r > 0);
    assert.equal(rates[0], settings.ceilingBytesPerSec / 2, 'halved at the first step that saw the tail');
    assert.equal(rates[1], quarter);
    const settled = rates.slice(5);
    assert.ok(settled.every((r) => r >= settings.floorBytesPerSec && r <= quarter + settings.ceilingBytesPerSec / 32), `settled near the quarter: ${settled.map((r) => r / MiB).join(' ')}`);
    // Where the tail grows at any rate, the floor holds.
    const always = drive(throttle, 11001, 3000, (t) => (t % 5 === 0 ? 3 : 0.2)).filter((r) => r > 0);
    assert.ok(always.includes(settings.floorBytesPerSec) && always.every((r) => r >= settings.floorBytesPerSec), always.map((r) => r / MiB).join(' '));
  });

  test('a light host load (too few round trips to judge) holds the rate', () => {
    const throttle = new ResyncThrottle(settings);
    const rates: number[] = [];
    for (let t = 0; t < 2000; t += 50) {
      throttle.hostWrite(t);
      throttle.roundTrip(t, 5);
      rates.push(throttle.rateAt(t));
    }
    assert.ok(rates.slice(4).every((r) => r === settings.floorBytesPerSec), rates.join(' '));
  });

  test('host writes stop: full speed again after the quiet time', () => {
    const throttle = new ResyncThrottle(settings);
    throttle.hostWrite(0);
    assert.equal(throttle.rateAt(THROTTLE_QUIET_MS - 1), settings.floorBytesPerSec);
    assert.equal(throttle.rateAt(THROTTLE_QUIET_MS), settings.ceilingBytesPerSec);
    assert.deepEqual(throttle.shape(THROTTLE_QUIET_MS, full), full);
  });

  test('a floor above the ceiling is refused', () => {
    assert.throws(() => new ResyncThrottle({ ...settings, floorBytesPerSec: settings.ceilingBytesPerSec + 1 }), /floor/);
  });
});

describe('ResyncPlan with a throttle', () => {
  const trackBytes = 64 * KiB;
  const tracks = 1024; // 64 MiB
  function plan(yieldTo: boolean): ResyncPlan {
    const all = new TrackBitmap(tracks);
    for (let t = 0; t < tracks; t++) all.set(t);
    const pace = { chunkBytes: MiB, windowChunks: 4, rateBytesPerSec: 64 * MiB, ...(yieldTo ? { yieldTo: { floorBytesPerSec: 2 * MiB, yieldChunkBytes: 128 * KiB, yieldWindowChunks: 2 } } : {}) };
    return new ResyncPlan(all, trackBytes, tracks * trackBytes, pace, 0, 1, true);
  }

  /** Runs the plan for `forMs`, completing each read at once; host writes every ms while `host(t)`. */
  function run(p: ResyncPlan, forMs: number, host: (t: number) => boolean): { issuedBytes: number; largestChunk: number } {
    let issuedBytes = 0;
    let largestChunk = 0;
    for (let t = 0; t < forMs; t++) {
      if (host(t)) p.throttle?.hostWrite(t);
      for (const chunk of p.readsDue(t)) {
        issuedBytes += chunk.lengthBytes;
        largestChunk = Math.max(largestChunk, chunk.lengthBytes);
        p.chunkSent(chunk.lengthBytes);
      }
    }
    return { issuedBytes, largestChunk };
  }

  test('without host writes it runs at syncRate in full chunks', () => {
    const r = run(plan(true), 500, () => false);
    assert.equal(r.largestChunk, MiB);
    // 64 MiB/s for half a second, plus the first window.
    assert.ok(r.issuedBytes >= 32 * MiB && r.issuedBytes <= 32 * MiB + 5 * MiB, `${r.issuedBytes / MiB} MiB`);
  });

  test('with host writes (and no round trips to learn from) it holds the floor in small chunks', () => {
    const r = run(plan(true), 1000, () => true);
    assert.ok(r.largestChunk <= 128 * KiB, `largest chunk ${r.largestChunk}`);
    // The floor, 2 MiB/s for a second, plus what the first window let out before the first host write.
    assert.ok(r.issuedBytes <= 2 * MiB + 4 * MiB + 256 * KiB, `${r.issuedBytes / MiB} MiB`);
    assert.ok(r.issuedBytes >= 2 * MiB, `a yielding resync still progresses: ${r.issuedBytes / MiB} MiB`);
  });

  test('nextReadAtMs waits for the budget the rate allows', () => {
    const p = plan(true);
    p.throttle!.hostWrite(0);
    for (const chunk of p.readsDue(0)) p.chunkSent(chunk.lengthBytes);
    const at = p.nextReadAtMs(0);
    assert.ok(at !== null && at > 0, `the budget is spent: the next read waits (${at})`);
    assert.deepEqual(p.readsDue(at - 1), []);
    assert.ok(p.readsDue(Math.ceil(at)).length > 0, 'and is due when the deadline comes');
  });
});

describe('a resync between two node processes yields to host writes', () => {
  after(() => cleanupAll());

  test('status shows the resync yielding while host writes run, and at syncRate once they stop', async () => {
    ensureTools(['qemu-io']);
    const dir = makeTempDir('twinblock-yield-');
    // a's store already holds data and b's is new: a full resync of 64 MiB at 1 MiB/s, long enough to watch.
    writeFileSync(path.join(dir, 'a.img'), randomBytes(64 * MiB));
    const pair = await startPair({ dir, configFor: { a: (c) => ({ ...c, syncRate: '1MiB', syncMinRate: '256KiB' }), b: (c) => ({ ...c, syncRate: '1MiB', syncMinRate: '256KiB' }) } });
    try {
      type Sync = { yielding?: boolean; limitBytesPerSec?: number; doneBytes: number } | null;
      const syncOf = async (): Promise<Sync> => ((await pair.a.status())['peers'] as Array<{ sync: Sync }>)[0]!.sync;
      const deadline = Date.now() + 15_000;
      while ((await syncOf()) === null && Date.now() < deadline) await sleep(50);
      const idle = await syncOf();
      assert.ok(idle !== null, 'the full resync started');
      assert.equal(idle.yielding, false, 'no host writes yet: full speed');
      assert.equal(idle.limitBytesPerSec, MiB);
      // Host writes for a while; status polled meanwhile.
      let seen: Sync = null;
      const writes = (async () => {
        for (let i = 0; i < 8; i++) {
          const r = await qemuIo(pair.a.uri, Array.from({ length: 50 }, (_, j) => `write -P ${(i + j) % 250} ${(j * 64 + i) * 4096} 4k`));
          assert.equal(r.code, 0, r.stderr);
        }
      })();
      while (!(seen?.yielding ?? false) && Date.now() < deadline) {
        seen = await syncOf();
        await sleep(20);
      }
      await writes;
      assert.ok(seen?.yielding === true, `the resync yielded while host writes ran: ${JSON.stringify(seen)}\n${pairLogs(pair)}`);
      assert.ok(seen.limitBytesPerSec! < MiB, `below syncRate while yielding: ${seen.limitBytesPerSec}`);
      // Half a second without host writes: full speed again.
      await sleep(THROTTLE_QUIET_MS + 200);
      const after = await syncOf();
      assert.ok(after !== null && after.yielding === false && after.limitBytesPerSec === MiB, JSON.stringify(after));
    } finally {
      await pair.kill();
    }
  });
});
