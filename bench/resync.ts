// Resync and failover benchmark (issue 5 item 10), run by hand: `npm run bench:resync -- [options]`.
//
// 1. Delta resync. A mirrored pair (two node processes on loopback, file stores, syncRate raised so
//    the link, not the limiter, sets the pace) in sync and hardened; stop the secondary (SIGTERM,
//    or kill -9 with --crash); write P% of the volume's 64 KiB tracks, whole tracks, spread evenly,
//    through the primary (degraded now, so write-through: a queue of writes in flight); restart
//    the secondary; time from its restart to both nodes in-sync, and the resync itself from the
//    primary's log ("resync of the out-of-sync tracks started" → "resync complete: in-sync", which
//    carry tracks, bytes and ms), and the bytes sent (counters.resyncBytesSent).
// 2. Beside it, nbdcopy of the same number of bytes over loopback from one `nbdkit file` export to
//    another (random data, both files written beforehand): the same job — read a file, send it
//    over TCP, write a file — done by a tool built for it.
// 3. Failover: under a light write load, kill -9 the primary; once the secondary sees its peer
//    gone, POST /promote to it and time from that call to the first 4 KiB write acknowledged by the
//    new primary (our NBD client, connected after the promote answered). Then restart the old
//    primary (it comes back secondary and gets a delta resync) and repeat the other way round.
import { randomFillSync } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { NbdClient } from '../src/nbd/client.js';
import { cleanupAll, makeTempDir, run } from '../test/helpers/node-process.js';
import { ensureTools } from '../test/helpers/tools.js';
import {
  commitDescription, copyFile, exitWithUsageIf, failureLine, OptionError, fmtNumber, intOption, KiB, loadAverage, machine, maxLoadOption, median, MiB, sleep, syncFs, waitForLowLoad, writeDataFile, startNbdkitFile,
} from './common.js';
import { BenchPair, describe, pairPaths, type NodeName } from './pair.js';

const TRACK_BYTES = 64 * KiB;

const usage = `usage: npm run bench:resync -- [options]
  --runs N           runs per dirty share (default 3)
  --percent a,b      dirty shares of the volume's tracks, in % (default 1,10,100)
  --size SIZE_MIB    volume size in MiB (default 1024; --quick: 256)
  --cache SIZE       twinblock cache per node (default 256MiB)
  --sync-rate SIZE   the pair's syncRate (default 4GiB: the limiter out of the way)
  --depth N          writes in flight while making tracks dirty (default 16)
  --crash            kill -9 the secondary instead of SIGTERM
  --promote-runs N   failover measurements (default 5; 0 to skip)
  --switchover-runs N  planned switchovers (demote, then promote, connected: two-phase; default 5)
  --no-nbdcopy       skip the nbdcopy baseline
  --dir DIR          where the files go (default: a temp dir under $TMPDIR)
  --quick            smaller volume, fewer runs: a smoke test of the bench itself
  --max-load L       before starting, wait (up to --max-wait s, default 600) for 1-min load <= L
  --markdown FILE    also write the results to FILE`;

interface Options {
  runs: number;
  percents: number[];
  sizeBytes: number;
  cache: string;
  syncRate: string;
  depth: number;
  crash: boolean;
  promoteRuns: number;
  switchoverRuns: number;
  nbdcopy: boolean;
  dir: string | null;
  maxLoad: number | null;
  maxWaitSec: number;
  markdownPath: string | null;
}

function parseOptions(): Options {
  const { values } = parseArgs({
    options: {
      runs: { type: 'string' }, percent: { type: 'string' }, size: { type: 'string' }, cache: { type: 'string' },
      'sync-rate': { type: 'string' }, depth: { type: 'string' }, crash: { type: 'boolean' }, 'promote-runs': { type: 'string' },
      'switchover-runs': { type: 'string' }, 'no-nbdcopy': { type: 'boolean' }, dir: { type: 'string' }, quick: { type: 'boolean' }, 'max-load': { type: 'string' },
      'max-wait': { type: 'string' }, markdown: { type: 'string' }, help: { type: 'boolean' },
    },
  });
  exitWithUsageIf(values.help, usage);
  const quick = values.quick === true;
  const percents = (values.percent ?? '1,10,100').split(',').map(Number);
  if (percents.some((p) => !(p > 0 && p <= 100))) throw new OptionError(`--percent wants numbers in (0, 100], got "${values.percent}"`);
  return {
    runs: intOption(values.runs, quick ? 1 : 3, 'runs'),
    percents,
    sizeBytes: intOption(values.size, quick ? 256 : 1024, 'size') * MiB,
    cache: values.cache ?? '256MiB',
    syncRate: values['sync-rate'] ?? '4GiB',
    depth: intOption(values.depth, 16, 'depth'),
    crash: values.crash === true,
    promoteRuns: intOption(values['promote-runs'], quick ? 2 : 5, 'promote-runs', 0),
    switchoverRuns: intOption(values['switchover-runs'], quick ? 2 : 5, 'switchover-runs', 0),
    nbdcopy: values['no-nbdcopy'] !== true,
    dir: values.dir ?? null,
    maxLoad: maxLoadOption(values['max-load']),
    maxWaitSec: intOption(values['max-wait'], 600, 'max-wait'),
    markdownPath: values.markdown ?? null,
  };
}

