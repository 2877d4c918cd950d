// Node metadata beside the store (issue 5 item 3): volume identity, epoch history, the
// clean-shutdown flag and the persisted out-of-sync bitmap. Written atomically — write a temporary
// file, fsync it, rename it over the old one, fsync the directory — so a crash leaves either the
// old or the new metadata, never a torn one.
import fs from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import type { PersistedState } from '../core/replica-types.js';

const FORMAT_VERSION = 1;

export interface VolumeIdentity {
  volume: string;
  sizeBytes: number;
  trackSizeBytes: number;
}

/** The file's shape, checked on load: a hand-edited or damaged file gets a clear error. */
const metadataFileSchema = z.object({
  formatVersion: z.number(),
  volume: z.string(),
  sizeBytes: z.number(),
  trackSizeBytes: z.number(),
  node: z.string(),
  history: z.array(z.object({ epoch: z.number().int().nonnegative(), node: z.string() })),
  role: z.enum(['primary', 'secondary']),
  cleanShutdown: z.boolean(),
  diverging: z.boolean(),
  storeTrusted: z.boolean(),
  resyncIncomplete: z.boolean().optional(),
  outOfSync: z.string().nullable(),
  discardLocal: z.boolean(),
  // Absent in files written before promotions were confirmed by the peer.
  proposedEpoch: z.number().int().nonnegative().optional(),
  // Absent in files written before a failed fdatasync was remembered across restarts.
  syncLost: z.boolean().optional(),
});

type MetadataFile = z.infer<typeof metadataFileSchema>;

export class MetadataError extends Error {
  override readonly name = 'MetadataError';
}

export class MetadataFileStore {
  private chain: Promise<void> = Promise.resolve();

  constructor(readonly filePath: string, private readonly identity: VolumeIdentity, private readonly node: string) {}

  /** The persisted state, or null when there is none (a fresh store). */
  async load(): Promise<PersistedState | null> {
    let text: string;
    try {
      text = await fs.readFile(this.filePath, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw new MetadataError(`metadata ${this.filePath}: ${(err as Error).message}`);
    }
    const remedy = 'if the peer holds this volume\'s data, moving the file away makes this store new: it then gets a full resync from the peer';
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      throw new MetadataError(`metadata ${this.filePath} is not valid JSON (${remedy})`);
    }
    const parsed = metadataFileSchema.safeParse(json);
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!;
      throw new MetadataError(`metadata ${this.filePath}: ${issue.path.join('.') || 'file'}: ${issue.message} (${remedy})`);
    }
    const data = parsed.data;
    this.checkIdentity(data);
    return {
      history: data.history, role: data.role, cleanShutdown: data.cleanShutdown, diverging: data.diverging,
      storeTrusted: data.storeTrusted === true, resyncIncomplete: data.resyncIncomplete === true, outOfSync: data.outOfSync === null ? null : Uint8Array.from(Buffer.from(data.outOfSync, 'base64')), discardLocal: data.discardLocal,
      proposedEpoch: data.proposedEpoch ?? 0, syncLost: data.syncLost === true,
    };
  }

  private checkIdentity(data: MetadataFile): void {
    if (data.formatVersion !== FORMAT_VERSION) throw new MetadataError(`metadata ${this.filePath} has format ${data.formatVersion}, this twinblock reads ${FORMAT_VERSION}`);
    for (const key of ['volume', 'sizeBytes', 'trackSizeBytes'] as const) {
      if (data[key] !== this.identity[key]) {
        throw new MetadataError(`metadata ${this.filePath} belongs to another volume: ${key} ${String(data[key])} there, ${String(this.identity[key])} in the config`);
      }
    }
  }

  /** Writes the state atomically; writes are applied in call order. */
  save(state: PersistedState): Promise<void> {
    const next = this.chain.then(() => this.writeAtomically(state));
    this.chain = next.catch(() => undefined);
    return next;
  }

  async remove(): Promise<void> {
    await fs.rm(this.filePath, { force: true });
  }

  private async writeAtomically(state: PersistedState): Promise<void> {
    const data: MetadataFile = {
      formatVersion: FORMAT_VERSION, ...this.identity, node: this.node,
      history: state.history, role: state.role, cleanShutdown: state.cleanShutdown, diverging: state.diverging,
      storeTrusted: state.storeTrusted, resyncIncomplete: state.resyncIncomplete, outOfSync: state.outOfSync === null ? null : Buffer.from(state.outOfSync).toString('base64'), discardLocal: state.discardLocal,
      proposedEpoch: state.proposedEpoch, syncLost: state.syncLost,
    };
    const tmp = `${this.filePath}.tmp`;
    const handle = await fs.open(tmp, 'w');
    try {
      await handle.writeFile(`${JSON.stringify(data)}\n`);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await fs.rename(tmp, this.filePath);
    const dir = await fs.open(path.dirname(this.filePath), 'r');
    try {
      await dir.sync();
    } finally {
      await dir.close();
    }
  }
}
