// Epoch history: who was primary when (DESIGN.md "Failures"). Every time a node becomes primary it
// appends (epoch, node) with a fresh epoch and persists it before serving a write. Comparing two
// nodes' histories tells which one holds the newer data (the sync source) and detects split brain:
// both sides appended entries since their last common one, so both may have accepted writes the
// other lacks. Epoch numbers alone are not enough — two isolated nodes may both pick epoch 5 —
// so entries compare as (epoch, node) pairs. Pure.

export interface EpochEntry {
  epoch: number;
  node: string;
}

export type HistoryRelation = 'equal' | 'mine-newer' | 'theirs-newer' | 'diverged';

function sameEntry(a: EpochEntry, b: EpochEntry): boolean {
  return a.epoch === b.epoch && a.node === b.node;
}

/**
 * How my history relates to the peer's: one a prefix of the other, equal, or diverged.
 *
 * With `nodes`, entries past the common prefix that the other side holds only because it adopted
 * a promotion that node proposed and never served in (a promote whose confirmation was lost with
 * the link: the proposer retried with a later epoch) do not make a divergence: the side holding
 * them was secondary all along, so the proposer's history is the newer one. A proposer's own
 * history never lacks an epoch it served writes in (it persists the entry before serving).
 */
export function compareHistories(mine: readonly EpochEntry[], theirs: readonly EpochEntry[], nodes?: { me: string; peer: string }): HistoryRelation {
  let common = 0;
  while (common < mine.length && common < theirs.length && sameEntry(mine[common]!, theirs[common]!)) common++;
  const mineAfter = mine.slice(common);
  const theirsAfter = theirs.slice(common);
  if (mineAfter.length === 0 && theirsAfter.length === 0) return 'equal';
  if (theirsAfter.length === 0) return 'mine-newer';
  if (mineAfter.length === 0) return 'theirs-newer';
  if (nodes !== undefined) {
    const onlyBy = (entries: EpochEntry[], node: string): boolean => entries.every((e) => e.node === node);
    const theirsOnlyMyProposals = onlyBy(theirsAfter, nodes.me);
    const mineOnlyTheirProposals = onlyBy(mineAfter, nodes.peer);
    if (theirsOnlyMyProposals && !mineOnlyTheirProposals) return 'mine-newer';
    if (mineOnlyTheirProposals && !theirsOnlyMyProposals) return 'theirs-newer';
  }
  return 'diverged';
}

/** The epoch a node promoting now takes: one past every epoch it knows of. */
export function nextEpoch(history: readonly EpochEntry[]): number {
  return history.reduce((max, e) => Math.max(max, e.epoch), 0) + 1;
}

export function currentEpoch(history: readonly EpochEntry[]): number {
  return history.length === 0 ? 0 : history[history.length - 1]!.epoch;
}

export function lastPrimary(history: readonly EpochEntry[]): string | null {
  return history.length === 0 ? null : history[history.length - 1]!.node;
}
