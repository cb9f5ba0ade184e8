"""The upkeep jobs every instance runs (src/api/ops.c).

- IdempotencyCleanupTests (issue 10, defect 7): expired Idempotency-Keys
  (older than 24 h, api.md POST /orders) are deleted by the server itself,
  in bounded batches, and live keys are kept. The interval is
  IDEMPOTENCY_CLEANUP_EVERY (1 h by default); the test server runs it every
  second and the test waits for the table's state, not for a time.
"""

from harness import wait_until
from test_orders import OrderCase, unique

EXPIRED = 2500  # more than two of the job's 1,000-row batches
LIVE = 3


class IdempotencyCleanupTests(OrderCase):

    server_env = dict(OrderCase.server_env, IDEMPOTENCY_CLEANUP_EVERY="1")

    def count(self, user, expired):
        cond = "<" if expired else ">="
        return self.db_one("SELECT count(*) FROM idempotency_keys WHERE user_id = %%s"
                           " AND created_at %s now() - interval '24 hours'" % cond, (user,))[0]

    def test_expired_keys_are_deleted_in_batches_and_live_ones_kept(self):
        user = self.new_user()
        prefix = unique("k")
        self.db("INSERT INTO idempotency_keys (user_id, key, request_hash, outcome, created_at)"
                " SELECT %s, %s || g, 'h', 'ok', now() - interval '25 hours' - g * interval '1 second'"
                " FROM generate_series(1, %s) g", (user, prefix + "-old-", EXPIRED))
        self.db("INSERT INTO idempotency_keys (user_id, key, request_hash, outcome, created_at)"
                " SELECT %s, %s || g, 'h', 'ok', now() - interval '23 hours'"
                " FROM generate_series(1, %s) g", (user, prefix + "-live-", LIVE))
        # (No count here: the job may already be deleting.)
        gone = wait_until(lambda: self.count(user, True) == 0, timeout=120, interval=0.2)
        self.assertTrue(gone, "%d expired key(s) still there after 120 s" % self.count(user, True))
        self.assertEqual(self.count(user, False), LIVE, "a key younger than 24 h was deleted")
        log = self.server.log_text()
        self.assertRegex(log, r"idempotency keys: deleted \d+ expired key", "the run is logged")

    def test_a_live_key_still_replays_after_a_cleanup_run(self):
        _, sid = self.new_seller(unique("Лавка "))
        pid = self.new_product(sid, stock=5)
        buyer = self.new_user()
        key = unique("live")
        first = self.place(buyer, [(pid, 1)], key=key)
        self.assertEqual(first.status, 201, first)
        # A run that happens after the key was written (the job runs every
        # second): wait for one by its effect on an expired marker row.
        self.db("INSERT INTO idempotency_keys (user_id, key, request_hash, outcome, created_at)"
                " VALUES (%s, %s, 'h', 'ok', now() - interval '2 days')", (buyer, key + "-marker"))
        self.assertTrue(wait_until(lambda: self.count(buyer, True) == 0, timeout=120, interval=0.2),
                        "the expired marker was never deleted")
        again = self.place(buyer, [(pid, 1)], key=key)
        self.assertEqual((again.status, again.headers.get("Idempotent-Replayed")), (201, "true"))
        self.assertEqual(again.body, first.body)
        self.assertEqual(self.stock_db(pid), 4, "stock taken once")
