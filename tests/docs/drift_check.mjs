#!/usr/bin/env node
// Drift check: the routes of api/openapi.yaml against marketd's route table
// as the binary prints it (`marketd routes`: one JSON object per (method,
// pattern) row with its declared policies), so that neither can change
// without the other.
//
// For every path of the table:
//   - the spec has exactly that path, with exactly its methods (and no path
//     or method the table lacks);
//   - each operation's operationId is the row's handler name;
//   - the path's x-allow is the Allow header marketd sends on 405
//     (src/http/router.c: GET implies HEAD; order GET, POST, PATCH, DELETE);
//   - a GET with a cache policy documents If-None-Match, 304, and ETag,
//     X-Cache and Cache-Control on its 200, and any other GET documents none
//     of them;
//   - every row with a body policy (json, image) documents 413;
//   - every row that needs a token (auth user/admin) has bearerAuth and
//     documents 401; an admin row documents 403.
//
// Usage: node drift_check.mjs [--spec api/openapi.yaml] --routes routes.json
// Prints one line per finding and a summary; exits 1 on any finding.
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '..', '..');

function arg(name, def) {
  const i = process.argv.indexOf(name);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : def;
}
const specPath = resolve(arg('--spec', resolve(root, 'api/openapi.yaml')));
const routesPath = resolve(arg('--routes', 'routes.json'));

// ---- the table ----------------------------------------------------------------

// Rows grouped by pattern: {pattern, handlers: {get: name, …}, rows: {get: row, …}}.
function groupRoutes(rows) {
  if (!Array.isArray(rows)) throw new Error('the route table is not a JSON array');
  const byPattern = new Map();
  for (const row of rows) {
    const m = String(row.method).toLowerCase();
    if (!byPattern.has(row.pattern)) byPattern.set(row.pattern, { pattern: row.pattern, handlers: {}, rows: {} });
    const g = byPattern.get(row.pattern);
    if (g.rows[m]) throw new Error(`${row.method} ${row.pattern} appears twice`);
    g.handlers[m] = row.handler;
    g.rows[m] = row;
  }
  return [...byPattern.values()];
}

// ---- checks --------------------------------------------------------------------

const METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'];
const ALLOW_ORDER = ['get', 'post', 'patch', 'delete']; // enum order in src/http/router.h
const findings = [];
const fail = (msg) => findings.push(msg);

let routes;
let spec;
try {
  routes = groupRoutes(JSON.parse(readFileSync(routesPath, 'utf8')));
  spec = parseYaml(readFileSync(specPath, 'utf8'));
} catch (e) {
  console.log(`drift: cannot read the inputs: ${e.message}`);
  process.exit(1);
}
if (routes.length === 0) fail(`${routesPath}: the route table is empty`);
const paths = spec?.paths ?? {};

function resolveRef(obj) {
  let o = obj;
  for (let n = 0; o && typeof o === 'object' && typeof o.$ref === 'string' && n < 10; n++) {
    const ref = o.$ref;
    if (!ref.startsWith('#/')) return o;
    o = ref
      .slice(2)
      .split('/')
      .reduce((acc, k) => (acc == null ? acc : acc[k.replace(/~1/g, '/').replace(/~0/g, '~')]), spec);
  }
  return o;
}
const headerNames = (resp) => Object.keys(resolveRef(resp)?.headers ?? {}).map((h) => h.toLowerCase());
const paramNames = (pathItem, op) =>
  [...(pathItem.parameters ?? []), ...(op.parameters ?? [])].map((p) => resolveRef(p)).map((p) => `${p.in}:${p.name}`.toLowerCase());

const seen = new Set();
let nOps = 0;
for (const r of routes) {
  seen.add(r.pattern);
  const item = paths[r.pattern];
  if (!item) {
    fail(`missing in openapi: ${r.pattern} (marketd serves ${Object.keys(r.handlers).map((m) => m.toUpperCase()).join(', ')})`);
    continue;
  }
  const cMethods = Object.keys(r.handlers);
  const sMethods = METHODS.filter((m) => item[m]);
  for (const m of cMethods) if (!item[m]) fail(`missing in openapi: ${m.toUpperCase()} ${r.pattern} (${r.handlers[m]})`);
  for (const m of sMethods) if (!r.handlers[m]) fail(`not served by marketd: ${m.toUpperCase()} ${r.pattern} is in openapi, not in the route table`);

  const allow = ALLOW_ORDER.filter((m) => r.handlers[m]).map((m) => (m === 'get' ? 'GET, HEAD' : m.toUpperCase())).join(', ');
  if (item['x-allow'] !== allow) fail(`${r.pattern}: x-allow is "${item['x-allow'] ?? ''}", marketd's Allow is "${allow}"`);

  for (const m of cMethods) {
    const op = item[m];
    if (!op) continue;
    nOps++;
    const where = `${m.toUpperCase()} ${r.pattern}`;
    const row = r.rows[m];
    const wantId = r.handlers[m];
    if (op.operationId !== wantId) fail(`${where}: operationId "${op.operationId}", handler is ${wantId}`);
    const responses = op.responses ?? {};
    if (m === 'get') {
      const has304 = '304' in responses;
      const h200 = headerNames(responses['200']);
      const inm = paramNames(item, op).includes('header:if-none-match');
      if (row.cacheable) {
        if (!has304) fail(`${where}: cacheable in the route table, but no 304 response`);
        for (const h of ['etag', 'x-cache', 'cache-control'])
          if (!h200.includes(h)) fail(`${where}: cacheable in the route table, but its 200 lacks ${h}`);
        if (!inm) fail(`${where}: cacheable in the route table, but no If-None-Match parameter`);
      } else if (has304 || h200.includes('etag') || h200.includes('x-cache') || h200.includes('cache-control') || inm) {
        fail(`${where}: not cacheable in the route table, but documents 304/ETag/X-Cache/Cache-Control/If-None-Match`);
      }
    }
    if (row.body !== 'none' && !('413' in responses)) fail(`${where}: a ${row.body} body of at most ${row.body_max} bytes, but no 413 response`);
    const bearer = (op.security ?? spec.security ?? []).some((s) => s && 'bearerAuth' in s);
    if (bearer && !('401' in responses)) fail(`${where}: needs bearerAuth, but no 401 response`);
    if (row.auth !== 'none' && !bearer) fail(`${where}: the route needs a token (auth ${row.auth}), but openapi has no bearerAuth`);
    if (row.auth === 'none' && bearer) fail(`${where}: openapi asks for bearerAuth, but the route takes no token`);
    if (row.auth === 'admin' && !('403' in responses)) fail(`${where}: an administrator's route, but no 403 response`);
  }
}
for (const p of Object.keys(paths)) if (!seen.has(p)) fail(`not served by marketd: ${p} is in openapi, not in the route table`);

for (const f of findings) console.log(`drift: ${f}`);
const nSpecOps = Object.values(paths).reduce((n, it) => n + METHODS.filter((m) => it && it[m]).length, 0);
if (findings.length) {
  console.log(`drift: FAIL — ${findings.length} finding(s); the table ${routes.length} paths / ${nOps} matched operations, openapi ${Object.keys(paths).length} paths / ${nSpecOps} operations`);
  process.exit(1);
}
console.log(`drift: OK — ${routes.length} routes, ${nOps} operations agree (route table ↔ openapi.yaml)`);
