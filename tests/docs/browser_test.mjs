#!/usr/bin/env node
// Opens the interactive docs in Debian's headless Chromium (playwright-core,
// no browser download) and checks what a person would see:
//   - /docs redirects to /docs/ and Swagger UI renders the API title;
//   - one operation block per operation of api/openapi.yaml (method + path),
//     at least as many as the spec has paths, e.g. GET /api/v1/products,
//     POST /api/v1/orders, GET /healthz;
//   - no Swagger UI error box (unresolved $ref, parse error), no uncaught
//     page error, no Content-Security-Policy violation;
//   - the page made no request to a host outside the loopback range (such
//     requests are also aborted, so nothing leaves the machine).
//
// Usage: node browser_test.mjs --url http://127.0.0.1:18090/docs
//          [--spec api/openapi.yaml] [--chromium /usr/bin/chromium]
//          [--screenshot out.png] [--timeout-ms 60000]
// Prints one line per check; exits 1 on any failure.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isIP } from 'node:net';
import { chromium } from 'playwright-core';
import { parse as parseYaml } from 'yaml';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '..', '..');
function arg(name, def) {
  const i = process.argv.indexOf(name);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : def;
}
const url = arg('--url');
const specPath = resolve(arg('--spec', join(root, 'api/openapi.yaml')));
const executablePath = arg('--chromium', '/usr/bin/chromium');
const screenshot = arg('--screenshot');
const timeout = Number(arg('--timeout-ms', '60000'));
if (!url) {
  console.error('usage: browser_test.mjs --url http://127.0.0.1:PORT/docs [--spec FILE]');
  process.exit(2);
}

const METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'];
const spec = parseYaml(readFileSync(specPath, 'utf8'));
const specOps = [];
for (const [p, item] of Object.entries(spec.paths ?? {}))
  for (const m of METHODS) if (item && item[m]) specOps.push(`${m.toUpperCase()} ${p}`);
const nPaths = Object.keys(spec.paths ?? {}).length;

// Loopback only: 127.0.0.0/8, ::1, localhost. data:, blob: and about: stay in the page.
function isLocal(u) {
  let x;
  try {
    x = new URL(u);
  } catch {
    return false;
  }
  if (['data:', 'blob:', 'about:'].includes(x.protocol)) return true;
  const h = x.hostname.replace(/^\[|\]$/g, '').toLowerCase();
  if (h === 'localhost' || h.endsWith('.localhost')) return true;
  if (isIP(h) === 4) return h.split('.')[0] === '127';
  if (isIP(h) === 6) return h === '::1' || h === '0:0:0:0:0:0:0:1';
  return false;
}

const results = [];
const check = (name, ok, detail = '') => {
  results.push(ok);
  console.log(`browser: ${ok ? 'PASS' : 'FAIL'} ${name}${detail ? ' — ' + detail : ''}`);
};

