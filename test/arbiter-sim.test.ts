// The arbiter's simulator (sim/arbiter.ts, issue 13 item 6) in the test suite: the real
// ArbiterCore of two or three nodes against a simulated etcd with lease expiry, compare-and-swap,
// partitions between any node and etcd and between nodes, etcd down, frozen nodes, crashes and
// skewed clocks. Every seed must keep the invariants (never two primaries acknowledging in
// overlapping time; a promoted node holds every acknowledged write) and come back to life once
// the faults end; each mutant must be caught.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { arbiterMutants, ArbiterSim } from '../sim/arbiter.js';

const SEEDS = 300;

test(`${SEEDS} seeds keep the arbiter's invariants, and failovers happen in them`, () => {
  let acks = 0;
  let promotions = 0;
  for (let seed = 1; seed <= SEEDS; seed++) {
    const r = new ArbiterSim(seed).run();
    assert.ok(r.ok, `${r.failure}\n${r.trace.join('\n')}`);
    acks += r.acks;
    promotions += r.promotions;
  }
  // The situations the invariants are about did happen: automatic failovers, and writes around them.
  assert.ok(promotions >= SEEDS / 2, `automatic promotions: ${promotions}`);
  assert.ok(acks >= SEEDS * 1000, `acknowledged writes: ${acks}`);
});

for (const mutant of arbiterMutants) {
  test(`mutant ${mutant} is caught`, () => {
    for (let seed = 1; seed <= SEEDS; seed++) {
      const r = new ArbiterSim(seed, mutant).run();
      if (!r.ok) return;
    }
    assert.fail(`mutant ${mutant} survived ${SEEDS} seeds`);
  });
}
