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
 * Fixes (or avoidances) on the shell and operator side, applied by sim/node.ts and sim/faults.ts.
 * Empty now: `settled-roles` (seeds 1101, 3337: role changes decided on a stale view of the peer)
 * went when promote while connected became two-phase, confirmed by the peer (src/core/replica.ts).
 */
export const shellFixes: readonly string[] = [];

export type AssumedFix = string;

export function isAssumedFix(name: string): boolean {
  return Object.hasOwn(assumedFixes, name) || shellFixes.includes(name);
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
export const KNOWN_BUGS: readonly KnownBug[] = [];

/** Every fix in KNOWN_BUGS: what the seed test assumes until the core is fixed. */
export const KNOWN_FIXES: readonly AssumedFix[] = [...new Set(KNOWN_BUGS.map((b) => b.fix))];
