#!/usr/bin/env python3
"""deploy/swarm/compose-to-stack.py: docker-compose.prod.yml made a Swarm
stack file by rule, not by a second hand-written copy (issue 12 item 4; S1
"Kubernetes or Docker Swarm", S2 load balancer re-resolving the replicas,
S4 read replicas, S7 Redis Cluster).

Run by tests/deploy/check.sh with STACK_CONFIGS set to `docker-compose
config` outputs of the production file with deploy/swarm/docker-compose.swarm.yml
(alone, with --profile cluster, and with the test override as
tests/compose/run.sh uses it) and COMPOSE_CONFIG to the production file's
alone; no Docker engine needed. Each is transformed and must leave no key Swarm does not honour,
and keep what the rolling restart depends on. The rules themselves are
checked on small inputs.
"""
import importlib.util
import os
import unittest

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "..", "..", "deploy", "swarm", "compose-to-stack.py")
spec = importlib.util.spec_from_file_location("compose_to_stack", SCRIPT)
c2s = importlib.util.module_from_spec(spec)
spec.loader.exec_module(c2s)
c2s.warn = lambda msg: None  # the warnings are for people, not for these tests

# Keys that must not survive in a service of the stack file: Swarm ignores
# them (or its loader refuses them), so leaving one would silently lose
# what it means.
UNSUPPORTED = {"build", "container_name", "depends_on", "profiles", "restart", "cpus", "mem_limit",
               "mem_reservation", "shm_size", "tmpfs", "pull_policy", "links", "external_links"}
ONE_SHOT = ("migrate", "redis-cluster-init")


def configs():
    """(label, compose config document, active profiles) from STACK_CONFIGS:
    entries 'label|profile,profile|path' separated by ':'."""
    out = []
    for entry in filter(None, os.environ.get("STACK_CONFIGS", "").split(":")):
        label, profiles, path = entry.split("|")
        with open(path) as f:
            out.append((label, yaml.safe_load(f), set(filter(None, profiles.split(",")))))
    return out


class ProdFile(unittest.TestCase):
    """The production file, through the transform."""

    @classmethod
    def setUpClass(cls):
        cls.cases = configs()
        if not cls.cases:
            raise unittest.SkipTest("STACK_CONFIGS not set (tests/deploy/check.sh sets it)")

    def each(self):
        for label, doc, profiles in self.cases:
            with self.subTest(config=label):
                yield label, doc, profiles, c2s.transform(doc, profiles)

    def test_no_unsupported_key_survives(self):
        for label, _, _, stack in self.each():
            self.assertEqual(c2s.problems(stack), [])
            self.assertEqual(stack["version"], "3.9")
            for name, svc in stack["services"].items():
                self.assertEqual(sorted(set(svc) & UNSUPPORTED), [], "%s: %s" % (label, name))
            # The output is YAML that loads back to the same document.
            self.assertEqual(yaml.safe_load(yaml.safe_dump(stack)), stack)

    def test_profiles_select_services(self):
        for label, doc, profiles, stack in self.each():
            want = {n for n, s in doc["services"].items() if not s.get("profiles") or set(s["profiles"]) & profiles}
            self.assertEqual(set(stack["services"]), want)
            if "cluster" in profiles:
                self.assertIn("redis-node", stack["services"])
            self.assertNotIn("prometheus", stack["services"])

    def test_backend_rolls_start_first_one_at_a_time_health_gated(self):
        """S1: the rolling restart is Swarm's update_config, gated by the image's health check."""
        for label, _, _, stack in self.each():
            be = stack["services"]["backend"]
            self.assertEqual(be["deploy"]["replicas"], 5)
            self.assertEqual(be["deploy"]["endpoint_mode"], "dnsrr")
            up = be["deploy"]["update_config"]
            self.assertEqual((up["order"], up["parallelism"], up["failure_action"]), ("start-first", 1, "rollback"))
            self.assertIn("monitor", up)
            self.assertEqual(be["deploy"]["restart_policy"]["condition"], "any")
            # No healthcheck key: the image's HEALTHCHECK gates the update
            # (and `disable: true` must not have crept in).
            self.assertFalse((be.get("healthcheck") or {}).get("disable"))

    def test_every_service_dnsrr_and_replicas(self):
        """S2: nginx resolves every task (no virtual IP: no IPVS needed); S4, S7: replicas and nodes."""
        for label, _, profiles, stack in self.each():
            for name, svc in stack["services"].items():
                self.assertEqual(svc["deploy"].get("endpoint_mode"), "dnsrr", name)
            self.assertEqual(stack["services"]["postgres-replica"]["deploy"]["replicas"], 2)
            self.assertEqual(stack["services"]["postgres-primary"]["deploy"]["update_config"]["order"], "stop-first")
            if "cluster" in profiles:
                self.assertEqual(stack["services"]["redis-node"]["deploy"]["replicas"], 6)

    def test_one_shot_jobs_do_not_restart_after_success(self):
        for label, _, _, stack in self.each():
            for name in ONE_SHOT:
                if name in stack["services"]:
                    cond = stack["services"][name]["deploy"]["restart_policy"]["condition"]
                    self.assertIn(cond, ("none", "on-failure"), name)

    def test_limits_and_tmp_kept(self):
        """What Compose expresses as cpus/mem_limit/tmpfs/shm_size reaches Swarm as resources and mounts."""
        for label, doc, _, stack in self.each():
            for name, src in doc["services"].items():
                if name not in stack["services"]:
                    continue
                svc = stack["services"][name]
                if "cpus" in src:
                    self.assertEqual(float(svc["deploy"]["resources"]["limits"]["cpus"]), float(src["cpus"]), name)
                if "mem_limit" in src:
                    self.assertEqual(str(svc["deploy"]["resources"]["limits"]["memory"]), str(src["mem_limit"]), name)
                tmpfs = [v["target"] for v in svc.get("volumes", []) if isinstance(v, dict) and v.get("type") == "tmpfs"]
                for t in src.get("tmpfs") or []:
                    self.assertIn(t.split(":")[0], tmpfs, name)
                if "shm_size" in src:
                    self.assertIn("/dev/shm", tmpfs, name)

    def test_ports_host_mode_without_address(self):
        for label, _, _, stack in self.each():
            for name, svc in stack["services"].items():
                for p in svc.get("ports", []):
                    self.assertEqual(p["mode"], "host", name)
                    self.assertNotIn("host_ip", p, name)
            self.assertEqual(stack["services"]["nginx"]["ports"][0]["target"], 8080)


