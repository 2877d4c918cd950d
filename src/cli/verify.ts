// `twinblock verify --admin URL [--peer NODE] [--resync]` (issue 14 item 4): starts an online
// verify on the primary (POST /verify), waits until it ends by reading /status `verify`, and
// prints the number of differing tracks and each one's byte offset. A verify that was aborted
// (the peer's link dropped, a role changed) is an error: exit 1 with the reason.
import { formatSize } from '../config/size.js';
import { verifyLine } from './status-format.js';

type Json = Record<string, unknown>;

export interface VerifyIo {
  /** POSTs /verify with this body; the node's answer (a refusal throws). */
  start(body: Json): Promise<Json>;
  /** GETs /status. */
  status(): Promise<Json>;
  out(text: string): void;
  /** Progress while waiting (stderr). */
  progress(text: string): void;
  sleep(ms: number): Promise<void>;
}

const POLL_MS = 500;
/** A progress line at most this often. */
const PROGRESS_EVERY_MS = 5000;

/** Runs a verify to its end and prints what it found. */
export async function verifyCommand(opts: { peer?: string; resync?: boolean }, io: VerifyIo): Promise<void> {
  const answer = await io.start({ ...(opts.peer === undefined ? {} : { peer: opts.peer }), resync: opts.resync === true });
  const started = answer['verify'] as Json | undefined;
  const id = started?.['id'];
  if (typeof id !== 'number') throw new Error(`the node's answer to POST /verify has no verify id: ${JSON.stringify(answer)}`);
  let lastProgressMs = Date.now();
  for (;;) {
    await io.sleep(POLL_MS);
    const status = await io.status();
    const v = status['verify'] as Json | null | undefined;
    if (v === null || v === undefined || v['id'] !== id) throw new Error('the node no longer reports this verify (did it restart?)');
    if (v['state'] === 'aborted') throw new Error(`verify against ${String(v['peer'])} aborted: ${String(v['reason'])}`);
    if (v['state'] !== 'running') return io.out(report(v, Number(status['trackSizeBytes'])));
    if (Date.now() - lastProgressMs >= PROGRESS_EVERY_MS) {
      io.progress(`${verifyLine(v).trim()}\n`);
      lastProgressMs = Date.now();
    }
  }
}

function report(v: Json, trackSizeBytes: number): string {
  const offsets = Array.isArray(v['differingOffsets']) ? (v['differingOffsets'] as number[]) : [];
  const differing = Number(v['differingTracks']);
  const unverified = Number(v['unverifiedTracks']);
  const elapsedMs = Date.parse(String(v['endedAt'])) - Date.parse(String(v['startedAt']));
  const lines = [
    `verify against ${String(v['peer'])}: done, ${formatSize(Number(v['totalBytes']))} compared in ${(elapsedMs / 1000).toFixed(1)}s`,
    `differing tracks: ${differing}`,
    ...offsets.map((offset) => `  track ${trackSizeBytes > 0 ? Math.floor(offset / trackSizeBytes) : '?'} at byte offset ${offset}`),
  ];
  if (offsets.length < differing) lines.push(`  (${differing - offsets.length} more not listed)`);
  if (unverified > 0) lines.push(`unverified tracks (written each time they were compared): ${unverified}`);
  if (v['resync'] === true && differing > 0) lines.push(`the differing tracks are out of sync for ${String(v['peer'])} and are being resent (twinblock status shows the resync)`);
  return `${lines.join('\n')}\n`;
}
