#!/usr/bin/env node
// Project-specific checks of the deployment artefacts: what the customer's
// document and requirements.md ask of them, beyond "the tool accepts it".
// Each subcommand prints its failures and exits 1 if there are any.
//
//   policy.cjs compose CONFIG.yml RAW.yml   output of `docker-compose config`, and the file itself
//   policy.cjs dockerfile Dockerfile
//   policy.cjs k8s RENDERED.yml [base|prod]
//   policy.cjs k8s-same A.yml B.yml      two renderings of one kustomization agree
//   policy.cjs dashboard DASH.json RULES_OUT.yml
//                                        structure; writes every panel query as a
//                                        recording rule for `promtool check rules`
//   policy.cjs metrics SRC_DIR FILE...   every marketd metric named in FILE exists in SRC_DIR
//   policy.cjs alerts ALERTS.yml         the document's alerts, thresholds and actions
"use strict";

const fs = require("fs");
const path = require("path");
const YAML = require("yaml");

const errors = [];
const fail = (msg) => errors.push(msg);
const expect = (cond, msg) => {
  if (!cond) fail(msg);
};

function loadAll(file) {
  return YAML.parseAllDocuments(fs.readFileSync(file, "utf8"))
    .map((d) => d.toJS())
    .filter((d) => d);
}

// --- docker-compose.prod.yml ----------------------------------------------------------

function compose(file, rawFile) {
  const cfg = YAML.parse(fs.readFileSync(file, "utf8"));
  const s = cfg.services || {};
  for (const name of ["nginx", "backend", "migrate", "pgbouncer", "postgres-primary", "postgres-replica", "redis"]) {
    expect(s[name], `service ${name} missing`);
  }
  if (errors.length) return;
  const be = s.backend;
  // S1: `up -d --scale backend=5` needs interchangeable replicas.
  expect(!be.container_name, "backend: container_name prevents --scale");
  expect(!be.ports, "backend: published ports prevent --scale (nginx is the only entry point)");
  expect(be.environment && String(be.environment.DB_PREPARE) === "0", "backend: DB_PREPARE must be 0 behind PgBouncer (S5)");
  expect(/pgbouncer:6432/.test(String(be.environment && be.environment.DATABASE_URL)), "backend: DATABASE_URL must go through pgbouncer:6432");
  const dep = be.depends_on || {};
  expect(dep.migrate && dep.migrate.condition === "service_completed_successfully",
    "backend: depends_on migrate with condition service_completed_successfully");
  const grace = String(be.stop_grace_period || "10s");
  const graceS = /^(\d+)s$/.test(grace) ? Number(grace.slice(0, -1)) : /^(\d+)m$/.test(grace) ? 60 * Number(grace.slice(0, -1)) : 0;
  const drainS = Number((be.environment && be.environment.SHUTDOWN_TIMEOUT_MS) || 10000) / 1000;
  expect(graceS > drainS, `backend: stop_grace_period ${grace} must exceed SHUTDOWN_TIMEOUT_MS (${drainS} s)`);
  expect(be.read_only === true, "backend: read_only root filesystem");
  expect((be.volumes || []).some((v) => /\/var\/lib\/marketd\/media/.test(typeof v === "string" ? v : v.target)),
    "backend: the shared media volume at /var/lib/marketd/media");

  const mg = s.migrate;
  expect(JSON.stringify(mg.command) === JSON.stringify(["migrate"]), "migrate: command [\"migrate\"]");
  expect(mg.image === be.image, "migrate: the backend's image");
  expect(mg.restart === "no" || mg.restart === undefined, "migrate: one-shot (restart: \"no\")");
  expect(!/pgbouncer/.test(String(mg.environment && mg.environment.DATABASE_URL)), "migrate: DATABASE_URL straight to the primary, not PgBouncer");

  const ng = s.nginx;
  expect((ng.volumes || []).some((v) => (typeof v === "string" ? /nginx\/nginx\.conf:\/etc\/nginx\/nginx\.conf/.test(v)
    : /nginx\/nginx\.conf$/.test(v.source) && v.target === "/etc/nginx/nginx.conf")), "nginx: mounts nginx/nginx.conf (S2)");
  expect((ng.ports || []).length > 0, "nginx: publishes the public port");
  for (const name of ["nginx", "pgbouncer", "postgres-primary", "postgres-replica", "redis"]) {
    expect(s[name].healthcheck && s[name].healthcheck.test, `${name}: healthcheck`);
  }
  // Configuration and secrets come from env files: checked on the file as
  // written (`docker-compose config` has already merged the env files in).
  const raw = YAML.parse(fs.readFileSync(rawFile, "utf8"), { merge: true });
  for (const [name, svc] of Object.entries(raw.services || {})) {
    for (const ef of [].concat(svc.env_file || [])) {
      const p = typeof ef === "string" ? ef : ef.path;
      expect(/^(\.\/)?deploy\/env\/[a-z.]+\.env$/.test(p), `${name}: env_file ${p} outside deploy/env/`);
      expect(fs.existsSync(path.join(path.dirname(rawFile), `${p}.example`)), `${name}: ${p}.example missing`);
    }
    const env = Array.isArray(svc.environment)
      ? Object.fromEntries(svc.environment.map((e) => [e.split("=")[0], e.split("=").slice(1).join("=")]))
      : svc.environment || {};
    for (const [k, v] of Object.entries(env)) {
      expect(!/PASSWORD|SECRET|TOKEN/i.test(k), `${name}: ${k} set inline; secrets belong in deploy/env/*.env`);
      expect(!/:\/\/[^/@:]*:[^/@]+@/.test(String(v)), `${name}: ${k} carries a password inline`);
    }
  }
  expect(s["postgres-replica"].depends_on && s["postgres-replica"].depends_on["postgres-primary"], "postgres-replica: depends on the primary");
}