/** Write `count` whole tracks spread evenly over the volume, `depth` in flight; returns ms taken. */
async function writeSpreadTracks(uri: string, trackCount: number, count: number, depth: number): Promise<number> {
  const client = await NbdClient.connect(uri);
  const payloads = Array.from({ length: 16 }, () => randomFillSync(Buffer.allocUnsafe(TRACK_BYTES)));
  let next = 0;
  const t0 = performance.now();
  const worker = async (): Promise<void> => {
    while (next < count) {
      const k = next++;
      const track = Math.floor((k * trackCount) / count);
      await client.write(track * TRACK_BYTES, payloads[k % payloads.length]!);
    }
  };
  try {
    await Promise.all(Array.from({ length: depth }, () => worker()));
  } finally {
    await client.disconnect();
  }
  return performance.now() - t0;
}

interface ResyncRun {
  percent: number;
  tracks: number;
  outOfSyncTracks: number;
  writeMs: number;
  /** From spawning the secondary to both in-sync (process start, store open, link, state exchange, resync). */
  restartToInSyncMs: number;
  /** The primary's "resync complete" ms (resync start to the last chunk sent). */
  resyncMs: number;
  /** From the primary logging the resync start to both nodes reporting in-sync (our poll, 10 ms). */
  resyncToInSyncMs: number;
  /** From spawning the secondary to: it serves NBD and /status; the primary logs the link up; the primary logs the resync start. */
  servingMs: number;
  linkUpMs: number;
  resyncStartMs: number;
  loggedBytes: number;
  counterBytes: number;
  full: boolean;
}

function num(v: unknown): number {
  return typeof v === 'number' ? v : Number.NaN;
}

async function measureResync(pair: BenchPair, percent: number, opts: Options): Promise<ResyncRun> {
  const trackCount = opts.sizeBytes / TRACK_BYTES;
  const tracks = Math.max(1, Math.round((trackCount * percent) / 100));
  await pair.waitInSync();
  await pair.waitHardened();
  syncFs();
  // The secondary goes away cleanly (it hardens first) or crashes.
  if (opts.crash) await pair.node('b').kill9();
  else await pair.node('b').stop({ timeoutMs: 120_000 });
  await pair.waitFor('a degraded', async () => {
    const s = await pair.status('a');
    return { ok: s.peers[0]?.state === 'degraded', detail: describe(s) };
  }, 30_000);
  const writeMs = await writeSpreadTracks(pair.uri('a'), trackCount, tracks, opts.depth);
  const before = await pair.status('a');
  const outOfSyncTracks = before.peers[0]!.outOfSyncTracks;
  syncFs();
  const mark = pair.logs.a.length;
  const t0 = Date.now();
  await pair.startNode('b');
  const tServing = Date.now();
  await pair.waitInSync(300_000, 10);
  const tInSync = Date.now();
  const after = await pair.status('a');
  const linkUp = pair.lines('a', 'link up: peer connected and authenticated', mark)[0];
  const started = pair.lines('a', 'resync of the out-of-sync tracks started', mark)[0] ?? pair.lines('a', 'full resync of the peer started', mark)[0];
  const done = pair.lines('a', 'resync complete: in-sync', mark)[0];
  if (started === undefined || done === undefined) throw new Error(`no resync start/complete lines on a:\n${pair.tail('a', 30)}`);
  return {
    percent, tracks, outOfSyncTracks, writeMs,
    restartToInSyncMs: tInSync - t0,
    resyncMs: num(done['ms']),
    resyncToInSyncMs: tInSync - started.receivedAtMs,
    servingMs: tServing - t0,
    linkUpMs: linkUp === undefined ? Number.NaN : linkUp.receivedAtMs - t0,
    resyncStartMs: started.receivedAtMs - t0,
    loggedBytes: num(done['bytes']),
    counterBytes: after.counters.resyncBytesSent - before.counters.resyncBytesSent,
    full: done['full'] === true || started.msg === 'full resync of the peer started',
  };
}

