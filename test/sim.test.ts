// The deterministic simulator (sim/, issue 5 item 8): thousands of seeded runs of the replica
// cores of a pair (and of three to five nodes, issue 12 item 8) with link faults, crashes,
// failovers and switchovers, every invariant checked after every step. Three kinds of test here:
//  - the seeds: 2,000 of them, spread over worker threads, must all pass — with the fixes the
//    simulator assumes for the bugs it found and reported (sim/fixes.ts, KNOWN_BUGS);
//  - each known bug, replayed without its fix: a `todo` until the core is fixed (it then passes,
//    and the fix can be dropped from KNOWN_BUGS);
//  - each deliberate mutant must be caught within a handful of seeds: proof that the checks bite.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomInt } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import { addCounts, hooksFor, runBatchInWorker, runParallel } from '../sim/batch.js';
import { runSeed } from '../sim/cluster.js';
import { KNOWN_BUGS, KNOWN_FIXES, type AssumedFix } from '../sim/fixes.js';
import { Model } from '../sim/model.js';
import { NOT_CAUGHT_YET, PAIR_MUTANTS, THREE_NODE_MUTANTS, type MutantName } from '../sim/mutants.js';

const SEEDS = 2000;
/** A mutant must fail within this many seeds. */
const MUTANT_BUDGET = 300;
/**
 * Some mutants need a crash or a switchover at just the wrong moment: rarer, so more seeds.
 * When these budgets were set, harden-unacked was first caught at seed 275 and
 * promote-unconfirmed at seed 965 (about 40 s); when the simulator moved onto the production shell
 * (issue 10), at seeds 319 and 290; since the core asserts its own transitions (23510d5 and the
 * peer-state table), at seeds 0 and 1.
 */
const MUTANT_BUDGETS: Partial<Record<MutantName, number>> = { 'harden-unacked': 800, 'promote-unconfirmed': 1500 };

test('a seed replays exactly: same trace, same outcome', async () => {
  const hooks = hooksFor(KNOWN_FIXES);
  for (const seed of [1, 42, 4242]) {
    const first = await runSeed(seed, hooks);
    const second = await runSeed(seed, hooks);
    assert.equal(second.traceHash, first.traceHash, `seed ${seed}: the trace changed between two runs`);
    assert.equal(second.steps, first.steps);
    assert.equal(second.failure, first.failure);
  }
});

/**
 * The seeds below replay the runs their bugs were found in: options drawn since (issue 12's
 * quorum, drawn last) stay as they were then.
 */
const AS_FOUND = { quorum: 'off' } as const;

/**
 * Seeds outside the fixed corpus that once failed with "FLUSH answered ok but node a's store lacks
 * a write it covers" (issue 10). The stores were right: the model had forgotten the value they
 * held, pruned for a write issued after the FLUSH started, because pruning counted only the reads
 * in flight and not the FLUSHes and FUAs, which are checked as of their start too.
 */
const FLUSH_PRUNE_SEEDS = [5000598, 5008004, 5010253];

test(`seeds ${FLUSH_PRUNE_SEEDS.join(', ')}: a FLUSH in flight is judged on every value it may find`, async () => {
  const hooks = { ...hooksFor(KNOWN_FIXES), overrides: AS_FOUND };
  for (const seed of FLUSH_PRUNE_SEEDS) {
    const r = await runSeed(seed, hooks);
    assert.ok(r.ok, `seed ${seed}: ${r.failure}\n  replay: npm run sim -- --seed ${seed} --verbose`);
  }
});

/**
 * Seeds that failed when a SIGTERM stop whose hardening met a store error failed and exited (as
 * the CLI does): the primary had left its link first and started a new epoch alone, so restarted
 * it resynced its stale store over the peer's copy of the writes it lost from RAM (551, 782, 875,
 * 1286, 1702), or, with nobody promoted, the pair waited forever with two secondaries (1202,
 * 1320, 1966). Now a primary hardens while its peer still mirrors it and a failing store is
 * retried (Volume.stop); a stop that dies anyway is a crash the operator fails over from. In 551
 * and 1048 the operator kills a primary whose stop is stuck on its store while still in sync
 * (with the stop leaving its link first, 551 loses acknowledged writes again); in 4211 it kills one
 * that had hardened everything and left its link, and promotes it, not its peer (a split brain).
 */