// --- Dockerfile -----------------------------------------------------------------------

function dockerfile(file) {
  const lines = fs.readFileSync(file, "utf8").replace(/\\\n/g, " ").split("\n")
    .map((l) => l.trim()).filter((l) => l && !l.startsWith("#"));
  const stages = [];
  for (const l of lines) {
    const m = /^(\w+)\s+(.*)$/.exec(l);
    if (!m) continue;
    const ins = m[1].toUpperCase();
    if (ins === "FROM") stages.push({ from: m[2], ins: [] });
    else if (stages.length) stages[stages.length - 1].ins.push([ins, m[2]]);
  }
  expect(stages.length >= 2, "multi-stage build (build + runtime)");
  if (stages.length < 2) return;
  const build = stages[0];
  const rt = stages[stages.length - 1];
  const arg = (s) => s.replace(/\$\{DEBIAN_RELEASE\}/g, "12");
  expect(/^debian:12(\s|$)/.test(arg(build.from)), `build stage FROM debian:12 (got ${build.from})`);
  expect(/^debian:12-slim(\s|$)/.test(arg(rt.from)), `runtime stage FROM debian:12-slim (got ${rt.from})`);
  const rtRun = rt.ins.filter(([i]) => i === "RUN").map(([, a]) => a).join(" ");
  expect(!/\b[a-z0-9.+-]+-dev\b/.test(rtRun), "runtime stage installs no -dev packages");
  expect(/build-essential|gcc/.test(build.ins.map(([, a]) => a).join(" ")), "build stage has the compiler");
  const last = (name) => { const x = rt.ins.filter(([i]) => i === name); return x.length ? x[x.length - 1][1] : null; };
  const user = last("USER");
  expect(user && !/^(0|root)(:|$)/.test(user), `runtime runs as a non-root USER (got ${user})`);
  expect(user && /^\d+(:\d+)?$/.test(user), "USER is numeric (Kubernetes runAsNonRoot can check it)");
  const hc = last("HEALTHCHECK");
  expect(hc && /marketd-healthcheck|\/healthz/.test(hc), "HEALTHCHECK on /healthz");
  const ep = last("ENTRYPOINT");
  const cmd = last("CMD");
  expect(ep && /marketd"?\s*\]/.test(ep), `ENTRYPOINT is the marketd binary (got ${ep})`);
  expect(cmd && /^\[\s*"serve"\s*\]$/.test(cmd), `CMD ["serve"] (got ${cmd})`);
  expect(rt.ins.some(([i, a]) => i === "COPY" && /--from=build/.test(a) && /marketd/.test(a)), "runtime copies the binary from the build stage");
  expect(build.ins.some(([i, a]) => i === "COPY" && /migrations/.test(a)), "build stage copies migrations/ (embedded in the binary)");
}

// --- rendered Kubernetes manifests ----------------------------------------------------

const byKind = (docs, kind, name) => docs.find((d) => d.kind === kind && d.metadata && d.metadata.name === name);
const cmByPrefix = (docs, prefix) => docs.find((d) => d.kind === "ConfigMap" && new RegExp(`^${prefix}(-[a-z0-9]{10})?$`).test(d.metadata.name));

function k8s(file, flavour) {
  const docs = loadAll(file);
  const dep = byKind(docs, "Deployment", "backend");
  expect(dep, "Deployment backend");
  if (!dep) return;
  const pod = dep.spec.template.spec;
  const c = pod.containers.find((x) => x.name === "backend") || pod.containers[0];
  if (flavour === "base") expect(dep.spec.replicas === 3, `base: backend replicas 3 (got ${dep.spec.replicas})`);
  if (flavour === "prod") expect(dep.spec.replicas >= 5, `prod: backend replicas >= 5 (S1, got ${dep.spec.replicas})`);
  const r = c.resources || {};
  for (const kind of ["requests", "limits"]) {
    expect(r[kind] && String(r[kind].cpu) === "2", `backend ${kind}.cpu 2 (S8)`);
    expect(r[kind] && r[kind].memory === "2Gi", `backend ${kind}.memory 2Gi (S8)`);
  }
  expect(c.readinessProbe && c.readinessProbe.httpGet && c.readinessProbe.httpGet.path === "/readyz", "readinessProbe GET /readyz");
  expect(c.livenessProbe && c.livenessProbe.httpGet && c.livenessProbe.httpGet.path === "/healthz", "livenessProbe GET /healthz");
  const pre = c.lifecycle && c.lifecycle.preStop && c.lifecycle.preStop.exec && c.lifecycle.preStop.exec.command;
  const preS = pre && pre[0] === "sleep" ? Number(pre[1]) : NaN;
  expect(preS >= 3 && preS <= 15, "preStop sleep of a few seconds");
  const cm = cmByPrefix(docs, "marketd-config");
  expect(cm, "ConfigMap marketd-config");
  const env = (cm && cm.data) || {};
  const drainS = Number(env.SHUTDOWN_TIMEOUT_MS || 10000) / 1000;
  expect(pod.terminationGracePeriodSeconds >= drainS + (preS || 0),
    `terminationGracePeriodSeconds ${pod.terminationGracePeriodSeconds} >= SHUTDOWN_TIMEOUT_MS ${drainS} s + preStop ${preS} s`);
  expect(env.DB_PREPARE === "0", "ConfigMap: DB_PREPARE=0 (PgBouncer, S5)");
  expect(/pgbouncer:6432/.test(env.DATABASE_URL || ""), "ConfigMap: DATABASE_URL through pgbouncer:6432");
  expect(env.WORKERS === "2", "ConfigMap: WORKERS=2 (the CPU limit, not the node's cores)");
  const ef = (c.envFrom || []).map((e) => (e.configMapRef ? `cm:${e.configMapRef.name}` : e.secretRef ? `secret:${e.secretRef.name}` : "?"));
  expect(cm && ef.includes(`cm:${cm.metadata.name}`), "backend envFrom the ConfigMap");
  expect(ef.includes("secret:marketd-secrets"), "backend envFrom the Secret marketd-secrets");
  const psc = pod.securityContext || {};
  const csc = c.securityContext || {};
  expect(psc.runAsNonRoot === true || csc.runAsNonRoot === true, "backend runAsNonRoot");
  expect(csc.readOnlyRootFilesystem === true, "backend readOnlyRootFilesystem");
  expect(csc.allowPrivilegeEscalation === false, "backend allowPrivilegeEscalation false");

  // S15: the document's HPA, exactly (min raised to 5 in prod, S1).
  const hpa = byKind(docs, "HorizontalPodAutoscaler", "backend-hpa");
  expect(hpa && hpa.apiVersion === "autoscaling/v2", "HPA backend-hpa, autoscaling/v2");
  if (hpa) {
    const sp = hpa.spec;
    expect(sp.scaleTargetRef.kind === "Deployment" && sp.scaleTargetRef.name === "backend" && sp.scaleTargetRef.apiVersion === "apps/v1",
      "HPA targets Deployment backend");
    expect(sp.minReplicas === (flavour === "prod" ? 5 : 3), `HPA minReplicas ${flavour === "prod" ? 5 : 3} (got ${sp.minReplicas})`);
    expect(sp.maxReplicas === 10, "HPA maxReplicas 10");
    const util = (n) => (sp.metrics || []).find((m) => m.type === "Resource" && m.resource.name === n);
    const cpu = util("cpu");
    const mem = util("memory");
    expect(cpu && cpu.resource.target.type === "Utilization" && cpu.resource.target.averageUtilization === 70, "HPA cpu 70 %");
    expect(mem && mem.resource.target.type === "Utilization" && mem.resource.target.averageUtilization === 80, "HPA memory 80 %");
    expect((sp.metrics || []).length === 2, "HPA: exactly the two metrics of the document");
  }
  expect(docs.some((d) => d.kind === "PodDisruptionBudget" && JSON.stringify(d.spec.selector.matchLabels) === JSON.stringify(dep.spec.selector.matchLabels)),
    "a PodDisruptionBudget for the backend");
  expect(docs.some((d) => d.kind === "Service" && d.metadata.name === "backend"), "Service backend");
  const job = docs.find((d) => d.kind === "Job");
  const jc = job && job.spec.template.spec.containers[0];
  expect(jc && JSON.stringify(jc.args) === JSON.stringify(["migrate"]) && jc.image === c.image, "Job running `marketd migrate` from the backend's image");
  const pgb = byKind(docs, "Deployment", "pgbouncer");
  expect(pgb && byKind(docs, "Service", "pgbouncer"), "PgBouncer Deployment + Service");
  const ini = cmByPrefix(docs, "pgbouncer-ini");
  expect(ini && /^pool_mode\s*=\s*transaction\s*$/m.test(ini.data["pgbouncer.ini"] || ""), "PgBouncer ini: pool_mode = transaction");
  expect(byKind(docs, "Deployment", "nginx") && cmByPrefix(docs, "nginx-config"), "nginx Deployment + ConfigMap");
  for (const d of docs) {
    if (d.kind === "Secret") fail(`Secret ${d.metadata.name} rendered: secrets stay out of the kustomization`);
    if (d.metadata && d.kind !== "Namespace") expect(d.metadata.namespace === "marketd", `${d.kind}/${d.metadata.name}: namespace marketd`);
  }
  for (const d of docs.filter((x) => x.kind === "Deployment" || x.kind === "Job")) {
    for (const cc of d.spec.template.spec.containers) {
      expect(cc.resources && cc.resources.limits && cc.resources.limits.memory, `${d.kind}/${d.metadata.name}/${cc.name}: memory limit`);
      expect(!/:latest$/.test(cc.image) && (flavour !== "prod" || /:[\w.-]+$/.test(cc.image)), `${d.kind}/${d.metadata.name}/${cc.name}: pinned image tag (${cc.image})`);
    }
  }
}

// Two renderings (e.g. kustomize v2 and v5) agree, modulo generator hashes
// and empty maps.
function normalise(docs) {
  const strip = (o) => {
    if (Array.isArray(o)) return o.map(strip);
    if (o && typeof o === "object") {
      const r = {};
      for (const k of Object.keys(o).sort()) {
        const v = strip(o[k]);
        if (v && typeof v === "object" && !Array.isArray(v) && Object.keys(v).length === 0 && (k === "annotations" || k === "labels")) continue;
        r[k] = v;
      }
      return r;
    }
    return o;
  };
  const m = new Map();
  for (const d of docs) m.set(`${d.kind}/${d.metadata.name}`, JSON.stringify(strip(d)));
  return m;
}

function k8sSame(a, b) {
  const unhash = (f) => YAML.parseAllDocuments(fs.readFileSync(f, "utf8").replace(/\b([a-z0-9-]+-config|[a-z0-9-]+-ini)-[a-z0-9]{10}\b/g, "$1"))
    .map((d) => d.toJS()).filter((d) => d);
  const A = normalise(unhash(a));
  const B = normalise(unhash(b));
  for (const k of new Set([...A.keys(), ...B.keys()])) {
    if (!A.has(k)) fail(`${k} only in ${b}`);
    else if (!B.has(k)) fail(`${k} only in ${a}`);
    else if (A.get(k) !== B.get(k)) fail(`${k} differs between the two renderings`);
  }
}

// --- Grafana dashboard ----------------------------------------------------------------

const REQUIRED_SIGNALS = [
  ["req/s per instance", /sum by \(instance\) \(rate\(marketd_http_requests_total\{/],
  ["p95 by route", /histogram_quantile\(0\.95, sum by \(route, le\) \(rate\(marketd_http_request_duration_seconds_bucket/],
  ["p99 by route", /histogram_quantile\(0\.99, sum by \(route, le\) \(rate\(marketd_http_request_duration_seconds_bucket/],
  ["pool usage", /marketd_db_pool_connections\{[^}]*state="busy"[^}]*\}[\s\S]*marketd_db_pool_max/],
  ["pool wait", /marketd_db_pool_wait_seconds_bucket/],
  ["cache hit ratio", /marketd_cache_requests_total\{[^}]*result="hit"/],
  ["CPU", /rate\(process_cpu_seconds_total/],
  ["RSS", /process_resident_memory_bytes/],
  ["fds", /process_open_fds/],
];

function dashboard(file, rulesOut) {
  let d;
  try {
    d = JSON.parse(fs.readFileSync(file, "utf8"));
  } catch (e) {
    fail(`not JSON: ${e.message}`);
    return;
  }
  expect(typeof d.title === "string" && d.title, "title");
  expect(typeof d.uid === "string" && /^[a-zA-Z0-9_-]{1,40}$/.test(d.uid), "uid");
  expect(Number.isInteger(d.schemaVersion), "schemaVersion");
  expect(Array.isArray(d.panels) && d.panels.length > 0, "panels");
  const vars = new Set(((d.templating && d.templating.list) || []).map((v) => v.name));
  expect(vars.has("datasource"), "a `datasource` variable, so the dashboard imports into any Grafana");
  const ids = new Set();
  const exprs = [];
  for (const p of d.panels || []) {
    const where = `panel ${p.id} "${p.title}"`;
    expect(Number.isInteger(p.id) && !ids.has(p.id), `${where}: unique integer id`);
    ids.add(p.id);
    expect(p.type && p.title && p.gridPos && ["x", "y", "w", "h"].every((k) => Number.isInteger(p.gridPos[k])), `${where}: type, title, gridPos`);
    expect(p.datasource && p.datasource.uid === "${datasource}", `${where}: uses the datasource variable`);
    expect(Array.isArray(p.targets) && p.targets.length > 0, `${where}: queries`);
    for (const t of p.targets || []) {
      expect(typeof t.expr === "string" && t.expr, `${where}: target ${t.refId} has an expr`);
      if (t.expr) {
        for (const m of t.expr.matchAll(/\$(\w+)/g)) {
          expect(m[1].startsWith("__") || vars.has(m[1]), `${where}: unknown variable $${m[1]}`);
        }
        exprs.push([where, t.expr]);
      }
    }
  }
  const all = exprs.map(([, e]) => e).join("\n");
  for (const [name, re] of REQUIRED_SIGNALS) expect(re.test(all), `a panel for ${name}`);
  // Grafana variables → something PromQL parses, so promtool can check every query.
  const rules = {
    groups: [{
      name: "dashboard-queries",
      rules: exprs.map(([, e], i) => ({
        record: `dashboard:query_${i}`,
        expr: e.replace(/\$__rate_interval|\$__interval|\$__range/g, "5m").replace(/\$instance/g, ".*").replace(/\$cpu_limit/g, "2"),
      })),
    }],
  };
  fs.writeFileSync(rulesOut, YAML.stringify(rules));
}

// --- metric names ---------------------------------------------------------------------

function metrics(srcDir, files) {
  const src = [];
  const walk = (dir) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (/\.[ch]$/.test(e.name)) src.push(fs.readFileSync(p, "utf8"));
    }
  };
  walk(srcDir);
  const text = src.join("\n");
  const names = new Set();
  for (const f of files) {
    // Recording-rule names (level:metric:operations) are not exported metrics.
    for (const m of fs.readFileSync(f, "utf8").matchAll(/(?<![:\w])((?:http|db_pool|cache|process|marketd)_[a-z_]+)(?![:\w])/g)) names.add(m[1]);
  }
  expect(names.size > 0, "no marketd metric names found");
  for (const n of names) {
    const base = n.replace(/_(bucket|sum|count)$/, "");
    // Exported as `name{`, `name ` or `TYPE name`.
    expect(new RegExp(`\\b${base}(_bucket|_sum|_count)?[{ ]`).test(text), `metric ${n} is used but ${srcDir} does not export ${base}`);
  }
}

// --- alert rules ----------------------------------------------------------------------

// The document's signals (S14), each with its threshold in the expression
// (or the recording rule it reads), a `for:` and the named action.
const REQUIRED_ALERTS = {
  MarketdHighRequestRate: { threshold: /> 1000\b/, action: /add backend instances/i },
  MarketdHighLatencyP95: { threshold: /p95[\s\S]*> 0\.5\b/, action: /optimise[\s\S]*add backend instances/i },
  MarketdHighLatencyP99: { threshold: /p99[\s\S]*> 1\b/, action: /optimise[\s\S]*add backend instances/i },
  MarketdDBPoolHighUsage: { threshold: /> 0\.8\b/, action: /pool[\s\S]*read replicas/i },
  MarketdHighCPU: { threshold: /> 0\.7\b/, action: /scale/i },
  MarketdHighMemory: { threshold: /> 0\.8\b/, action: /scale/i },
  MarketdInstanceDown: { threshold: /up\{job="marketd"\} == 0/, action: /./ },
};

function alerts(file) {
  const doc = YAML.parse(fs.readFileSync(file, "utf8"));
  const rules = (doc.groups || []).flatMap((g) => g.rules || []);
  const records = new Map(rules.filter((r) => r.record).map((r) => [r.record, r.expr]));
  for (const [name, want] of Object.entries(REQUIRED_ALERTS)) {
    const r = rules.find((x) => x.alert === name);
    if (!r) {
      fail(`alert ${name} missing`);
      continue;
    }
    expect(want.threshold.test(String(r.expr)), `${name}: threshold not in its expression (${r.expr})`);
    expect(r.for && /^\d+[smh]$/.test(r.for), `${name}: a \`for:\` duration`);
    expect(r.labels && /^(warning|critical)$/.test(r.labels.severity), `${name}: severity warning|critical`);
    expect(r.annotations && want.action.test(r.annotations.action || ""), `${name}: annotations.action with the document's action`);
    expect(r.annotations && r.annotations.summary, `${name}: annotations.summary`);
    // Every recording rule the alert reads exists.
    for (const m of String(r.expr).matchAll(/\b[a-z_]+:[a-z0-9_:]+/g)) expect(records.has(m[0]), `${name}: reads ${m[0]}, which no rule records`);
  }
  // The resource envelope of S8 the CPU and memory ratios are taken against.
  expect(/vector\(2\)/.test(String(records.get("marketd:cpu_limit_cores"))), "marketd:cpu_limit_cores = 2 cores (S8)");
  expect(/vector\(2147483648\)/.test(String(records.get("marketd:memory_limit_bytes"))), "marketd:memory_limit_bytes = 2 GiB (S8)");
}

// --- main -----------------------------------------------------------------------------

const [cmd, ...args] = process.argv.slice(2);
const cmds = {
  compose: () => compose(args[0], args[1]),
  dockerfile: () => dockerfile(args[0]),
  k8s: () => k8s(args[0], args[1] || "base"),
  "k8s-same": () => k8sSame(args[0], args[1]),
  dashboard: () => dashboard(args[0], args[1]),
  metrics: () => metrics(args[0], args.slice(1)),
  alerts: () => alerts(args[0]),
};
if (!cmds[cmd]) {
  console.error("usage: policy.cjs compose|dockerfile|k8s|k8s-same|dashboard|metrics|alerts ...");
  process.exit(2);
}
try {
  cmds[cmd]();
} catch (e) {
  fail(`${cmd}: ${e.stack || e}`);
}
for (const e of errors.filter(Boolean)) console.log(`  ${e}`);
process.exitCode = errors.filter(Boolean).length ? 1 : 0;
