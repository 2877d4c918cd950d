// Deliberate bugs, injected by wrapping a live core (src/ stays untouched), to show that the
// simulator bites: `npm run sim -- --seeds 200 --mutant NAME` must fail, and fast. Each mutant is
// a plausible slip in the seed's protocol.
import type { ReplicaCore } from '../src/core/replica.js';

export type MutantName = keyof typeof mutants;

export const mutants = {
  /** Fig. 4 step 66 left out: the secondary caches the write but does not mark its bitmap. */
  'skip-mark-on-receive': (core: ReplicaCore): void => {
    const record = core.record;
    const mark = record.mark.bind(record);
    record.mark = (track: number): boolean => (core.role === 'secondary' ? false : mark(track));
  },
  /**
   * Fig. 5 step 76 left out: on SAVE-ACK the hardening node destages nothing and sends COMPLETE at
   * once, so the peer clears an old bitmap whose tracks are still only in RAM.
   */
  'clear-without-harden': (core: ReplicaCore): void => {
    const notifier = core.notifier;
    const onSaveAck = notifier.onSaveAck.bind(notifier);
    notifier.onSaveAck = (range: number, _dirty: number[]) => onSaveAck(range, []);
  },
  /**
   * Fig. 3 step 72 wrong: the peer saves its current bitmap as old by *clearing* it, as if a save
   * meant "forget what was sent so far".
   */
  'save-clears-current': (core: ReplicaCore): void => {
    const record = core.record;
    const save = record.saveCurrentAsOld.bind(record);
    record.saveCurrentAsOld = (range: number): void => {
      save(range);
      record.clearOld(range);
    };
  },
  /**
   * DESIGN.md "Failures", last point, left out: the primary hardens a mirrored write before the
   * secondary acknowledged it. If the primary then dies, its store holds a write no bitmap
   * records and the returning node keeps it after a delta resync (issue 5 item 4: "the simulator
   * must catch it when this is left out").
   */
  'harden-unacked': (core: ReplicaCore): void => {
    core.cache.holdHardening = () => undefined;
  },
  /**
   * The race issue 5 left open until promote became two-phase: a connected secondary promotes on
   * its own view of the peer (as if forced whenever that view says "secondary"), so the peer may
   * not know the new epoch when the new primary dies (seed 1101's shape), or two quick switchovers
   * give both nodes one epoch (seed 3337's).
   */
  'promote-unconfirmed': (core: ReplicaCore): void => {
    const promote = core.promote.bind(core);
    core.promote = (force: boolean, nowMs: number, requestId?: number) =>
      promote(force || (core.peerRole !== 'primary' && !core.incompleteResync), nowMs, requestId);
  },
} as const;

export function isMutant(name: string): name is MutantName {
  return Object.hasOwn(mutants, name);
}
