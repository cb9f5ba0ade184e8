#!/usr/bin/env node
// Drift check: the routes of api/openapi.yaml against the route table in
// src/api/routes.c (read as text, not compiled), so that neither can change
// without the other.
//
// For every route of the C table {"pattern", {[M_GET] = api_x, ...}, body_json, cacheable}:
//   - the spec has exactly that path, with exactly those methods (and no path
//     or method the table lacks);
//   - each operation's operationId is the handler's name without "api_";
//   - the path's x-allow is the Allow header marketd sends on 405
//     (src/http/router.c: GET implies HEAD; order GET, POST, PATCH, DELETE);
//   - a cacheable route's GET documents If-None-Match, 304, and ETag, X-Cache
//     and Cache-Control on its 200, and a GET of a non-cacheable route
//     documents none of them;
//   - on a body_json route every POST/PATCH/DELETE documents 413;
//   - every operation with bearerAuth documents 401.
//
// Usage: node drift_check.mjs [--spec api/openapi.yaml] [--routes src/api/routes.c]
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
const routesPath = resolve(arg('--routes', resolve(root, 'src/api/routes.c')));

// ---- the C table ------------------------------------------------------------

function stripComments(c) {
  // Strings in the table hold no comment markers; keep string contents intact anyway.
  let out = '';
  for (let i = 0; i < c.length; ) {
    if (c[i] === '"') {
      let j = i + 1;
      while (j < c.length && c[j] !== '"') j += c[j] === '\\' ? 2 : 1;
      out += c.slice(i, j + 1);
      i = j + 1;
    } else if (c.startsWith('/*', i)) {
      const j = c.indexOf('*/', i + 2);
      if (j < 0) throw new Error('unterminated comment');
      i = j + 2;
      out += ' ';
    } else if (c.startsWith('//', i)) {
      const j = c.indexOf('\n', i);
      i = j < 0 ? c.length : j;
    } else {
      out += c[i++];
    }
  }
  return out;
}

// The top-level {...} groups of a brace-enclosed initializer body.
function topLevelGroups(body) {
  const groups = [];
  let depth = 0;
  let start = -1;
  for (let i = 0; i < body.length; i++) {
    const ch = body[i];
    if (ch === '"') {
      i++;
      while (i < body.length && body[i] !== '"') i += body[i] === '\\' ? 2 : 1;
      continue;
    }
    if (ch === '{') {
      if (depth === 0) start = i;
      depth++;
    } else if (ch === '}') {
      depth--;
      if (depth === 0) groups.push(body.slice(start + 1, i));
      if (depth < 0) throw new Error('unbalanced braces in the route table');
    }
  }
  if (depth !== 0) throw new Error('unbalanced braces in the route table');
  return groups;
}

function parseRoutes(text) {
  const c = stripComments(text);
  const m = /\broute_t\s+api_routes\s*\[\s*\]\s*=\s*\{/.exec(c);
  if (!m) throw new Error('no "route_t api_routes[] = {" in ' + routesPath);
  // The body runs to the matching close brace.
  let depth = 1;
  let i = m.index + m[0].length;
  const start = i;
  for (; i < c.length && depth > 0; i++) {
    if (c[i] === '"') {
      i++;
      while (i < c.length && c[i] !== '"') i += c[i] === '\\' ? 2 : 1;
    } else if (c[i] === '{') depth++;
    else if (c[i] === '}') depth--;
  }
  const body = c.slice(start, i - 1);
  const routes = [];
  for (const g of topLevelGroups(body)) {
    const pm = /^\s*"([^"]+)"\s*,/.exec(g);
    if (!pm) throw new Error('route entry without a pattern: {' + g.trim() + '}');
    const inner = topLevelGroups(g);
    if (inner.length !== 1) throw new Error(`route ${pm[1]}: expected one handler group, found ${inner.length}`);
    const handlers = {};
    const hre = /\[\s*M_([A-Z]+)\s*\]\s*=\s*([A-Za-z_]\w*)/g;
    let hm;
    while ((hm = hre.exec(inner[0])) !== null) handlers[hm[1].toLowerCase()] = hm[2];
    const rest = g.slice(g.lastIndexOf('}') + 1).split(',').map((s) => s.trim()).filter(Boolean);
    const flags = rest.map((s) => {
      if (!/^\d+$/.test(s)) throw new Error(`route ${pm[1]}: flag "${s}" is not a literal 0/1`);
      return Number(s);
    });
    routes.push({ pattern: pm[1], handlers, bodyJson: flags[0] === 1, cacheable: flags[1] === 1 });
  }
  return routes;
}

