#!/usr/bin/env python3
"""docker-compose.prod.yml for `docker stack deploy` (issue 12 item 4).

Reads the output of `docker-compose ... config` (the compose file with its
overrides merged, variables interpolated, env files inlined and relative
paths made absolute: Compose does all of that, exactly as for `up`) and
writes the same deployment as a stack file that Docker Engine's Swarm mode
loads (compose file format 3.9, the newest Docker 20.10's loader knows).
Nothing is added by hand: every change is one of the rules below, so the
production file stays the one source.

  version          set to "3.9" (`docker stack deploy` refuses a file without one)
  name             dropped (Compose v2 adds the project name)
  profiles         services whose profiles are not active (--profile) are
                   dropped, the key itself from the rest
  build            dropped: Swarm runs images, it builds none (build first)
  depends_on       dropped: Swarm has no start order; a task whose dependency
                   does not answer yet fails and is restarted (restart_policy)
                   until it does, and readiness gates the traffic
  restart          becomes deploy.restart_policy.condition when the file has
                   none ("no" -> none, on-failure -> on-failure, else any)
  cpus, mem_limit, mem_reservation
                   become deploy.resources.limits / reservations
  tmpfs            becomes tmpfs mounts (volumes of type tmpfs): `docker stack
                   deploy` ignores the tmpfs key, and a read-only container
                   without its /tmp does not start
  shm_size         becomes a tmpfs mount on /dev/shm of that size (Swarm
                   services have no shm_size; PostgreSQL's parallel queries use it)
  container_name, pull_policy, links, external_links
                   dropped (no Swarm equivalent; none is in the prod file)
  ports            long syntax, mode: host. The routing mesh's virtual IPs
                   need IPVS, which not every kernel has, and the services
                   use endpoint_mode: dnsrr, which refuses ingress ports.
                   A host address (127.0.0.1:...) cannot be given to Swarm:
                   it is dropped with a warning; the address Swarm binds is
                   docker_gwbridge's com.docker.network.bridge.host_binding_ipv4
                   (tests/compose/run.sh makes it 127.0.0.1).
  networks, volumes (top level)
                   `name` dropped (the stack prefixes its own name); the
                   networks are overlay networks, Swarm's default for stacks

Usage: docker-compose -f docker-compose.prod.yml [-f override.yml] [--profile P] config \\
         | compose-to-stack.py [--profile P ...] [--check] > stack.yml
  --check  also fail (exit 1) if a key Swarm does not support survives
           (the same test tests/deploy/check.sh runs on the output).
Warnings go to stderr; the stack file to stdout.
"""
import argparse
import sys

import yaml

VERSION = "3.9"
# Service keys of compose file format 3.9 that `docker stack deploy` uses.
# Anything else left in a service after the rules is an error with --check.
SWARM_SERVICE_KEYS = {
    "cap_add", "cap_drop", "command", "configs", "credential_spec", "deploy", "devices", "dns",
    "dns_search", "domainname", "entrypoint", "env_file", "environment", "expose", "extra_hosts",
    "healthcheck", "hostname", "image", "init", "isolation", "labels", "logging", "networks", "ports",
    "read_only", "secrets", "stdin_open", "stop_grace_period", "stop_signal", "sysctls", "tty",
    "ulimits", "user", "volumes", "working_dir",
}
# Keys a Swarm service ignores (or the loader refuses) that carry no meaning
# the transform could keep.
DROPPED = ("build", "container_name", "pull_policy", "links", "external_links", "depends_on", "profiles")
RESTART = {"no": "none", "on-failure": "on-failure", "always": "any", "unless-stopped": "any"}


def warn(msg):
    print("compose-to-stack: " + msg, file=sys.stderr)


def enabled(svc, active):
    prof = svc.get("profiles") or []
    return not prof or any(p in active for p in prof)


def short_port(spec):
    """'127.0.0.1:80:8080/tcp', '80:8080', '8080', '127.0.0.1::8080' -> dict."""
    spec = str(spec)
    proto = "tcp"
    if "/" in spec:
        spec, proto = spec.rsplit("/", 1)
    parts = spec.split(":")
    host_ip, published, target = "", "", parts[-1]
    if len(parts) == 2:
        published = parts[0]
    elif len(parts) == 3:
        host_ip, published = parts[0], parts[1]
    elif len(parts) > 3:
        raise ValueError("port %r: not understood" % spec)
    if "-" in target or "-" in published:
        raise ValueError("port %r: ranges are not supported" % spec)
    out = {"target": int(target), "protocol": proto}
    if published:
        out["published"] = int(published)
    if host_ip:
        out["host_ip"] = host_ip
    return out