const STOP_FAILURE_SEEDS = [551, 782, 875, 1286, 1702, 1202, 1320, 1966, 1048, 4211];

test(`seeds ${STOP_FAILURE_SEEDS.join(', ')}: a SIGTERM stop whose store fails loses no acknowledged write and leaves a primary`, async () => {
  const hooks = { ...hooksFor(KNOWN_FIXES), overrides: AS_FOUND };
  for (const seed of STOP_FAILURE_SEEDS) {
    const r = await runSeed(seed, hooks);
    assert.ok(r.ok, `seed ${seed}: ${r.failure}\n  replay: npm run sim -- --seed ${seed} --verbose`);
  }
});

/**
 * Seeds outside the fixed corpus, each a bug in the core found by long runs (docs/simulator.md):
 * 10015049, host writes a demoted primary still applied once cache room came; 105, a save of an
 * old diverging mark landing after a resync ended it, taken for the next one's; 20023000, an
 * fdatasync in flight when another one failed, whose success sent a CLEAR for a track that a power
 * loss then took; 20022525, a node still receiving a resync that confirmed its peer's promotion,
 * then looked newest and resynced its stale store over the peer's; 30103572, a FLUSH request of a
 * dead link answered on the next one, where the restarted peer had reused its id; 40118207, peer
 * data half applied when a forced promotion dropped the rest, never told to the notifier.
 */
const CORE_BUG_SEEDS = [10015049, 105, 20023000, 20022525, 30103572, 40118207];

test(`seeds ${CORE_BUG_SEEDS.join(', ')}: bugs the long runs found stay fixed`, async () => {
  const hooks = { ...hooksFor(KNOWN_FIXES), overrides: AS_FOUND };
  for (const seed of CORE_BUG_SEEDS) {
    const r = await runSeed(seed, hooks);
    assert.ok(r.ok, `seed ${seed}: ${r.failure}\n  replay: npm run sim -- --seed ${seed} --verbose`);
  }
});

/**
 * Three-node seeds outside the fixed corpus, each a bug in the core the long runs found (docs/
 * simulator.md, "Three to five nodes"): 388 and 944, a promotion that served without writes
 * only a node it did not ask held (a complete copy may be a prefix; a restarted confirmer knows
 * nothing); 825, its twin under `ack: all`; 10002340 and 10004509, replicas that differed after
 * a failover because a delta resync did not count the tracks its target already held as above
 * the held seq; 10001884 and 10002821, host writes held for quorum that never resumed once it
 * was back; 10002047, a demoted primary whose stand said nothing; 30001386, 30002245 and
 * 30002321, a node's own lonely branch of history that blocked every later promotion; 40000195,
 * a write half applied when the link dropped, left out of the secondary's `above` set;
 * 50003673, a secondary promoted and dead at once, whose dirty tracks of the old stream no
 * other node's record held; 60000025 and 60002642, the same, the promotion completing over a
 * link newer than the confirmation; 70004671, an old primary's write, delayed by a stall, applied
 * over what the new primary's resync had brought.
 */
const THREE_NODE_BUG_SEEDS = [388, 825, 944, 10002340, 10004509, 10001884, 10002821, 10002047, 30001386, 30002245, 30002321, 40000195, 50003673, 60000025, 60002642, 70004671];

/**
 * Four-node seed 60000498, as 60002642; five-node seeds 50000329, a secondary still in sync, by
 * its own account, with a peer that had stepped down and was promoted again, and 80000188, a
 * secondary that resynced a node it took for primary from a late state.
 */
const FOUR_NODE_BUG_SEEDS = [60000498];
const FIVE_NODE_BUG_SEEDS = [50000329, 80000188];