interface CopyRun { bytes: number; ms: number }

/** nbdcopy between two nbdkit file exports of `bytes` each; median over runs. */
async function measureNbdcopy(dir: string, bytes: number, runs: number): Promise<CopyRun[]> {
  const src = path.join(dir, `nbdcopy-src-${bytes}.img`);
  const dst = path.join(dir, `nbdcopy-dst-${bytes}.img`);
  writeDataFile(src, bytes);
  writeDataFile(dst, bytes); // other random data: the destination is overwritten, as the secondary's store is
  syncFs();
  const srcKit = await startNbdkitFile(src);
  const dstKit = await startNbdkitFile(dst);
  const out: CopyRun[] = [];
  try {
    for (let i = 0; i < runs; i++) {
      syncFs();
      const t0 = performance.now();
      const r = await run('nbdcopy', [srcKit.uri, dstKit.uri], { timeoutMs: 300_000 });
      const ms = performance.now() - t0;
      if (r.code !== 0) throw new Error(`nbdcopy failed: ${r.stderr}`);
      out.push({ bytes, ms });
      console.error(`nbdcopy ${fmtNumber(bytes / MiB, 2)} MiB run ${i + 1}/${runs}: ${ms.toFixed(0)} ms (load ${loadAverage()})`);
    }
  } finally {
    await srcKit.proc.stop();
    await dstKit.proc.stop();
    await run('rm', ['-f', src, dst]);
  }
  return out;
}

interface PromoteRun {
  from: NodeName;
  to: NodeName;
  noticedMs: number;
  postMs: number;
  promoteToFirstWriteMs: number;
  killToFirstWriteMs: number;
  writesBeforeKill: number;
}

/** A writer that keeps 8 random 4 KiB writes in flight until its connection dies or it is stopped. */
function backgroundWriter(uri: string, spanBytes: number): { stop(): Promise<number>; started: Promise<void> } {
  let stopped = false;
  let acked = 0;
  let clientRef: NbdClient | null = null;
  let resolveStarted!: () => void;
  const started = new Promise<void>((r) => { resolveStarted = r; });
  const done = (async () => {
    const client = await NbdClient.connect(uri);
    clientRef = client;
    resolveStarted();
    const payload = randomFillSync(Buffer.allocUnsafe(4096));
    const blocks = spanBytes / 4096;
    const worker = async (): Promise<void> => {
      while (!stopped) {
        try {
          await client.write(Math.floor(Math.random() * blocks) * 4096, payload);
          acked++;
        } catch {
          return; // the node died under us: expected
        }
      }
    };
    await Promise.all(Array.from({ length: 8 }, () => worker()));
  })();
  return {
    started,
    stop: async () => {
      stopped = true;
      await done.catch(() => undefined);
      if (clientRef !== null && clientRef.closedError === null) await clientRef.disconnect().catch(() => undefined);
      return acked;
    },
  };
}

/**
 * POST /promote to `to`, then one 4 KiB write through a fresh NBD connection to it: when the promote
 * answered and when the write was acknowledged (performance.now() times).
 */
async function promoteAndWrite(pair: BenchPair, to: NodeName): Promise<{ postedAt: number; firstWriteAt: number }> {
  const res = await pair.post(to, 'promote');
  const postedAt = performance.now();
  if (res.status !== 200) throw new Error(`POST ${to}/promote: HTTP ${res.status} ${res.text}`);
  const client = await NbdClient.connect(pair.uri(to));
  if (client.readOnly) throw new Error(`${to} still exports read-only after promote`);
  await client.write(0, randomFillSync(Buffer.allocUnsafe(4096)));
  const firstWriteAt = performance.now();
  await client.disconnect();
  return { postedAt, firstWriteAt };
}

