// The simulator's command line.
//   npm run sim -- --seed S [--verbose]          replay one seed exactly (the trace with --verbose)
//   npm run sim -- --seeds N [--from S]          run seeds S .. S+N-1 (default from 0)
// Options: --mutant NAME (sim/mutants.ts); --assume-fix NAME, --assume-known-fixes (sim/fixes.ts:
// look past bugs already reported); --tracker T, --flush P, --no-faults, --power-loss (every
// seed; by default half of them), --no-power-loss, --no-storage-faults (store, fsync, metadata, stall);
// --nodes N (a volume of N nodes, 3 to 5: issue 12), --quorum off|majority, --ack all|quorum;
// --keep-going (do not stop at the first failing seed); --json (the last line is one JSON object:
// seeds, failed, and the faults injected by kind); --list-mutants (one mutant name per line).
// Exits non-zero when a seed fails.
// A failing seed prints the command that replays it, the options it drew, and the trace's tail.
import type { TrackerKind } from '../src/core/notifier.js';
import type { FlushPolicy } from '../src/core/replica-types.js';
import { addCounts, faultCounts, hooksFor } from './batch.js';
import { runSeed, type RunHooks, type RunResult } from './cluster.js';
import { assumedFixes, isAssumedFix, KNOWN_FIXES, shellFixes, type AssumedFix } from './fixes.js';
import { isMutant, mutants, type MutantName } from './mutants.js';

interface Args {
  seed: number | null;
  seeds: number;
  from: number;
  verbose: boolean;
  keepGoing: boolean;
  json: boolean;
  listMutants: boolean;
  mutant: string | null;
  fixes: AssumedFix[];
  hooks: RunHooks;
}

function parseArgs(argv: string[]): Args {
  const args: Args = { seed: null, seeds: 1, from: 0, verbose: false, keepGoing: false, json: false, listMutants: false, mutant: null, fixes: [], hooks: { overrides: {} } };
  const overrides = args.hooks.overrides!;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    switch (a) {
      case '--seed': args.seed = parseSeed(value()); break;
      case '--seeds': args.seeds = parseSeed(value()); break;
      case '--from': args.from = parseSeed(value()); break;
      case '--verbose': case '-v': args.verbose = true; break;
      case '--keep-going': args.keepGoing = true; break;
      case '--json': args.json = true; break;
      case '--list-mutants': args.listMutants = true; break;
      case '--mutant': args.mutant = value(); break;
      case '--assume-known-fixes': args.fixes.push(...KNOWN_FIXES.filter((f) => !args.fixes.includes(f))); break;
      case '--assume-fix': {
        const name = value();
        if (!isAssumedFix(name)) throw new Error(`unknown fix ${name}; known: ${[...Object.keys(assumedFixes), ...shellFixes].join(', ')}`);
        args.fixes.push(name);
        break;
      }
      case '--tracker': overrides.tracker = value() as TrackerKind; break;
      case '--flush': overrides.flush = value() as FlushPolicy; break;
      case '--no-faults': overrides.faults = false; break;
      case '--power-loss': overrides.powerLoss = true; break;
      case '--no-power-loss': overrides.powerLoss = false; break;
      case '--no-storage-faults': overrides.storageFaults = false; break;
      case '--quorum': overrides.quorum = value() as 'off' | 'majority'; break;
      case '--ack': overrides.ack = value() as 'all' | 'quorum'; break;
      case '--nodes': overrides.nodes = parseSeed(value()); break;
      default: throw new Error(`unknown argument ${a} (see sim/main.ts)`);
    }
  }
  if (args.mutant !== null && !isMutant(args.mutant)) throw new Error(`unknown mutant ${args.mutant}; known: ${Object.keys(mutants).join(', ')}`);
  args.hooks = { ...args.hooks, ...hooksFor(args.fixes, args.mutant === null ? undefined : args.mutant as MutantName) };
  if (args.fixes.length > 0) console.log(`NOTE: assuming fixes not in the core yet: ${args.fixes.join(', ')}`);
  return args;
}

function parseSeed(text: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw new Error(`not a seed (0 .. 2^32-1): ${text}`);
  return n;
}

/** The exact command that replays a seed with the same options. */
function replayCommand(seed: number, argv: string[]): string {
  const keep: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--seed' || a === '--seeds' || a === '--from') { i++; continue; }
    if (a === '--keep-going' || a === '--verbose' || a === '-v') continue;
    keep.push(a);
  }
  return `npm run sim -- --seed ${seed}${keep.length ? ' ' + keep.join(' ') : ''} --verbose`;
}

function report(result: RunResult, argv: string[]): void {
  console.log(`seed ${result.seed} FAILED after ${result.steps} steps (${result.simMs} ms simulated)`);
  console.log(`  ${result.failure}`);
  console.log(`  options: ${result.options}`);
  console.log('  trace tail:');
  for (const line of result.tail.slice(-30)) console.log(`    ${line}`);
  console.log(`  replay: ${replayCommand(result.seed, argv)}`);
}

async function main(argv: string[]): Promise<number> {
  const args = parseArgs(argv);
  if (args.listMutants) {
    for (const name of Object.keys(mutants)) console.log(name);
    return 0;
  }
  if (args.seed !== null) {
    const hooks: RunHooks = args.verbose ? { ...args.hooks, onTrace: (line) => console.log(line) } : args.hooks;
    const result = await runSeed(args.seed, hooks);
    if (!result.ok) {
      report(result, argv);
      return 1;
    }
    console.log(`seed ${result.seed} ok: ${result.steps} steps, ${result.simMs} ms simulated, trace ${result.traceHash.toString(16)} ${JSON.stringify(result.stats)}`);
    return 0;
  }
  const started = process.hrtime.bigint();
  let failed = 0;
  let steps = 0;
  let seedsRun = 0;
  const faults: Record<string, number> = {};
  for (let i = 0; i < args.seeds; i++) {
    const seed = (args.from + i) >>> 0;
    const result = await runSeed(seed, args.hooks);
    seedsRun++;
    steps += result.steps;
    addCounts(faults, faultCounts(result.stats));
    if (!result.ok) {
      failed++;
      report(result, argv);
      if (!args.keepGoing) break;
    }
  }
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const ran = failed > 0 && !args.keepGoing ? `stopped at the first failure after ${seedsRun} seeds` : `${seedsRun} seeds`;
  console.log(`${ran} from ${args.from}: ${failed} failed; ${seconds.toFixed(1)} s, ${(steps / seconds).toFixed(0)} steps/s, ${(seedsRun / seconds).toFixed(1)} seeds/s`);
  if (args.json) console.log(JSON.stringify({ seeds: seedsRun, failed, faults }));
  return failed > 0 ? 1 : 0;
}

process.exitCode = await main(process.argv.slice(2));
