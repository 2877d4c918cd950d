// What the node's metadata on disk records, by value, as its saves land (the shell saves them in
// order): the highest epoch (of the history, or proposed) and the diverging mark. A part the link
// half owns. The core checks its own bookkeeping against it before acting on a persist: a
// promotion's epoch (ReplicaCore.onPersisted) and a lone primary's diverging mark
// (checkHardenJob, replica-checks.ts) must be on disk, not only issued. Also the role a node starts in,
// which the metadata of its last run decides (startupRole). Pure.
import { assert } from './assert.js';
import { TrackBitmap } from './bitmap.js';
import type { DataChannel, ReplicaSettings } from './replica-data.js';
import type { PersistedState, Role } from './replica-types.js';

/**
 * The out-of-sync set the metadata records: one bitmap for every peer, the tracks any of them
 * lacks (a pair has one peer). A peer whose return is still to be judged (vouchIn) may need every
 * track: after a restart nothing remembers what would vouch for it. A clean shutdown adds what a
 * peer may hold only in RAM (the united bitmap): the record itself is not saved.
 */
export function outOfSyncOnDisk(channels: readonly DataChannel[], trackCount: number, cleanShutdown: boolean): TrackBitmap {
  const outOfSync = new TrackBitmap(trackCount);
  for (const ch of channels) {
    for (let t = 0; t < trackCount; t++) if (ch.vouchIn !== null || ch.outOfSync.has(t) || (cleanShutdown && ch.record.isUnited(t))) outOfSync.set(t);
  }
  return outOfSync;
}

/** A crashed pair node comes back secondary (its peer may have been promoted meanwhile). */
export function startupRole(settings: ReplicaSettings, persisted: PersistedState | null): Role {
  if (!settings.mirrored) return 'primary';
  if (persisted === null) return settings.role;
  return persisted.cleanShutdown && persisted.role === 'primary' && !persisted.discardLocal ? 'primary' : 'secondary';
}

export class MetadataOnDisk {
  /** Saves issued and not yet landed, in order, with what each records. */
  private readonly inFlight: { token: number; epoch: number; diverging: boolean }[] = [];
  private landedThroughToken = 0;
  private epochValue = 0;
  private divergingValue = false;

  /** The highest epoch (history or proposal) in the metadata now on disk. */
  get epoch(): number {
    return this.epochValue;
  }

  /** The diverging mark in the metadata now on disk. */
  get diverging(): boolean {
    return this.divergingValue;
  }

  /** Save `token` was issued, recording `epoch` and `diverging`. */
  issued(token: number, epoch: number, diverging: boolean): void {
    this.inFlight.push({ token, epoch, diverging });
  }

  /** Save `token` landed, and with it every earlier one. */
  landed(token: number): void {
    assert(token > this.landedThroughToken, `persists complete in order (${token} after ${this.landedThroughToken})`);
    this.landedThroughToken = token;
    while (this.inFlight.length > 0 && this.inFlight[0]!.token <= token) {
      const save = this.inFlight.shift()!;
      this.epochValue = save.epoch;
      this.divergingValue = save.diverging;
    }
  }
}