// ---- checks --------------------------------------------------------------------

const METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'];
const ALLOW_ORDER = ['get', 'post', 'patch', 'delete']; // enum order in src/http/router.h
const findings = [];
const fail = (msg) => findings.push(msg);

let routes;
let spec;
try {
  routes = parseRoutes(readFileSync(routesPath, 'utf8'));
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
  if (seen.has(r.pattern)) fail(`routes.c: ${r.pattern} appears twice`);
  seen.add(r.pattern);
  const item = paths[r.pattern];
  if (!item) {
    fail(`missing in openapi: ${r.pattern} (routes.c serves ${Object.keys(r.handlers).map((m) => m.toUpperCase()).join(', ')})`);
    continue;
  }
  const cMethods = Object.keys(r.handlers);
  const sMethods = METHODS.filter((m) => item[m]);
  for (const m of cMethods) if (!item[m]) fail(`missing in openapi: ${m.toUpperCase()} ${r.pattern} (${r.handlers[m]})`);
  for (const m of sMethods) if (!r.handlers[m]) fail(`not served by marketd: ${m.toUpperCase()} ${r.pattern} is in openapi, not in routes.c`);

  const allow = ALLOW_ORDER.filter((m) => r.handlers[m]).map((m) => (m === 'get' ? 'GET, HEAD' : m.toUpperCase())).join(', ');
  if (item['x-allow'] !== allow) fail(`${r.pattern}: x-allow is "${item['x-allow'] ?? ''}", marketd's Allow is "${allow}"`);

  for (const m of cMethods) {
    const op = item[m];
    if (!op) continue;
    nOps++;
    const where = `${m.toUpperCase()} ${r.pattern}`;
    const wantId = r.handlers[m].replace(/^api_/, '');
    if (op.operationId !== wantId) fail(`${where}: operationId "${op.operationId}", handler is ${r.handlers[m]} (want "${wantId}")`);
    const responses = op.responses ?? {};
    if (m === 'get') {
      const has304 = '304' in responses;
      const h200 = headerNames(responses['200']);
      const inm = paramNames(item, op).includes('header:if-none-match');
      if (r.cacheable) {
        if (!has304) fail(`${where}: cacheable in routes.c, but no 304 response`);
        for (const h of ['etag', 'x-cache', 'cache-control'])
          if (!h200.includes(h)) fail(`${where}: cacheable in routes.c, but its 200 lacks ${h}`);
        if (!inm) fail(`${where}: cacheable in routes.c, but no If-None-Match parameter`);
      } else if (has304 || h200.includes('etag') || h200.includes('x-cache') || h200.includes('cache-control') || inm) {
        fail(`${where}: not cacheable in routes.c, but documents 304/ETag/X-Cache/Cache-Control/If-None-Match`);
      }
    }
    if (r.bodyJson && m !== 'get' && !('413' in responses)) fail(`${where}: a JSON-body route (1 MiB limit), but no 413 response`);
    const bearer = (op.security ?? spec.security ?? []).some((s) => s && 'bearerAuth' in s);
    if (bearer && !('401' in responses)) fail(`${where}: needs bearerAuth, but no 401 response`);
  }
}
for (const p of Object.keys(paths)) if (!seen.has(p)) fail(`not served by marketd: ${p} is in openapi, not in routes.c`);

for (const f of findings) console.log(`drift: ${f}`);
const nSpecOps = Object.values(paths).reduce((n, it) => n + METHODS.filter((m) => it && it[m]).length, 0);
if (findings.length) {
  console.log(`drift: FAIL — ${findings.length} finding(s); routes.c ${routes.length} routes / ${nOps} matched operations, openapi ${Object.keys(paths).length} paths / ${nSpecOps} operations`);
  process.exit(1);
}
console.log(`drift: OK — ${routes.length} routes, ${nOps} operations agree (routes.c ↔ openapi.yaml)`);
