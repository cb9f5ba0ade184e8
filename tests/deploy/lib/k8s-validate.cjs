#!/usr/bin/env node
// Validates Kubernetes manifests (multi-document YAML, e.g. the output of
// `kubectl kustomize`) offline against the Kubernetes API schemas shipped by
// the npm package kubernetes-models (generated from the Kubernetes OpenAPI
// spec, version pinned in tests/deploy/package-lock.json). Two passes per
// object:
//
//   1. schema: the package's JSON-schema validator (ajv, compiled from the
//      OpenAPI definitions): required fields, types, formats, enums;
//   2. strict: every field must exist in the API type, like
//      `kubectl apply --validate=strict` or `kubeconform -strict` (a typo such
//      as `readinesProbe` is otherwise silently dropped by the API server).
//      The field lists come from the same package's type declarations
//      (*.d.ts), one interface per API type.
//
// An apiVersion/kind the package does not know is an error, not a skip.
//
// Usage: node k8s-validate.cjs FILE...   → one line per object; exit 1 on any error.
"use strict";

const fs = require("fs");
const path = require("path");
const YAML = require("yaml");

const NM = path.resolve(__dirname, "..", "node_modules");

// --- strict field check from the .d.ts declarations ------------------------------

const fileCache = new Map(); // .d.ts path → parsed file

function stripComments(src) {
  return src.replace(/\/\*[\s\S]*?\*\//g, "").replace(/^\s*\/\/.*$/gm, "");
}

// Text between the brace at `open` and its partner.
function braceBody(src, open) {
  let depth = 0;
  for (let i = open; i < src.length; i++) {
    if (src[i] === "{") depth++;
    else if (src[i] === "}" && --depth === 0) return src.slice(open + 1, i);
  }
  throw new Error("unbalanced braces");
}

// Splits at top-level `;` (not inside <> {} () []).
function splitMembers(body) {
  const out = [];
  let depth = 0;
  let cur = "";
  for (const ch of body) {
    if ("<{([".includes(ch)) depth++;
    if (">})]".includes(ch)) depth--;
    if (ch === ";" && depth === 0) {
      if (cur.trim()) out.push(cur.trim());
      cur = "";
    } else cur += ch;
  }
  if (cur.trim()) out.push(cur.trim());
  return out;
}

function parseDts(file) {
  if (fileCache.has(file)) return fileCache.get(file);
  const src = stripComments(fs.readFileSync(file, "utf8"));
  const imports = new Map(); // local name → module specifier
  for (const m of src.matchAll(/import\s*\{([^}]*)\}\s*from\s*"([^"]+)"/g)) {
    for (const part of m[1].split(",")) {
      const [orig, alias] = part.trim().split(/\s+as\s+/);
      if (orig) imports.set((alias || orig).trim(), m[2]);
    }
  }
  const aliases = new Map(); // exported alias → local name
  for (const m of src.matchAll(/export\s*\{([^}]*)\}/g)) {
    for (const part of m[1].split(",")) {
      const [orig, alias] = part.trim().split(/\s+as\s+/);
      if (orig && alias) aliases.set(alias.trim(), orig.trim());
    }
  }
  const interfaces = new Map(); // name → body text
  for (const m of src.matchAll(/export\s+interface\s+(\w+)[^{]*\{/g)) {
    interfaces.set(m[1], braceBody(src, m.index + m[0].length - 1));
  }
  const typeAliases = new Set();
  for (const m of src.matchAll(/export\s+declare\s+type\s+(\w+)\s*=/g)) typeAliases.add(m[1]);
  const parsed = { file, imports, aliases, interfaces, typeAliases, types: new Map() };
  fileCache.set(file, parsed);
  return parsed;
}

function resolveModule(spec, fromFile) {
  const base = spec.startsWith(".") ? path.resolve(path.dirname(fromFile), spec) : path.join(NM, spec);
  for (const cand of [base + ".d.ts", path.join(base, "index.d.ts")]) {
    if (fs.existsSync(cand)) return cand;
  }
  throw new Error(`cannot resolve ${spec} from ${fromFile}`);
}

const ANY = { kind: "any" };

// The type node of interface/alias `name` as seen from `file`.
function resolveName(name, file) {
  const f = parseDts(file);
  if (f.types.has(name)) return f.types.get(name);
  let node = ANY;
  const local = f.aliases.get(name) || name;
  if (f.interfaces.has(local)) {
    node = { kind: "object", name: local, members: null, file, body: f.interfaces.get(local) };
  } else if (f.typeAliases.has(local)) {
    node = ANY; // IntOrString, Quantity, Time…: scalars
  } else if (f.imports.has(name)) {
    node = resolveName(name, resolveModule(f.imports.get(name), file));
  }
  f.types.set(name, node);
  return node;
}

function parseType(t, file) {
  t = t.trim();
  let m;
  if ((m = /^Array<([\s\S]*)>$/.exec(t))) return { kind: "array", of: parseType(m[1], file) };
  if ((m = /^\{\s*\[\w+:\s*string\]\s*:\s*([\s\S]*?);?\s*\}$/.exec(t))) return { kind: "map", of: parseType(m[1], file) };
  if (/^I\w+$/.test(t)) return resolveName(t, file);
  return ANY; // primitives, literal unions, X["kind"], unknown shapes
}

function members(node) {
  if (node.members) return node.members;
  node.members = new Map();
  for (const mem of splitMembers(node.body)) {
    const m = /^"([^"]+)"\??\s*:\s*([\s\S]+)$/.exec(mem) || /^(\w+)\??\s*:\s*([\s\S]+)$/.exec(mem);
    if (m) node.members.set(m[1], m[2]);
  }
  return node.members;
}

