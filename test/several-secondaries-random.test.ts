// Issue 12 in the pure core, randomized (a small simulator of three or four nodes, until the real
// one runs more than a pair: DESIGN.md "Several secondaries" step 6). Each seed draws the ack and
// quorum policies, then interleaves host writes on the primary with partial deliveries of each
// link's messages, store completions, ticks, link cuts and reconnects, kill -9 of a secondary, and
// (with `ack: all`) kill -9 of the primary followed by `promote --force` of a secondary that was
// in sync with it. The core checks its own invariants after every step. At the end every link is
// healed and the run settles; then every node must serve the same bytes, each block holding its
// last acknowledged write or one issued after it, never an older one.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CoreCluster, KiB } from './helpers/core-cluster.js';
import { Prng } from '../sim/prng.js';
import type { QuorumSettings } from '../src/core/replica-types.js';

const BLOCK = 4 * KiB;
const VOLUME = 1024 * KiB;
// A longer hunt: SEEDS=20000 SEED_FROM=1000 node --test dist/test/several-secondaries-random.test.js
const SEEDS = Number(process.env['SEEDS'] ?? 300);
const FROM = Number(process.env['SEED_FROM'] ?? 1);

interface Issued { block: number; value: number; answer: { state: string } }

function blockData(value: number): Buffer {
  const b = Buffer.alloc(BLOCK);
  b.writeUInt32LE(value, 0);
  b.fill(value & 0xff, 4);
  return b;
}

