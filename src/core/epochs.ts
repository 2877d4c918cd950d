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

/** How my history relates to the peer's: one a prefix of the other, equal, or diverged. */
export function compareHistories(mine: readonly EpochEntry[], theirs: readonly EpochEntry[]): HistoryRelation {
  const common = Math.min(mine.length, theirs.length);
  for (let i = 0; i < common; i++) if (!sameEntry(mine[i]!, theirs[i]!)) return 'diverged';
  if (mine.length === theirs.length) return 'equal';
  return mine.length > theirs.length ? 'mine-newer' : 'theirs-newer';
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