function strict(value, node, where, errors) {
  if (value === null || value === undefined) return;
  if (node.kind === "array") {
    if (Array.isArray(value)) value.forEach((v, i) => strict(v, node.of, `${where}[${i}]`, errors));
  } else if (node.kind === "map") {
    if (typeof value === "object" && !Array.isArray(value)) {
      for (const [k, v] of Object.entries(value)) strict(v, node.of, `${where}.${k}`, errors);
    }
  } else if (node.kind === "object") {
    if (typeof value !== "object" || Array.isArray(value)) return; // the schema pass reports types
    const mem = members(node);
    for (const [k, v] of Object.entries(value)) {
      if (!mem.has(k)) {
        errors.push(`${where}.${k}: unknown field (not in ${node.name.replace(/^I/, "")})`);
        continue;
      }
      strict(v, parseType(mem.get(k), node.file), `${where}.${k}`, errors);
    }
  }
}

// --- per object ---------------------------------------------------------------------

function modelPath(apiVersion, kind) {
  if (typeof apiVersion !== "string" || typeof kind !== "string" || !/^\w+$/.test(kind)) return null;
  const dir = apiVersion.includes("/") ? apiVersion : apiVersion; // "v1" or "group/version"
  if (!/^[a-z0-9.]+(\/[a-z0-9]+)?$/.test(dir)) return null;
  const p = path.join(NM, "kubernetes-models", dir, kind);
  return fs.existsSync(p + ".js") && fs.existsSync(p + ".d.ts") ? p : null;
}

function validateObject(doc) {
  const errors = [];
  const p = modelPath(doc.apiVersion, doc.kind);
  if (!p) return [`no schema for apiVersion ${doc.apiVersion} kind ${doc.kind} in kubernetes-models`];
  const Model = require(p)[doc.kind];
  try {
    new Model(doc).validate();
  } catch (e) {
    for (const part of String(e.message).split(/, (?=data)/)) errors.push(`schema: ${part}`);
  }
  if (!doc.metadata || typeof doc.metadata.name !== "string" || doc.metadata.name === "") {
    errors.push("metadata.name: required");
  }
  const node = resolveName(`I${doc.kind}`, p + ".d.ts");
  if (node.kind !== "object") errors.push(`no type declaration for ${doc.kind}`);
  else strict(doc, node, doc.kind, errors);
  return errors;
}

function main(files) {
  if (files.length === 0) {
    console.error("usage: k8s-validate.cjs FILE...");
    return 2;
  }
  let bad = 0;
  let count = 0;
  for (const file of files) {
    const docs = YAML.parseAllDocuments(fs.readFileSync(file, "utf8"));
    for (const d of docs) {
      if (d.errors.length) {
        console.log(`FAIL ${file}: YAML: ${d.errors[0].message}`);
        bad++;
        continue;
      }
      const doc = d.toJS();
      if (doc === null || doc === undefined) continue;
      count++;
      const id = `${doc.kind || "?"}/${(doc.metadata && doc.metadata.name) || "?"}`;
      const errors = validateObject(doc);
      if (errors.length) {
        bad++;
        console.log(`FAIL ${path.basename(file)} ${id}`);
        for (const e of errors) console.log(`     ${e}`);
      } else {
        console.log(`ok   ${path.basename(file)} ${id}`);
      }
    }
  }
  if (count === 0) {
    console.log("FAIL no Kubernetes objects found");
    return 1;
  }
  return bad ? 1 : 0;
}

process.exitCode = main(process.argv.slice(2));