test(`seeds the long runs found stay fixed: three nodes ${THREE_NODE_BUG_SEEDS.join(', ')}; four ${FOUR_NODE_BUG_SEEDS.join(', ')}; five ${FIVE_NODE_BUG_SEEDS.join(', ')}`, { timeout: 170_000 }, async () => {
  for (const [nodes, seeds] of [[3, THREE_NODE_BUG_SEEDS], [4, FOUR_NODE_BUG_SEEDS], [5, FIVE_NODE_BUG_SEEDS]] as const) {
    const hooks = { ...hooksFor(KNOWN_FIXES), overrides: { nodes } };
    for (const seed of seeds) {
      const r = await runSeed(seed, hooks);
      assert.ok(r.ok, `seed ${seed}: ${r.failure}\n  replay: npm run sim -- --seed ${seed} --nodes ${nodes} --verbose`);
    }
  }
});

/** A model with writes stamped one block each, and filler that makes prune() run. */
function pruneModel(): { model: Model; write: (id: number, block: number) => void; pruneNow: () => void } {
  const model = new Model(3);
  const write = (id: number, block: number): void => model.completeWrite(model.issueWrite(id, block, 1, false), true);
  let filler = 1000;
  const pruneNow = (): void => {
    for (let i = 0; i < 256; i++) write(filler++, 2); // prune() runs once per 256 completions
    model.prune();
  };
  return { model, write, pruneNow };
}

test('model: pruning keeps every value a FLUSH still in flight may find on the store', () => {
  const { model, write, pruneNow } = pruneModel();
  write(1, 0);
  const flushStart = model.openCheck(); // FLUSH issued: it covers write 1
  write(4, 0); // after the FLUSH started: not covered, maybe only in RAM when it is answered
  pruneNow();
  assert.equal(model.explainBlock(0, 1, flushStart), null, 'the FLUSH may find write 1 on the store');
  model.closeCheck(flushStart);
  pruneNow(); // nothing in flight now: write 1 is definitely overwritten and goes
  assert.match(model.explainBlock(0, 1, model.now()) ?? '', /of \[4\]$/);
});

test('model: pruning keeps every value a FUA still in flight may find on the store', () => {
  const { model, write, pruneNow } = pruneModel();
  const fua = model.issueWrite(2, 1, 1, false); // in flight
  write(3, 1); // concurrent with the FUA: may land after it
  write(5, 1); // after write 3 completed: for a later read, write 3 is definitely overwritten
  pruneNow();
  model.completeWrite(fua, true);
  assert.equal(model.explainNotBefore(1, 3, fua), null, 'the FUA may find write 3 on the store');
  pruneNow(); // nothing in flight now: write 3 goes (the FUA ended after write 5 began: it stays)
  assert.match(model.explainBlock(1, 3, model.now()) ?? '', /of \[2 5\]$/);
});

test(`${SEEDS} seeds: every invariant holds after every step, and the pair converges`, { timeout: 170_000 }, async (t) => {
  const started = process.hrtime.bigint();
  const workers = Math.max(1, Math.min(4, availableParallelism()));
  const result = await runParallel({ from: 0, count: SEEDS, fixes: KNOWN_FIXES }, workers);
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  t.diagnostic(`${result.seeds} seeds, ${result.steps} steps in ${seconds.toFixed(1)} s on ${workers} threads: ${(result.seeds / seconds).toFixed(1)} seeds/s`);
  t.diagnostic(`faults injected: ${JSON.stringify(result.faults)}`);
  const shown = result.failures.slice(0, 5).map((f) => `seed ${f.seed}: ${f.failure}\n  replay: npm run sim -- --seed ${f.seed} --assume-known-fixes --verbose`);
  assert.equal(result.failures.length, 0, `${result.failures.length} failing seeds:\n${shown.join('\n')}`);
  // The corpus must exercise every fault kind (issue 10 item 3), storage faults included; a
  // node stall needs a third node.
  for (const [kind, count] of Object.entries(result.faults)) if (kind !== 'nodeStall') assert.ok(count > 0, `no ${kind} fault was injected in ${SEEDS} seeds`);
});

