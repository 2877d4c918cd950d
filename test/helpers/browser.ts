// A real browser for the dashboard's tests (issue 15): Debian's chromium (installed when missing,
// like every other tool our tests drive), driven by playwright-core, which downloads no browser of
// its own. Also a watch on everything the page reports as failed: console errors, uncaught
// exceptions, requests that failed and responses of 400 and above (a missing favicon counts).
import { execFileSync } from 'node:child_process';
import { chromium, type Browser, type Page } from 'playwright-core';
import { ensureTools } from './tools.js';

export async function launchChromium(): Promise<Browser> {
  ensureTools(['chromium']);
  const executablePath = execFileSync('sh', ['-c', 'command -v chromium'], { encoding: 'utf8' }).trim();
  return chromium.launch({ executablePath });
}

/** One thing the page reported as failed. */
export interface PageProblem {
  kind: 'console' | 'pageerror' | 'requestfailed' | 'response';
  text: string;
  url: string;
  status?: number;
}

/** Collects every problem the page reports from now on. */
export function watchProblems(page: Page): PageProblem[] {
  const problems: PageProblem[] = [];
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push({ kind: 'console', text: m.text(), url: m.location().url });
  });
  page.on('pageerror', (e) => problems.push({ kind: 'pageerror', text: e.stack ?? e.message, url: page.url() }));
  page.on('requestfailed', (r) => {
    // A stream the page itself closes (navigation, viewport change does not) is no failure.
    if (r.failure()?.errorText === 'net::ERR_ABORTED' && r.url().endsWith('/dashboard/events')) return;
    problems.push({ kind: 'requestfailed', text: r.failure()?.errorText ?? '?', url: r.url() });
  });
  page.on('response', (r) => {
    if (r.status() >= 400) problems.push({ kind: 'response', text: `${r.request().method()} ${r.status()}`, url: r.url(), status: r.status() });
  });
  return problems;
}