function runSeed(seed: number): { steps: number; acked: number; forced: number; plain: number; fetches: number; crashes: number } {
  const prng = new Prng(seed);
  const names = prng.chance(0.7) ? ['a', 'b', 'c'] : ['a', 'b', 'c', 'd'];
  const quorum: QuorumSettings = {
    ack: prng.pick(['all', 'quorum'] as const),
    policy: prng.pick(['off', 'majority'] as const),
    onNoQuorum: prng.pick(['suspend-io', 'io-error'] as const),
  };
  const cl = new CoreCluster(names, quorum, VOLUME, 512 * KiB);
  const pairs: [string, string][] = [];
  for (let i = 0; i < names.length; i++) for (let j = i + 1; j < names.length; j++) pairs.push([names[i]!, names[j]!]);
  for (const [x, y] of pairs) cl.connect(x, y);
  cl.run(30);
  const issued: Issued[] = [];
  let value = 1;
  let forced = 0;
  let plain = 0;
  let crashes = 0;
  const primary = (): string | null => names.find((n) => cl.node(n).core.role === 'primary') ?? null;
  const check = (): void => { for (const n of names) cl.node(n).core.checkInvariants(); };
  const steps = 300;
  for (let step = 0; step < steps; step++) {
    const roll = prng.float();
    const p = primary();
    if (roll < 0.35 && p !== null) {
      const block = prng.int(VOLUME / BLOCK);
      issued.push({ block, value, answer: cl.write(p, block * BLOCK, blockData(value)) });
      value++;
    } else if (roll < 0.6) {
      const [x, y] = prng.pick(pairs);
      const [from, to] = prng.chance(0.5) ? [x, y] : [y, x];
      cl.deliver(from, to, 1 + prng.int(6));
    } else if (roll < 0.7) {
      cl.runWork();
    } else if (roll < 0.78) {
      cl.tick(1 + prng.int(20));
    } else if (roll < 0.82) {
      cl.settle();
    } else if (roll < 0.87) {
      const [x, y] = prng.pick(pairs);
      if (cl.isUp(x, y)) cl.cut(x, y);
    } else if (roll < 0.95) {
      const [x, y] = prng.pick(pairs);
      if (!cl.isUp(x, y)) cl.connect(x, y);
    } else if (roll < 0.97) {
      // A secondary crashes only while a primary runs: one that knows what it held only in RAM.
      // (Crashing one that holds acknowledged writes while the primary is dead too is losing a
      // majority, which no policy survives.)
      const secondaries = names.filter((n) => n !== p);
      if (p !== null && secondaries.length > 0) {
        cl.restart(prng.pick(secondaries));
        crashes++;
      }
    } else if (roll < 0.985 && p !== null) {
      // kill -9 of the primary while every secondary follows it, then a plain promote of any of
      // them: it must first fetch what another holds (issue 12 item 4), under either ack policy.
      cl.settle();
      const following = names.filter((n) => n !== p).every((n) => cl.isUp(n, p) && cl.node(p).core.peers.find((ch) => ch.name === n)?.state === 'in-sync');
      if (following) {
        // The last writes reach some secondaries only: the promoted one may lack what another holds.
        for (let k = prng.int(4); k > 0; k--) {
          const block = prng.int(VOLUME / BLOCK);
          issued.push({ block, value, answer: cl.write(p, block * BLOCK, blockData(value)) });
          value++;
          for (const n of names) if (n !== p && prng.chance(0.5)) cl.deliver(p, n);
          for (const n of names) if (n !== p) cl.deliver(n, p);
        }
        cl.restart(p);
        const r = cl.promote(prng.pick(names.filter((n) => n !== p)), false);
        if (r.ok) plain++;
        crashes++;
      }
    } else if (p !== null && quorum.ack === 'all') {
      // The operator's rule for --force: a secondary that was in sync with the dead primary, in its
      // epoch, holds every write it acknowledged (ack: all waited for it).
      const epochOf = (n: string): string => JSON.stringify(cl.node(n).core.epochHistory);
      const current = names.filter((n) => n !== p && cl.node(n).core.peers.find((ch) => ch.name === p)?.state === 'in-sync' && cl.isUp(n, p) && epochOf(n) === epochOf(p));
      if (current.length > 0) {
        cl.restart(p);
        const next = prng.pick(current);
        const r = cl.promote(next, true);
        assert.ok(r.ok, `seed ${seed}: promote --force ${next}: ${r.ok ? '' : r.error}`);
        forced++;
        crashes++;
      }
    }
    check();
  }
  // Heal: every link up, time for resyncs and destage cycles, everything delivered.
  for (const [x, y] of pairs) if (!cl.isUp(x, y)) cl.connect(x, y);
  cl.run(300, 5);
  check();
  // A promotion that did not complete (its majority or its fetch source went away) left no
  // primary: the operator promotes again, now that every node is reachable.
  const refusals: string[] = [];
  for (const n of names) {
    if (primary() !== null) break;
    const r = cl.promote(n, false);
    if (!r.ok) refusals.push(`${n}: ${r.error}`);
    cl.run(100, 5);
    if (primary() === null) refusals.push(`${n}: ${cl.node(n).logs.filter((l) => l.startsWith('promote-done')).at(-1) ?? '(no answer)'}`);
  }
  check();
  const p = primary();
  assert.ok(p !== null, `seed ${seed}: a primary at the end (${refusals.join('; ')})`);
  for (const ch of cl.node(p).core.peers) assert.equal(ch.state, 'in-sync', `seed ${seed}: ${p} in sync with ${ch.name} after healing`);
  const images = names.map((n) => cl.read(n, 0, VOLUME));
  for (let i = 1; i < names.length; i++) {
    if (!images[i]!.equals(images[0]!)) {
      const at = images[i]!.findIndex((byte, k) => byte !== images[0]![k]);
      assert.fail(`seed ${seed} (${JSON.stringify(quorum)}): ${names[i]} differs from ${names[0]} at byte ${at} (block ${Math.floor(at / BLOCK)})`);
    }
  }
  let acked = 0;
  for (let block = 0; block < VOLUME / BLOCK; block++) {
    const writes = issued.filter((w) => w.block === block);
    let lastAcked = -1;
    writes.forEach((w, i) => { if (w.answer.state === 'ok') lastAcked = i; });
    if (lastAcked >= 0) acked++;
    const allowed = new Set(writes.slice(Math.max(lastAcked, 0)).map((w) => w.value));
    if (lastAcked < 0) allowed.add(0);
    const got = images[0]!.readUInt32LE(block * BLOCK);
    assert.ok(allowed.has(got), `seed ${seed} (${JSON.stringify(quorum)}): block ${block} holds write ${got}, not its last acknowledged one (${lastAcked >= 0 ? writes[lastAcked]!.value : 'none'}) or a later one`);
  }
  const fetches = names.reduce((n, name) => n + cl.node(name).logs.filter((l) => l.includes('fetching what this node lacks')).length, 0);
  return { steps, acked, forced, plain, fetches, crashes };
}

test(`several secondaries, randomized: ${SEEDS} seeds of writes, partial deliveries, cuts, crashes and forced promotions converge without losing an acknowledged write`, () => {
  let acked = 0;
  let forced = 0;
  let plain = 0;
  let fetches = 0;
  let crashes = 0;
  // Seeds the long runs found bugs with (26 is in 1..300), run in every CI run too.
  const found = [1065, 2855];
  for (const seed of [...found, ...Array.from({ length: SEEDS }, (_, i) => FROM + i)]) {
    const r = runSeed(seed);
    acked += r.acked;
    forced += r.forced;
    plain += r.plain;
    fetches += r.fetches;
    crashes += r.crashes;
  }
  // The situations the test claims to cover did happen.
  assert.ok(acked > SEEDS * 10, `acknowledged blocks checked: ${acked}`);
  assert.ok(forced > 10, `forced promotions: ${forced}`);
  assert.ok(plain > 10, `plain promotions after a kill -9 of the primary: ${plain}`);
  assert.ok(fetches > 5, `promotions that fetched from a more current node first: ${fetches}`);
  console.log(`# ${SEEDS} seeds: ${acked} acknowledged blocks checked, ${forced} forced and ${plain} plain promotions (${fetches} fetched first), ${crashes} crashes`);
  assert.ok(crashes > SEEDS / 2, `crashes: ${crashes}`);
});