/**
 * Issue 12 item 8: volumes of three nodes (and some of four and five), with crashes and
 * partitions of any node, stalled and slow secondaries, promotion of any secondary, and both ack
 * policies. Their own invariants: a promoted node holds every acknowledged write, a primary
 * answers a write only once a majority holds it (`quorum: majority`), never two primaries in one
 * epoch, and every node converges to the same store.
 */
const SEVERAL: { nodes: number; count: number }[] = [{ nodes: 3, count: 300 }, { nodes: 4, count: 40 }, { nodes: 5, count: 30 }];

test(`seeds of three to five nodes (${SEVERAL.map((c) => `${c.count} of ${c.nodes}`).join(', ')}): every invariant holds, every node converges`, { timeout: 300_000 }, async (t) => {
  const workers = Math.max(1, Math.min(4, availableParallelism()));
  const faults: Record<string, number> = {};
  const shown: string[] = [];
  for (const { nodes, count } of SEVERAL) {
    const result = await runParallel({ from: 0, count, fixes: KNOWN_FIXES, overrides: { nodes } }, workers);
    t.diagnostic(`${nodes} nodes: ${result.seeds} seeds, ${result.steps} steps, faults ${JSON.stringify(result.faults)}`);
    assert.equal(result.seeds, count);
    addCounts(faults, result.faults);
    shown.push(...result.failures.slice(0, 5).map((f) => `seed ${f.seed}: ${f.failure}\n  replay: npm run sim -- --seed ${f.seed} --nodes ${nodes} --verbose`));
  }
  assert.equal(shown.length, 0, `failing seeds:\n${shown.join('\n')}`);
  for (const [kind, count] of Object.entries(faults)) assert.ok(count > 0, `no ${kind} fault was injected in the seeds of three to five nodes`);
});

const FRESH_THREE_NODE_SEEDS = 100;
const freshThreeFrom = process.env['SIM_FRESH_FROM'] !== undefined ? Number(process.env['SIM_FRESH_FROM']) : 1_000_000 + randomInt(2 ** 31);
test(`${FRESH_THREE_NODE_SEEDS} fresh three-node seeds from ${freshThreeFrom} (replay: npm run sim -- --seeds ${FRESH_THREE_NODE_SEEDS} --from ${freshThreeFrom} --nodes 3 --keep-going)`, { timeout: 170_000 }, async () => {
  const workers = Math.max(1, Math.min(4, availableParallelism()));
  const result = await runParallel({ from: freshThreeFrom, count: FRESH_THREE_NODE_SEEDS, fixes: KNOWN_FIXES, overrides: { nodes: 3 } }, workers);
  assert.equal(result.seeds, FRESH_THREE_NODE_SEEDS);
  const shown = result.failures.slice(0, 5).map((f) => `seed ${f.seed}: ${f.failure}\n  replay: npm run sim -- --seed ${f.seed} --nodes 3 --verbose`);
  assert.equal(result.failures.length, 0, `${result.failures.length} failing fresh three-node seeds:\n${shown.join('\n')}`);
});

/**
 * Fresh seeds on every run (issue 10 item 6): the corpus above is fixed, so it only ever checks
 * the interleavings it already has; these explore. The start is printed in the test's name, and
 * SIM_FRESH_FROM pins it to replay a failure.
 */
const FRESH_SEEDS = 300;
const freshFrom = process.env['SIM_FRESH_FROM'] !== undefined ? Number(process.env['SIM_FRESH_FROM']) : 1_000_000 + randomInt(2 ** 31);
test(`${FRESH_SEEDS} fresh seeds from ${freshFrom} (replay: npm run sim -- --seeds ${FRESH_SEEDS} --from ${freshFrom} --keep-going)`, { timeout: 170_000 }, async (t) => {
  const workers = Math.max(1, Math.min(4, availableParallelism()));
  const result = await runParallel({ from: freshFrom, count: FRESH_SEEDS, fixes: KNOWN_FIXES }, workers);
  t.diagnostic(`fresh seeds ${freshFrom} .. ${freshFrom + FRESH_SEEDS - 1}: ${result.seeds} run, ${result.failures.length} failed`);
  assert.equal(result.seeds, FRESH_SEEDS);
  const shown = result.failures.slice(0, 5).map((f) => `seed ${f.seed}: ${f.failure}\n  replay: npm run sim -- --seed ${f.seed} --verbose`);
  assert.equal(result.failures.length, 0, `${result.failures.length} failing fresh seeds:\n${shown.join('\n')}`);
});