class ComposeStaysQuiet(unittest.TestCase):
    """The production file alone carries only the deploy keys docker-compose
    1.29 uses (it warns about every other one on every command): the
    Swarm-only ones are in deploy/swarm/docker-compose.swarm.yml."""

    COMPOSE_DEPLOY_KEYS = {"replicas", "resources", "labels", "placement"}

    def test_prod_deploy_keys_are_compose_ones(self):
        path = os.environ.get("COMPOSE_CONFIG")
        if not path:
            self.skipTest("COMPOSE_CONFIG not set (tests/deploy/check.sh sets it)")
        with open(path) as f:
            doc = yaml.safe_load(f)
        for name, svc in doc["services"].items():
            self.assertEqual(sorted(set(svc.get("deploy") or {}) - self.COMPOSE_DEPLOY_KEYS), [], name)
        self.assertEqual(doc["services"]["backend"]["deploy"]["replicas"], 5)


class Rules(unittest.TestCase):
    """Each rule of the transform on a small input."""

    def test_ports(self):
        self.assertEqual(c2s.short_port("127.0.0.1:80:8080/tcp"),
                         {"target": 8080, "published": 80, "protocol": "tcp", "host_ip": "127.0.0.1"})
        self.assertEqual(c2s.short_port("127.0.0.1::8080"), {"target": 8080, "protocol": "tcp", "host_ip": "127.0.0.1"})
        self.assertEqual(c2s.short_port("9090"), {"target": 9090, "protocol": "tcp"})
        self.assertEqual(c2s.port("x", {"target": "80", "published": "8080", "mode": "ingress", "host_ip": "127.0.0.1"}),
                         {"target": 80, "published": 8080, "mode": "host"})
        with self.assertRaises(ValueError):
            c2s.short_port("8000-8010:8000-8010")

    def test_restart_resources_and_dropped_keys(self):
        doc = {"services": {
            "job": {"image": "x", "restart": "no", "depends_on": {"db": {"condition": "service_healthy"}},
                    "build": {"context": "."}, "container_name": "job"},
            "web": {"image": "x", "restart": "unless-stopped", "cpus": 1.5, "mem_limit": "1g", "shm_size": "64m",
                    "tmpfs": ["/tmp", "/run:size=1m"], "deploy": {"restart_policy": {"condition": "on-failure"}}},
            "mon": {"image": "x", "profiles": ["monitoring"]},
        }, "networks": {"back": {"name": "proj_back"}}, "volumes": {"data": {}}}
        st = c2s.transform(doc, set())
        self.assertEqual(set(st["services"]), {"job", "web"})
        self.assertEqual(st["services"]["job"], {"image": "x", "deploy": {"restart_policy": {"condition": "none"}}})
        web = st["services"]["web"]
        self.assertEqual(web["deploy"]["restart_policy"], {"condition": "on-failure"})  # the file's own wins
        self.assertEqual(web["deploy"]["resources"], {"limits": {"cpus": "1.5", "memory": "1g"}})
        self.assertEqual(web["volumes"], [{"type": "tmpfs", "target": "/tmp"},
                                          {"type": "tmpfs", "target": "/run", "tmpfs": {"size": 1 << 20}},
                                          {"type": "tmpfs", "target": "/dev/shm", "tmpfs": {"size": 64 << 20}}])
        self.assertEqual(st["networks"], {"back": {}})
        self.assertEqual(c2s.problems(st), [])
        self.assertIn("mon", c2s.transform(doc, {"monitoring"})["services"])

    def test_problems_names_what_survives(self):
        st = {"version": "3.9", "services": {"a": {"image": "x", "cpus": 1, "profiles": ["p"],
                                                   "ports": [{"target": 1, "mode": "ingress"}]}}}
        bad = c2s.problems(st)
        self.assertTrue(any("services.a.cpus" in b for b in bad), bad)
        self.assertTrue(any("services.a.profiles" in b for b in bad), bad)
        self.assertTrue(any("services.a.ports" in b for b in bad), bad)
        self.assertTrue(c2s.problems({"version": "3.8", "services": {}}))

    def test_sizes(self):
        self.assertEqual([c2s.size_bytes(v) for v in ("1g", "512m", "1gb", "64k", "100", 4096)],
                         [1 << 30, 512 << 20, 1 << 30, 64 << 10, 100, 4096])


if __name__ == "__main__":
    unittest.main(verbosity=1)