const profile = mkdtempSync(join(tmpdir(), 'marketd-docs-chromium-'));
const outside = new Set();
const pageErrors = [];
const cspErrors = [];
const consoleErrors = [];
const failedLocal = [];
let context;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    timeout,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--disable-dev-shm-usage',
    ],
    viewport: { width: 1280, height: 900 },
    serviceWorkers: 'block',
  });
  context.setDefaultTimeout(timeout);
  // Every request of every page: record and abort what would leave the machine.
  await context.route('**/*', (route) => {
    const u = route.request().url();
    if (isLocal(u)) return route.continue();
    outside.add(u);
    return route.abort('blockedbyclient');
  });
  context.on('request', (req) => {
    if (!isLocal(req.url())) outside.add(req.url());
  });
  context.on('requestfailed', (req) => {
    if (isLocal(req.url())) failedLocal.push(`${req.url()} (${req.failure()?.errorText})`);
  });
  const page = context.pages()[0] ?? (await context.newPage());
  page.on('websocket', (ws) => {
    if (!isLocal(ws.url())) outside.add(ws.url());
  });
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  page.on('console', (msg) => {
    if (msg.type() !== 'error') return;
    const t = msg.text();
    if (/Content Security Policy/i.test(t)) cspErrors.push(t);
    else consoleErrors.push(t);
  });

  const resp = await page.goto(url, { waitUntil: 'load' });
  check('page loads', resp !== null && resp.ok(), `HTTP ${resp?.status()} ${page.url()}`);
  if (/\/docs$/.test(new URL(url).pathname))
    check('/docs redirects to /docs/', new URL(page.url()).pathname === '/docs/', page.url());

  await page.waitForSelector('.swagger-ui .info .title', { timeout });
  const title = (await page.textContent('.swagger-ui .info .title')) ?? '';
  check('API title rendered', title.includes(spec.info.title), JSON.stringify(title.trim()));

  // Wait until every operation block is in the DOM (or the timeout).
  await page
    .waitForFunction((n) => document.querySelectorAll('.swagger-ui .opblock').length >= n, specOps.length, { timeout })
    .catch(() => {});
  const rendered = await page.$$eval('.swagger-ui .opblock', (els) =>
    els.map((el) => {
      const m = el.querySelector('.opblock-summary-method')?.textContent?.trim() ?? '';
      const pathEl = el.querySelector('.opblock-summary-path');
      const p = pathEl?.getAttribute('data-path') ?? pathEl?.textContent?.replace(/\u200b/g, '').trim() ?? '';
      return `${m.toUpperCase()} ${p}`;
    }),
  );
  const renderedSet = new Set(rendered);
  const missing = specOps.filter((o) => !renderedSet.has(o));
  const extra = rendered.filter((o) => !specOps.includes(o));
  check(
    `operation blocks rendered (${rendered.length}, spec has ${specOps.length} operations on ${nPaths} paths)`,
    rendered.length >= nPaths && missing.length === 0 && extra.length === 0,
    [missing.length ? 'missing: ' + missing.join('; ') : '', extra.length ? 'unexpected: ' + extra.join('; ') : '']
      .filter(Boolean)
      .join(' | '),
  );
  for (const want of ['GET /api/v1/products', 'POST /api/v1/orders', 'GET /healthz'])
    check(`${want} listed`, renderedSet.has(want));

  const errorBox = await page.$$eval('.swagger-ui .errors-wrapper, .swagger-ui .loading-container .info', (els) =>
    els.map((e) => e.textContent?.trim()).filter(Boolean),
  );
  check('no Swagger UI error box', errorBox.length === 0, errorBox.join(' | ').slice(0, 300));

  // Open one operation: its parameters and responses must render too.
  const op = page.locator('.opblock', { has: page.locator('.opblock-summary-path[data-path="/api/v1/products"]') }).filter({
    has: page.locator('.opblock-summary-method', { hasText: 'GET' }),
  });
  await op.locator('.opblock-summary-control, .opblock-summary').first().click();
  await page.waitForSelector('.opblock.is-open .responses-table', { timeout });
  const codes = await page.$$eval('.opblock.is-open .responses-table .response-col_status', (els) =>
    els.map((e) => e.textContent.trim().split(/\s/)[0]),
  );
  const wantCodes = Object.keys(spec.paths['/api/v1/products'].get.responses);
  check(
    'GET /api/v1/products expands with its responses',
    wantCodes.every((c) => codes.includes(c)),
    `rendered ${codes.join(',')}`,
  );

  if (screenshot) await page.screenshot({ path: screenshot, fullPage: false });
  // Late requests (fonts, images) must have happened before the checks:
  // wait for the network to be idle (no request for 500 ms), a state.
  await page.waitForLoadState('networkidle', { timeout });

  check('no uncaught page errors', pageErrors.length === 0, pageErrors.join(' | ').slice(0, 500));
  check('no Content-Security-Policy violations', cspErrors.length === 0, cspErrors.join(' | ').slice(0, 500));
  check('no failed requests to the docs host', failedLocal.length === 0, failedLocal.join(' | ').slice(0, 500));
  check('no request to a non-loopback host', outside.size === 0, [...outside].join(' ').slice(0, 500));
  if (consoleErrors.length) console.log(`browser: note: console errors: ${consoleErrors.join(' | ').slice(0, 500)}`);
} catch (e) {
  check('browser run', false, String(e?.message ?? e).split('\n')[0]);
} finally {
  await context?.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
}

const failed = results.filter((r) => !r).length;
console.log(`browser: ${results.length - failed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