for (const bug of KNOWN_BUGS) {
  const without: AssumedFix[] = KNOWN_FIXES.filter((f) => f !== bug.fix);
  test(`known bug (${bug.fix}): seed ${bug.seed} passes without the assumed fix`, { todo: bug.summary }, async () => {
    // A todo: it fails until the core is fixed; then drop the entry from sim/fixes.ts.
    const r = await runSeed(bug.seed, hooksFor(without));
    assert.ok(r.ok, `seed ${bug.seed}: ${r.failure}`);
  });
}

for (const name of PAIR_MUTANTS) {
  const budget = MUTANT_BUDGETS[name] ?? MUTANT_BUDGET;
  const notYet = NOT_CAUGHT_YET[name];
  if (notYet !== undefined) {
    // Listed, but these seeds cannot catch it yet: reported as skipped with the reason, not hidden.
    test(`mutant ${name} is caught within ${budget} seeds`, { skip: notYet }, () => undefined);
    continue;
  }
  // A large budget takes minutes on a machine busy with other work (epoch-not-persisted's 3,500
  // seeds timed out at 170 s while a long simulator run shared both cores).
  test(`mutant ${name} is caught within ${budget} seeds`, { timeout: budget > MUTANT_BUDGET ? 400_000 : 170_000 }, async () => {
    // In a worker thread: a mutant may break the core inside one of the shell's promise
    // continuations, which the run reports as its failure; node:test would also count that
    // rejection against this test if it happened in this thread.
    // A large budget is split over the cores (each part stops at its first failure).
    const spec = { from: 0, count: budget, fixes: KNOWN_FIXES, mutant: name, stopAtFailure: true };
    const r = budget > MUTANT_BUDGET ? await runParallel(spec, Math.max(1, Math.min(4, availableParallelism()))) : await runBatchInWorker(spec);
    assert.ok(r.failures.length > 0, `mutant ${name} survived ${budget} seeds`);
    const first = r.failures[0]!;
    process.stdout.write(`# mutant ${name}: caught at seed ${first.seed} (${r.seeds} seeds run in all): ${first.failure.slice(0, 160)}\n`);
  });
}

for (const name of THREE_NODE_MUTANTS) {
  test(`mutant ${name} is caught within ${MUTANT_BUDGET} three-node seeds`, { timeout: 170_000 }, async () => {
    const r = await runBatchInWorker({ from: 0, count: MUTANT_BUDGET, fixes: KNOWN_FIXES, mutant: name, stopAtFailure: true, overrides: { nodes: 3 } });
    assert.ok(r.failures.length > 0, `mutant ${name} survived ${MUTANT_BUDGET} three-node seeds`);
    const first = r.failures[0]!;
    process.stdout.write(`# mutant ${name} (three nodes): caught at seed ${first.seed}: ${first.failure.slice(0, 160)}\n`);
  });
}

test('sim/ runs the production shell: no core of its own, no copy of Volume', () => {
  const dir = fileURLToPath(new URL('../../sim/', import.meta.url));
  for (const file of readdirSync(dir).filter((f) => f.endsWith('.ts'))) {
    assert.doesNotMatch(readFileSync(dir + file, 'utf8'), /new ReplicaCore\(/, `sim/${file} builds a core itself: it must go through Volume`);
  }
  assert.match(readFileSync(dir + 'node.ts', 'utf8'), /new Volume\(/, 'sim/node.ts starts each node as a Volume');
});

test('sim/ draws no time or randomness from outside the seed', () => {
  const dir = fileURLToPath(new URL('../../sim/', import.meta.url));
  for (const file of readdirSync(dir).filter((f) => f.endsWith('.ts'))) {
    const text = readFileSync(dir + file, 'utf8');
    assert.doesNotMatch(text, /Date\.now\(|Math\.random\(|performance\.now\(/, `sim/${file}`);
  }
});
