// ESLint flat config. The rule that matters most: src/core is the pure core (DESIGN.md,
// "Architecture"): no I/O modules, no clocks, no timers, no randomness. Time and randomness are
// arguments, so the simulator can replay any run exactly.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

const ioModules = [
  'fs', 'fs/promises', 'net', 'http', 'https', 'dgram', 'child_process', 'timers', 'timers/promises',
  'worker_threads', 'os', 'cluster', 'tls', 'dns', 'readline', 'process',
];

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      'no-constant-condition': ['error', { checkLoops: false }],
    },
  },
  {
    files: ['src/core/**/*.ts', 'src/nbd/codec*.ts'],
    rules: {
      'no-restricted-imports': ['error', {
        paths: ioModules.flatMap((m) => [
          { name: m, message: 'src/core is pure: do I/O in the shell (src/node, src/store, src/nbd).' },
          { name: `node:${m}`, message: 'src/core is pure: do I/O in the shell (src/node, src/store, src/nbd).' },
        ]),
      }],
      'no-restricted-globals': ['error',
        { name: 'setTimeout', message: 'pure core: time is an argument' },
        { name: 'setInterval', message: 'pure core: time is an argument' },
        { name: 'setImmediate', message: 'pure core: time is an argument' },
        { name: 'process', message: 'pure core: no process access' },
      ],
      'no-restricted-properties': ['error',
        { object: 'Date', property: 'now', message: 'pure core: pass nowMs in' },
        { object: 'Math', property: 'random', message: 'pure core: pass randomness in' },
        { object: 'performance', property: 'now', message: 'pure core: pass nowMs in' },
      ],
    },
  },
);
