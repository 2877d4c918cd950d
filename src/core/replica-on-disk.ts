// What the node's metadata on disk records, by value, as its saves land (the shell saves them in
// order): the highest epoch (of the history, or proposed) and the diverging mark. A part the link
// half owns. The core checks its own bookkeeping against it before acting on a persist: a
// promotion's epoch (ReplicaCore.onPersisted) and a lone primary's diverging mark
// (checkHardenJob, replica-checks.ts) must be on disk, not only issued. Also the role a node starts in,
// which the metadata of its last run decides (startupRole). Pure.
import { assert } from './assert.js';
import type { ReplicaSettings } from './replica-data.js';
import type { PersistedState, Role } from './replica-types.js';

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
