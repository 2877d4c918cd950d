// Summarise a V8 .cpuprofile (written by `node --cpu-prof`) as the functions with the most self
// time: the first thing to look at when twinblock falls behind nbdkit on a row.
import { readFileSync } from 'node:fs';
import path from 'node:path';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples?: number[];
  timeDeltas?: number[];
}

export interface SelfTime {
  name: string;
  selfMs: number;
  share: number;
}

/** A time window of a profile, in ms from the profile's start (about the process's start). */
export interface ProfileWindow {
  fromMs: number;
  toMs: number;
}

/**
 * Self time per function (summed over every call site), largest first. With windows, only samples
 * taken inside one of them count: the phase of a run you care about (one benchmark row) rather
 * than the whole life of the process (start-up, initial sync, idle time between rows).
 */
export function topSelfTime(profilePath: string, limit = 20, windows: ProfileWindow[] | null = null): SelfTime[] {
  const profile = JSON.parse(readFileSync(profilePath, 'utf8')) as CpuProfile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  // Each sample's time is the delta to the next sample; attribute it to the sampled (leaf) node.
  const selfUsById = new Map<number, number>();
  const samples = profile.samples ?? [];
  const deltas = profile.timeDeltas ?? [];
  let atUs = 0;
  for (let i = 0; i < samples.length; i++) {
    atUs += deltas[i] ?? 0;
    const dt = deltas[i + 1] ?? 0;
    if (windows !== null && !windows.some((w) => atUs >= w.fromMs * 1000 && atUs < w.toMs * 1000)) continue;
    selfUsById.set(samples[i]!, (selfUsById.get(samples[i]!) ?? 0) + dt);
  }
  const byName = new Map<string, number>();
  let totalUs = 0;
  for (const [id, us] of selfUsById) {
    const frame = byId.get(id)?.callFrame;
    if (frame === undefined) continue;
    const file = frame.url === '' ? '' : ` ${path.basename(frame.url)}:${frame.lineNumber + 1}`;
    const name = `${frame.functionName || '(anonymous)'}${file}`;
    byName.set(name, (byName.get(name) ?? 0) + us);
    totalUs += us;
  }
  return [...byName.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, limit)
    .map(([name, us]) => ({ name, selfMs: us / 1000, share: totalUs === 0 ? 0 : us / totalUs }));
}