async function measurePromote(pair: BenchPair, from: NodeName, to: NodeName, spanBytes: number): Promise<PromoteRun> {
  await pair.waitInSync();
  const writer = backgroundWriter(pair.uri(from), spanBytes);
  await writer.started;
  await sleep(1000);
  await pair.node(from).kill9();
  const killedAt = performance.now();
  const writesBeforeKill = await writer.stop();
  await pair.waitFor(`${to} sees its peer gone`, async () => {
    const s = await pair.status(to);
    return { ok: s.peers[0]?.connected === false, detail: describe(s) };
  }, 10_000, 5);
  const t0 = performance.now();
  const noticedMs = t0 - killedAt;
  const { postedAt: tPosted, firstWriteAt: tWrite } = await promoteAndWrite(pair, to);
  // The old primary returns (as secondary, after a crash) and gets a delta resync.
  await pair.startNode(from);
  await pair.waitInSync(300_000);
  return {
    from, to, noticedMs, postMs: tPosted - t0, promoteToFirstWriteMs: tWrite - t0, killToFirstWriteMs: tWrite - killedAt, writesBeforeKill,
  };
}

interface SwitchoverRun {
  from: NodeName;
  to: NodeName;
  demoteMs: number;
  promoteMs: number;
  promoteToFirstWriteMs: number;
}

/**
 * A planned switchover under a QD8 write load: POST /demote to the primary (it drains its writes),
 * then POST /promote to the secondary. Connected, the promote is two-phase (the peer persists the
 * new epoch and confirms before the first write is served), so this times that round trip too.
 */
async function measureSwitchover(pair: BenchPair, from: NodeName, to: NodeName, spanBytes: number): Promise<SwitchoverRun> {
  await pair.waitInSync();
  const writer = backgroundWriter(pair.uri(from), spanBytes);
  await writer.started;
  await sleep(1000);
  const t0 = performance.now();
  const demoted = await pair.post(from, 'demote');
  const tDemoted = performance.now();
  if (demoted.status !== 200) throw new Error(`POST ${from}/demote: HTTP ${demoted.status} ${demoted.text}`);
  await writer.stop();
  const t1 = performance.now();
  const { postedAt: tPromoted, firstWriteAt: tWrite } = await promoteAndWrite(pair, to);
  return { from, to, demoteMs: tDemoted - t0, promoteMs: tPromoted - t1, promoteToFirstWriteMs: tWrite - t1 };
}

