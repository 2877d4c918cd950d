// The ports of the node shell (src/node/volume.ts): the few small interfaces it does all its I/O
// through, so the very same shell runs in production (real timers, a file or NBD store, metadata
// files, the TCP link) and in the simulator (sim/: the seeded scheduler, a simulated disk and
// link), as TigerBeetle's replica runs over its simulated storage and network (DESIGN.md
// "Testing layers" 2). The ports:
//   clock     — Clock below (production: realClock; simulator: the seeded event queue);
//   store     — Store (src/store/store.ts; production: file or NBD; simulator: sim/disk.ts);
//   metadata  — MetadataPort below (production: MetadataFileStore; simulator: an in-memory blob);
//   link      — LinkPort below (production: PeerLink; simulator: sim/network.ts). Inbound link
//               events come back as Volume.linkEstablished/linkMessage/linkDrained/linkDown,
//               each naming the peer.
import type { LinkMessage, PersistedState } from '../core/replica-types.js';

export interface TimerHandle {
  cancel(): void;
}

export interface Clock {
  /** Milliseconds on a clock that never goes backwards (only differences matter). */
  nowMs(): number;
  /**
   * Runs `fn` once, `delayMs` from now. A `background` timer does not keep the process alive on
   * its own (the shell's hardening timer; a node is kept alive by its servers).
   */
  setTimer(delayMs: number, fn: () => void, background?: boolean): TimerHandle;
}

/** Wall-clock time and Node's timers. */
export const realClock: Clock = {
  nowMs: () => Date.now(),
  setTimer(delayMs, fn, background = false) {
    const timer = setTimeout(fn, delayMs);
    if (background) timer.unref();
    return { cancel: () => clearTimeout(timer) };
  },
};

/** The node metadata beside the store (src/node/metadata.ts): what the last run left, and how to replace it atomically. */
export interface MetadataPort {
  /** The metadata from the last run (null: a fresh store). */
  readonly persisted: PersistedState | null;
  /** Writes the state atomically; the shell never has two writes in flight. */
  save(state: PersistedState): Promise<void>;
}

/** The replication links to the other nodes (one in a pair), outbound half. */
export interface LinkPort {
  /** Sends a message to node `peer`; false when that link's send buffer is full (Volume.linkDrained follows). */
  send(peer: string, msg: LinkMessage): boolean;
  /** Stop (false) or resume (true) reading from `peer`: the core's inbound stream from it is held by a full cache. */
  setReceiving(peer: string, receiving: boolean): void;
}
