// `npm run sim:arbiter -- [--seeds N] [--from S] [--mutant NAME] [--verbose]`: runs the arbiter's
// simulator (sim/arbiter.ts) over seeds; with --mutant, reports the first seed that catches it.
import { parseArgs } from 'node:util';
import { arbiterMutants, ArbiterSim, type ArbiterMutant } from './arbiter.js';

const { values } = parseArgs({ options: { seeds: { type: 'string' }, from: { type: 'string' }, mutant: { type: 'string' }, verbose: { type: 'boolean' } } });
const seeds = Number(values.seeds ?? 200);
const from = Number(values.from ?? 1);
const mutant = (values.mutant ?? null) as ArbiterMutant | null;
if (mutant !== null && !arbiterMutants.includes(mutant)) {
  console.error(`sim:arbiter: unknown mutant ${mutant} (mutants: ${arbiterMutants.join(', ')})`);
  process.exit(2);
}
let failed = 0;
let acks = 0;
let promotions = 0;
for (let seed = from; seed < from + seeds; seed++) {
  const r = new ArbiterSim(seed, mutant).run();
  acks += r.acks;
  promotions += r.promotions;
  if (r.ok) continue;
  failed++;
  console.log(`seed ${seed}: ${r.failure}`);
  if (values.verbose === true) console.log(r.trace.join('\n'));
  if (mutant !== null) break;
}
console.log(`${seeds} seeds from ${from}${mutant === null ? '' : ` (mutant ${mutant})`}: ${failed} failed; ${acks} writes acknowledged, ${promotions} automatic promotions`);
process.exit(mutant === null ? (failed > 0 ? 1 : 0) : failed > 0 ? 0 : 1);
