// Whether this node's store may be trusted for a delta resync, a part the link half
// (replica-link.ts) owns: the trust itself, which the state exchange tells the peer, and what a
// failed fdatasync leaves unsure until a resync has rewritten the whole store. Both persisted.
// Pure and synchronous.
import type { PersistedState } from './replica-types.js';

export class StoreTrust {
  /** Every hardened write is known to the peer or listed in outOfSync. */
  trusted: boolean;
  /**
   * An fdatasync failed since every track of this store was last rewritten (a full resync into
   * it). Linux may drop the dirty pages of a failed writeback and report it once ("fsyncgate"):
   * sectors hardened before it may be lost to a power loss although a later fdatasync succeeds,
   * and no bitmap names them. Such a store is not trusted for a delta resync (a crash of this
   * node brings a full one), and becoming a resync source does not restore that trust. Persisted:
   * a restart of the process (crash or clean stop) does not end it — the kernel's page cache, and
   * the writeback it lost, outlive the process, and after a power loss the disk may lack those
   * sectors. Kept in memory only, it was forgotten at a restart, and the next resync this node
   * sent made its store trusted again; a later power loss took a sector hardened before the failed
   * fdatasync, and the delta resync after it skipped that track (simulator, seed 10007857).
   */
  syncLost: boolean;
  /**
   * The resync being received rewrites every track (full, and not a checksum resync that skips
   * tracks on this store's word), and no fdatasync failed since it started: once it completes,
   * syncLost is over. Cleared at its start instead, a resync cut short left the next checksum
   * resync trusting this store's sums for a track whose writeback was lost (simulator, seed
   * 1412802398).
   */
  private rewriteEndsSyncLost = false;

  constructor(persisted: PersistedState | null, discardLocal: boolean) {
    this.trusted = persisted !== null && persisted.storeTrusted && (persisted.cleanShutdown || !persisted.diverging) && !discardLocal;
    this.syncLost = persisted?.syncLost === true;
  }

  /** A resync into this store starts; `rewritesEveryTrack`: full, and every track is sent. */
  intakeStarted(rewritesEveryTrack: boolean): void {
    this.rewriteEndsSyncLost = rewritesEveryTrack;
  }

  /** A resync into this store completed: it matches its source, as far as its disk allows. */
  intakeCompleted(): void {
    if (this.rewriteEndsSyncLost) this.syncLost = false;
    this.rewriteEndsSyncLost = false;
    this.trusted = !this.syncLost;
  }

  /** A resync this node sent completed: its store is the reference, unless a writeback was lost. */
  sourceCompleted(): void {
    this.trusted = !this.syncLost;
  }

  /** An fdatasync failed. True when that just cost a mirrored store its trust (persist, say so). */
  syncFailed(mirrored: boolean): boolean {
    this.syncLost = true;
    this.rewriteEndsSyncLost = false;
    if (!mirrored || !this.trusted) return false;
    this.trusted = false;
    return true;
  }
}