async function main(): Promise<void> {
  const opts = parseOptions();
  ensureTools(['nbdcopy', 'nbdkit']);
  const command = `npm run bench:resync -- ${process.argv.slice(2).join(' ')}`.trim();
  const loadBefore = opts.maxLoad === null ? loadAverage() : await waitForLowLoad(opts.maxLoad, opts.maxWaitSec);
  const dir = opts.dir ?? makeTempDir('twinblock-bench-resync-');
  const base = path.join(dir, `bench-resync-${process.pid}`);
  const paths = pairPaths(base, 'pair');
  await run('mkdir', ['-p', paths.dir]);
  console.error(`writing a ${opts.sizeBytes / MiB} MiB random file and its copy under ${base} ...`);
  writeDataFile(paths.stores.a, opts.sizeBytes);
  copyFile(paths.stores.a, paths.stores.b);
  syncFs();

  const pair = await BenchPair.start({
    dir: paths.dir, stores: paths.stores, size: `${opts.sizeBytes / MiB}MiB`, cache: opts.cache, flush: 'memory', syncRate: opts.syncRate,
  });
  const resyncRuns: ResyncRun[] = [];
  const promoteRuns: PromoteRun[] = [];
  const switchoverRuns: SwitchoverRun[] = [];
  const copies = new Map<number, CopyRun[]>();
  let initialSyncMs = 0;
  let loadAfterResync = '';
  try {
    initialSyncMs = await pair.waitInSync(300_000);
    console.error(`initial full sync: both in-sync ${initialSyncMs} ms after start`);
    for (const percent of opts.percents) {
      for (let i = 0; i < opts.runs; i++) {
        const r = await measureResync(pair, percent, opts);
        resyncRuns.push(r);
        console.error(`resync ${percent}% run ${i + 1}/${opts.runs}: ${r.tracks} tracks written in ${r.writeMs.toFixed(0)} ms, out-of-sync ${r.outOfSyncTracks}; `
          + `resync ${r.resyncMs} ms (log), ${r.loggedBytes} bytes (log), ${r.counterBytes} bytes (counter)${r.full ? ' FULL' : ''}; `
          + `restart → in-sync ${r.restartToInSyncMs} ms (b serving ${r.servingMs}, link up ${r.linkUpMs}, resync start ${r.resyncStartMs}; `
          + `resync start → in-sync ${r.resyncToInSyncMs} ms) (load ${loadAverage()})`);
      }
    }
    loadAfterResync = loadAverage();
    for (let i = 0; i < opts.promoteRuns; i++) {
      // Roles alternate: the first kill hits a, the next hits b (primary since the first promote).
      const [from, to]: [NodeName, NodeName] = i % 2 === 0 ? ['a', 'b'] : ['b', 'a'];
      const r = await measurePromote(pair, from, to, opts.sizeBytes);
      promoteRuns.push(r);
      console.error(`promote run ${i + 1}/${opts.promoteRuns} (${from} killed, ${to} promoted): noticed ${r.noticedMs.toFixed(0)} ms after kill; `
        + `POST ${r.postMs.toFixed(1)} ms; promote → first write ${r.promoteToFirstWriteMs.toFixed(1)} ms (load ${loadAverage()})`);
    }
    for (let i = 0; i < opts.switchoverRuns; i++) {
      const primary: NodeName = (await pair.status('a')).role === 'primary' ? 'a' : 'b';
      const [from, to]: [NodeName, NodeName] = primary === 'a' ? ['a', 'b'] : ['b', 'a'];
      const r = await measureSwitchover(pair, from, to, opts.sizeBytes);
      switchoverRuns.push(r);
      console.error(`switchover ${i + 1}/${opts.switchoverRuns} (${from} → ${to}): demote ${r.demoteMs.toFixed(1)} ms; `
        + `promote ${r.promoteMs.toFixed(1)} ms; promote → first write ${r.promoteToFirstWriteMs.toFixed(1)} ms (load ${loadAverage()})`);
    }
  } finally {
    await pair.stop();
  }
  if (opts.nbdcopy) {
    const trackCount = opts.sizeBytes / TRACK_BYTES;
    for (const percent of opts.percents) {
      const bytes = Math.max(1, Math.round((trackCount * percent) / 100)) * TRACK_BYTES;
      copies.set(percent, await measureNbdcopy(base, bytes, opts.runs));
    }
  }
  const loadAfter = loadAverage();

  const md: string[] = [];
  const rate = (bytes: number, ms: number): string => `${fmtNumber(bytes / MiB / (ms / 1000))} MiB/s`;
  md.push(`| dirty share (of ${opts.sizeBytes / MiB} MiB, ${opts.sizeBytes / TRACK_BYTES} tracks) | tracks written / out-of-sync | resync bytes sent (counter; log) | resync: primary's log (start → last chunk sent) | resync: start → both in-sync | restart → b serving / link up / resync start / both in-sync | nbdcopy of the same bytes (nbdkit → nbdkit) | resync vs nbdcopy |`,
    '| --- | --- | --- | --- | --- | --- | --- | --- |');
  for (const percent of opts.percents) {
    const rs = resyncRuns.filter((r) => r.percent === percent);
    const bytes = median(rs.map((r) => r.counterBytes));
    const resyncMs = median(rs.map((r) => r.resyncMs));
    const restartMs = median(rs.map((r) => r.restartToInSyncMs));
    const syncedMs = median(rs.map((r) => r.resyncToInSyncMs));
    const m = (f: (r: ResyncRun) => number): string => fmtNumber(median(rs.map(f)));
    const copy = copies.get(percent) ?? [];
    const copyMs = median(copy.map((c) => c.ms));
    const expected = rs[0]!.tracks * TRACK_BYTES;
    md.push(`| ${percent}% | ${rs[0]!.tracks} / ${rs.map((r) => r.outOfSyncTracks).join(', ')} `
      + `| ${fmtNumber(bytes / MiB, 2)} MiB (${(bytes / expected).toFixed(3)}× tracks × 64 KiB); ${fmtNumber(median(rs.map((r) => r.loggedBytes)) / MiB, 2)} MiB${rs.some((r) => r.full) ? ' **full**' : ''} `
      + `| ${fmtNumber(resyncMs)} ms (${rate(bytes, resyncMs)}) `
      + `| ${fmtNumber(syncedMs)} ms (${rate(bytes, syncedMs)}) `
      + `| ${m((r) => r.servingMs)} / ${m((r) => r.linkUpMs)} / ${m((r) => r.resyncStartMs)} / ${fmtNumber(restartMs)} ms `
      + `| ${copy.length === 0 ? 'not run' : `${fmtNumber(copyMs)} ms (${rate(copy[0]!.bytes, copyMs)})`} `
      + `| ${copy.length === 0 ? '' : `${(syncedMs / copyMs).toFixed(2)}× the time`} |`);
  }
  md.push('');
  if (promoteRuns.length > 0) {
    md.push('| failover (kill -9 of the primary under a QD8 4 KiB write load) | median | all runs |', '| --- | --- | --- |');
    const row = (label: string, vals: number[], digits = 1): void => {
      md.push(`| ${label} | ${fmtNumber(median(vals), digits)} ms | ${vals.map((v) => fmtNumber(v, digits)).join(', ')} |`);
    };
    row('kill -9 → the secondary reports its peer gone (/status polled every 5 ms)', promoteRuns.map((r) => r.noticedMs), 0);
    row('POST /promote round trip', promoteRuns.map((r) => r.postMs));
    row('**POST /promote sent → first 4 KiB write acknowledged by the new primary** (includes NBD connect + handshake)', promoteRuns.map((r) => r.promoteToFirstWriteMs));
    row('kill -9 → first write acknowledged (no monitor delay beyond the 5 ms poll)', promoteRuns.map((r) => r.killToFirstWriteMs), 0);
    md.push('');
  }
  if (switchoverRuns.length > 0) {
    md.push('| planned switchover (connected, under a QD8 4 KiB write load) | median | all runs |', '| --- | --- | --- |');
    const row = (label: string, vals: number[]): void => {
      md.push(`| ${label} | ${fmtNumber(median(vals), 1)} ms | ${vals.map((v) => fmtNumber(v, 1)).join(', ')} |`);
    };
    row('POST /demote round trip (drains in-flight writes)', switchoverRuns.map((r) => r.demoteMs));
    row('POST /promote round trip (two-phase: the peer persists the epoch and confirms)', switchoverRuns.map((r) => r.promoteMs));
    row('**POST /promote sent → first 4 KiB write acknowledged by the new primary** (includes NBD connect + handshake)', switchoverRuns.map((r) => r.promoteToFirstWriteMs));
    md.push('');
  }
  md.push(`Medians of ${opts.runs} runs per dirty share (the "out-of-sync" column lists every run), ${opts.promoteRuns} failovers (roles alternating), ${opts.switchoverRuns} switchovers.`,
    `Volume ${opts.sizeBytes / MiB} MiB, trackSize 64 KiB, cache ${opts.cache} per node, **syncRate ${opts.syncRate}** (default 200MiB:`,
    `raised so the limiter does not set the pace), heartbeatTimeoutMs default (1000). Secondary stopped with ${opts.crash ? 'kill -9' : 'SIGTERM (clean)'};`,
    `dirty tracks written as whole 64 KiB writes, ${opts.depth} in flight, spread evenly (track ⌊k·${opts.sizeBytes / TRACK_BYTES}/N⌋).`, '',
    `- date: ${new Date().toISOString()} (commit ${commitDescription()})`,
    ...Object.entries(machine([['nbdcopy', ['--version']], ['nbdkit', ['--version']]])).map(([k, v]) => `- ${k}: ${v}`),
    `- load average (1/5/15 min) before: ${loadBefore}; after the resync runs: ${loadAfterResync}; at the end: ${loadAfter}`,
    `- initial full sync of the new pair: ${initialSyncMs} ms from start to both in-sync`,
    `- command: \`${command}\``,
    '- nbdcopy per run: `nbdcopy nbd://127.0.0.1:P1/ nbd://127.0.0.1:P2/` between two `nbdkit file` exports of exactly the resync\'s byte count, '
      + 'both files written with random data beforehand (nothing sparse or zero to skip), nbdcopy\'s defaults (on this 2-core machine its --verbose says connections=2 requests=64 threads=2; no flush at the end)');
  const markdown = md.join('\n');
  console.log(markdown);
  if (opts.markdownPath !== null) writeFileSync(opts.markdownPath, `${markdown}\n`);
  if (opts.dir !== null) await run('rm', ['-rf', base]);
  await cleanupAll();
}

main().catch(async (err: unknown) => {
  console.error(failureLine('bench:resync', err));
  await cleanupAll();
  process.exit(1);
});
