// Fixes the simulator assumes for the bugs it found in the core (or the shell) and reported to
// the lead, so that a run can look past a known bug for the next one. Each one is named, opt-in
// (`--assume-fix NAME`, or `--assume-known-fixes` for all of KNOWN_BUGS), announced by the CLI,
// and replayed without its fix by a `todo` test in test/sim.test.ts: when the core is fixed, that
// test passes and the entry here should go.
import type { ReplicaCore } from '../src/core/replica.js';

/**
 * Core-side fixes, applied by wrapping the live core (src/ stays untouched). Empty now: the lead
 * fixed every core bug this file used to work around (commits 419a303 and d6de14f). A new one goes
 * here as `'name': (core) => { ...wrap a method... }`, with its seed in KNOWN_BUGS.
 */
export const assumedFixes: Record<string, (core: ReplicaCore) => void> = {};

/**
 * Fixes (or avoidances) on the shell and operator side, applied by sim/node.ts and sim/faults.ts:
 *  - settled-roles: an avoidance. Promote and the state exchange decide on each node's last view
 *    of its peer. A primary that crashes before its peer learned of its promotion comes back with
 *    the newer epoch history and is the resync source, although it lost its RAM and the survivor
 *    holds acknowledged writes it lacks (seed 1101: b promoted at 1127 ms, crashed at 1139; a held
 *    w110; b's full resync of a erases it); and a switchover started 2 ms after the previous one
 *    gives both nodes the same epoch number and a split brain (seed 3337). With this, the injector
 *    crashes a primary, and the operator switches over, only once each node's view of the other's
 *    role is current.
 */
export const shellFixes = ['settled-roles'] as const;

export type AssumedFix = string;

export function isAssumedFix(name: string): boolean {
  return Object.hasOwn(assumedFixes, name) || (shellFixes as readonly string[]).includes(name);
}

/** The core wrappers among the named fixes (the others are applied by the shell and operator). */
export function coreFixes(names: readonly AssumedFix[]): ((core: ReplicaCore) => void)[] {
  return names.flatMap((n) => (Object.hasOwn(assumedFixes, n) ? [assumedFixes[n]!] : []));
}

export interface KnownBug {
  /** The fix that makes the seed pass. */
  fix: AssumedFix;
  /** A seed that fails without the fix (all other known fixes applied). */
  seed: number;
  summary: string;
}

/**
 * The bugs found and not yet fixed, each with a seed that shows it on the current core. Replay:
 * `npm run sim -- --seed S --verbose` (fails) and `... --assume-known-fixes` (passes).
 */
export const KNOWN_BUGS: readonly KnownBug[] = [
  { fix: 'settled-roles', seed: 1101, summary: 'a primary that crashes before its peer learned of its promotion is the resync source on return (newer epoch history) and erases acknowledged writes the survivor holds' },
  { fix: 'settled-roles', seed: 3337, summary: 'a switchover right after another (b promoted, demoted 2 ms later, a promoted before b\'s state arrived) gives both nodes epoch 14: split brain without any failure' },
];

/** Every fix in KNOWN_BUGS: what the seed test assumes until the core is fixed. */
export const KNOWN_FIXES: readonly AssumedFix[] = [...new Set(KNOWN_BUGS.map((b) => b.fix))];