def size_bytes(v):
    """1g, 512m, 65536k, 1024b, 1073741824 -> bytes (Compose's size units)."""
    v = str(v).strip().lower()
    mult = {"b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    v = v[:-1] if v.endswith("b") and len(v) > 1 and v[-2] in mult else v
    if v and v[-1] in mult:
        return int(float(v[:-1]) * mult[v[-1]])
    return int(v)


def tmpfs_mount(spec):
    """'/tmp' or '/run:size=64m,mode=1777' -> a tmpfs volume (size kept; Swarm has no mode)."""
    path, _, opts = str(spec).partition(":")
    m = {"type": "tmpfs", "target": path}
    for o in filter(None, opts.split(",")):
        k, _, v = o.partition("=")
        if k == "size":
            m["tmpfs"] = {"size": size_bytes(v)}
        else:
            warn("tmpfs %s: option %s dropped (Swarm takes only size)" % (path, o))
    return m


def port(name, p):
    p = dict(p) if isinstance(p, dict) else short_port(p)
    host_ip = p.pop("host_ip", "")
    if host_ip:
        warn("%s: port %s: host address %s dropped (Swarm binds docker_gwbridge's host_binding_ipv4)"
             % (name, p["target"], host_ip))
    if p.get("mode", "host") != "host":
        warn("%s: port %s: mode %s made host (no routing mesh: dnsrr, and no IPVS here)" % (name, p["target"], p["mode"]))
    p["mode"] = "host"
    for k in ("target", "published"):
        if k in p:
            p[k] = int(p[k])
    p.pop("app_protocol", None)
    p.pop("name", None)
    return p


def service(name, svc):
    svc = dict(svc)
    deploy = svc.setdefault("deploy", {}) or {}
    svc["deploy"] = deploy
    restart = svc.pop("restart", None)
    if restart is not None and "restart_policy" not in deploy:
        cond = RESTART.get(str(restart).split(":")[0], "any")
        deploy["restart_policy"] = {"condition": cond}
    limits = {"cpus": svc.pop("cpus", None), "memory": svc.pop("mem_limit", None)}
    reserv = {"memory": svc.pop("mem_reservation", None)}
    for section, vals in (("limits", limits), ("reservations", reserv)):
        vals = {k: str(v) for k, v in vals.items() if v is not None}
        if vals:
            res = deploy.setdefault("resources", {}).setdefault(section, {})
            for k, v in vals.items():
                res.setdefault(k, v)
    tmpfs = svc.pop("tmpfs", None) or []
    for t in [tmpfs] if isinstance(tmpfs, str) else tmpfs:
        svc.setdefault("volumes", []).append(tmpfs_mount(t))
    shm = svc.pop("shm_size", None)
    if shm is not None:
        svc.setdefault("volumes", []).append({"type": "tmpfs", "target": "/dev/shm", "tmpfs": {"size": size_bytes(shm)}})
    for k in DROPPED:
        svc.pop(k, None)
    if "ports" in svc:
        svc["ports"] = [port(name, p) for p in svc["ports"]]
    if not deploy:
        del svc["deploy"]
    return svc


def transform(doc, active):
    out = {"version": VERSION, "services": {}}
    for name, svc in (doc.get("services") or {}).items():
        if enabled(svc, active):
            out["services"][name] = service(name, svc)
    for top in ("networks", "volumes", "secrets", "configs"):
        if doc.get(top):
            out[top] = {}
            for k, v in doc[top].items():
                v = dict(v or {})
                v.pop("name", None)
                out[top][k] = v
    return out


def problems(stack):
    """Keys that Swarm would not honour; empty when the file is clean."""
    bad = []
    if stack.get("version") != VERSION:
        bad.append("version is %r, not %r" % (stack.get("version"), VERSION))
    for name, svc in stack.get("services", {}).items():
        for k in sorted(set(svc) - SWARM_SERVICE_KEYS):
            bad.append("services.%s.%s: not supported by docker stack deploy" % (name, k))
        for p in svc.get("ports", []):
            if not isinstance(p, dict) or p.get("mode") != "host" or "host_ip" in p:
                bad.append("services.%s.ports: %r is not a host-mode port Swarm accepts" % (name, p))
    return bad


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", action="append", default=[], help="an active Compose profile")
    ap.add_argument("--check", action="store_true", help="fail if a Swarm-unsupported key survives")
    ap.add_argument("input", nargs="?", default="-", help="docker-compose config output (default stdin)")
    a = ap.parse_args()
    src = sys.stdin if a.input == "-" else open(a.input)
    stack = transform(yaml.safe_load(src) or {}, set(a.profile))
    bad = problems(stack)
    for b in bad:
        warn(b)
    if a.check and bad:
        return 1
    sys.stdout.write("# Generated by deploy/swarm/compose-to-stack.py from `docker-compose config`;\n"
                     "# do not edit: change docker-compose.prod.yml.\n")
    yaml.safe_dump(stack, sys.stdout, default_flow_style=False, sort_keys=False, width=120)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
