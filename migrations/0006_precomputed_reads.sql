-- 0006: expensive reads are not computed per request (issue "No metastable
-- collapse", item 3).
--
-- 1. Popular sellers. GET /sellers/popular counted the delivered orders of
--    the last 30 days per seller on every cache miss: ~1M index entries and
--    ~150-200 ms at bench scale, the most expensive read of the API and the
--    one a cache outage or a stampede would multiply. The ranking is now a
--    table of running counts, read by an index in well under a millisecond.
--
--    seller_popularity       seller_id → orders_30d (and the seller's city,
--                            for the per-city ranking's index). Written only
--                            by marketd_refresh_popular.
--    seller_popularity_log   every change to "delivered order of seller S
--                            created at T" since the last refresh: +1 when
--                            an order becomes (or is inserted as) delivered,
--                            -1 when a delivered order stops being one (not
--                            possible through the API, possible in SQL) or
--                            is deleted, 0 when a seller moves city. Written
--                            by triggers on orders and sellers, so every
--                            path is covered: marketd_order_transition, the
--                            seeder's COPY, a test fixture's INSERT, a
--                            manual UPDATE. Append-only: no row is ever
--                            contended, a delivery takes no new lock.
--    seller_popularity_window  one row: the counts cover delivered orders
--                            created at or after `since`.
--
--    A read (src/api/sellers.c) is exact at any moment: the counts, plus
--    the log rows not yet folded, minus the delivered orders that left the
--    30 days since `since` (a few seconds of orders, one short range of
--    orders_delivered_idx). marketd_refresh_popular (worker 0 of every
--    instance, every 10 s: src/api/ops.c) folds the log into the counts and
--    moves `since` to now() - 30 days, subtracting the delivered orders
--    created in [since, now() - 30 days): old days drop out without any
--    write to orders. Both happen in ONE statement, hence one snapshot: a
--    delivery is either visible to it (its log row is folded and, if its
--    order left the window, the order is subtracted) or not (its log row
--    stays for the next run). No lock is needed between deliveries,
--    refreshes and reads. The refresh only keeps what a read adds up short;
--    a stopped refresh makes reads slower, never wrong.
--
--    Invariant (every snapshot): counts[s] + sum(log rows of s created at
--    or after since) = delivered orders of s created at or after since.
--
-- 2. Order lists. marketd_order_json rendered each order's items with a
--    sub-select run as its own executor call (a non-inlined SQL function:
--    ~50 µs per order, ~1 ms of a 20-order page). The order document and
--    the item object are now inlinable SQL functions; GET /orders renders
--    the page with them and one LATERAL aggregate per order in the same
--    plan (src/api/orders.c), and marketd_order_json is rebuilt from the
--    same two functions, so a list and a single order cannot drift apart
--    and the bytes stay exactly those of 0002 (compared on 1.5M orders of
--    the bench data and 250k list items, see docs/indexes.md O1).
--
-- Applied by `marketd migrate` in one transaction. CREATE TRIGGER takes
-- SHARE ROW EXCLUSIVE on orders (and its partitions) and on sellers: writes
-- to them wait until this transaction commits (reads do not), and the
-- backfill runs under that lock, so no delivery can slip between the
-- backfill and the trigger. Measured at bench scale (docs/indexes.md):
-- 0.3-0.5 s, also under 1,240 order writes/s, which waited at most 0.55 s.
-- lock_timeout makes it fail instead of queueing traffic behind a long
-- transaction (nothing applied, rerun migrate).

SET LOCAL lock_timeout = '5s';

-- ---- order documents ----------------------------------------------------

-- Inlinable: it was IMMUTABLE around the STABLE to_char, which PostgreSQL
-- refuses to inline, so every call was a function call of its own.
ALTER FUNCTION marketd_ts(timestamptz) STABLE;

-- The JSON of one order (api.md "Order"), given its items as a JSON array
-- (NULL = none). STABLE, one expression, every argument used once: the
-- planner inlines it into the calling statement.
CREATE FUNCTION marketd_order_doc(id bigint, buyer_id bigint, seller_id bigint, status text, items json,
                                  total bigint, currency bpchar, created_at timestamptz, updated_at timestamptz)
    RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$
    SELECT json_build_object(
        'id', id, 'buyer_id', buyer_id, 'seller_id', seller_id, 'status', status,
        'items', coalesce(items, '[]'::json),
        'total', total, 'currency', currency,
        'created_at', marketd_ts(created_at), 'updated_at', marketd_ts(updated_at))::text
    $$;

-- One element of an order's "items"; aggregate with
-- json_agg(... ORDER BY product_id).
CREATE FUNCTION marketd_order_item_json(product_id bigint, title text, price bigint, quantity int)
    RETURNS json
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT json_build_object('product_id', product_id, 'title', title, 'price', price, 'quantity', quantity) $$;

-- Same signature and bytes as 0002's; the write functions and GET
-- /orders/{id} keep calling it.
CREATE OR REPLACE FUNCTION marketd_order_json(o orders) RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$
    SELECT marketd_order_doc(
        o.id, o.buyer_id, o.seller_id, o.status,
        (SELECT json_agg(marketd_order_item_json(i.product_id, i.title, i.price, i.quantity) ORDER BY i.product_id)
           FROM order_items i
          WHERE i.order_id = o.id AND i.created_at = o.created_at),
        o.total, o.currency, o.created_at, o.updated_at)
    $$;

-- ---- popular sellers ----------------------------------------------------

CREATE TABLE seller_popularity (
    seller_id  bigint PRIMARY KEY,
    city_id    bigint,          -- the seller's, as of the last refresh that touched the row
    orders_30d int NOT NULL
);
-- GET /sellers/popular and ?city_id=: the first `limit` entries of one of
-- these, then `limit` seller lookups.
CREATE INDEX seller_popularity_rank_idx ON seller_popularity (orders_30d DESC, seller_id) WHERE orders_30d > 0;
CREATE INDEX seller_popularity_city_rank_idx ON seller_popularity (city_id, orders_30d DESC, seller_id)
    WHERE orders_30d > 0;

CREATE TABLE seller_popularity_log (
    seller_id  bigint NOT NULL,
    created_at timestamptz NOT NULL, -- the order's (for a move: when it happened)
    delta      int NOT NULL CHECK (delta IN (-1, 0, 1))
);

CREATE TABLE seller_popularity_window (
    one          boolean PRIMARY KEY DEFAULT true CHECK (one),
    since        timestamptz NOT NULL,
    refreshed_at timestamptz NOT NULL
);

CREATE FUNCTION marketd_popularity_log_order() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' AND OLD.status = 'delivered' THEN
        INSERT INTO seller_popularity_log (seller_id, created_at, delta) VALUES (OLD.seller_id, OLD.created_at, -1);
    END IF;
    IF TG_OP <> 'DELETE' AND NEW.status = 'delivered' THEN
        INSERT INTO seller_popularity_log (seller_id, created_at, delta) VALUES (NEW.seller_id, NEW.created_at, 1);
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION marketd_popularity_log_seller() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    -- The per-city index knows the seller under its old city until the next
    -- refresh; a log row makes reads take the seller's live city meanwhile.
    INSERT INTO seller_popularity_log (seller_id, created_at, delta) VALUES (NEW.id, now(), 0);
    RETURN NULL;
END
$$;

-- An inserted order is logged only if it was created in the last 37 days:
-- older ones can never count (the window only moves forward), and `marketd
-- seed` COPYs 10M orders, 90 % of them delivered long ago. The 7 days of
-- margin over the window are why marketd_refresh_popular rebuilds instead of
-- folding when its window is older than that (all instances down for a week).
-- A cross-partition UPDATE of created_at fires the DELETE and INSERT triggers.
CREATE TRIGGER orders_popularity_insert AFTER INSERT ON orders
    FOR EACH ROW WHEN (NEW.status = 'delivered' AND NEW.created_at >= now() - interval '37 days')
    EXECUTE FUNCTION marketd_popularity_log_order();
CREATE TRIGGER orders_popularity_update AFTER UPDATE ON orders
    FOR EACH ROW WHEN ((OLD.status = 'delivered' OR NEW.status = 'delivered')
                       AND (OLD.status, OLD.seller_id, OLD.created_at) IS DISTINCT FROM
                           (NEW.status, NEW.seller_id, NEW.created_at))
    EXECUTE FUNCTION marketd_popularity_log_order();
CREATE TRIGGER orders_popularity_delete AFTER DELETE ON orders
    FOR EACH ROW WHEN (OLD.status = 'delivered')
    EXECUTE FUNCTION marketd_popularity_log_order();
CREATE TRIGGER sellers_popularity_move AFTER UPDATE OF city_id ON sellers
    FOR EACH ROW WHEN (OLD.city_id IS DISTINCT FROM NEW.city_id)
    EXECUTE FUNCTION marketd_popularity_log_seller();

-- Folds the log into the counts and slides the window to now() - 30 days;
-- rebuilds the counts from orders instead when there is no window (a fresh
-- schema, `marketd seed --force` or a test fixture TRUNCATEd every table)
-- or it is older than the insert trigger's 37 days. Returns what it did
-- ('rebuilt', 'folded', 'recent': another run finished less than 5 s ago,
-- 'busy': another run is under way), how many log rows it folded and how
-- many delivered orders left the window. Any number of instances may call
-- it at any time: one runs, the others return at once. It takes no lock
-- that traffic waits for (row locks on its own tables only).
CREATE FUNCTION marketd_refresh_popular(OUT action text, OUT folded bigint, OUT expired bigint)
    LANGUAGE plpgsql AS $$
DECLARE
    w seller_popularity_window;
BEGIN
    folded := 0;
    expired := 0;
    IF NOT pg_try_advisory_xact_lock(hashtextextended('marketd_refresh_popular', 7)) THEN
        action := 'busy';
        RETURN;
    END IF;
    SELECT * INTO w FROM seller_popularity_window;
    IF FOUND AND w.since >= now() - interval '37 days' THEN
        IF w.refreshed_at > now() - interval '5 seconds' THEN
            action := 'recent';
            RETURN;
        END IF;
        -- One statement, one snapshot (see the top). A log row counts if
        -- its order is inside the counted window [since, ...); the orders
        -- that left it, [since, until), are subtracted: those whose +1 was
        -- folded earlier and those folded just now.
        WITH bounds AS (SELECT w.since AS since, greatest(w.since, now() - interval '30 days') AS until),
             gone AS (DELETE FROM seller_popularity_log RETURNING seller_id, created_at, delta),
             changes AS (
                 SELECT g.seller_id, g.delta, false AS left_window FROM gone g, bounds b WHERE g.created_at >= b.since
                 UNION ALL
                 SELECT o.seller_id, -1, true FROM orders o, bounds b
                  WHERE o.status = 'delivered' AND o.created_at >= b.since AND o.created_at < b.until),
             per_seller AS (SELECT c.seller_id, sum(c.delta)::int AS n FROM changes c GROUP BY c.seller_id),
             counted AS (
                 INSERT INTO seller_popularity AS p (seller_id, city_id, orders_30d)
                 SELECT ps.seller_id, s.city_id, ps.n FROM per_seller ps LEFT JOIN sellers s ON s.id = ps.seller_id
                     ON CONFLICT (seller_id) DO UPDATE SET orders_30d = p.orders_30d + excluded.orders_30d,
                                                           city_id = excluded.city_id
                 RETURNING 1),
             slid AS (UPDATE seller_popularity_window x SET since = b.until, refreshed_at = now() FROM bounds b
                      RETURNING 1)
        SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM changes c WHERE c.left_window)
          INTO folded, expired;
        action := 'folded';
    ELSE
        -- From scratch, in one snapshot as well: the log rows it deletes are
        -- those whose orders it counts; later ones stay for the next fold.
        WITH bounds AS (SELECT now() - interval '30 days' AS since),
             gone AS (DELETE FROM seller_popularity_log RETURNING 1),
             fresh AS (SELECT o.seller_id, count(*)::int AS n FROM orders o, bounds b
                        WHERE o.status = 'delivered' AND o.created_at >= b.since GROUP BY o.seller_id),
             counted AS (
                 INSERT INTO seller_popularity AS p (seller_id, city_id, orders_30d)
                 SELECT f.seller_id, s.city_id, f.n FROM fresh f LEFT JOIN sellers s ON s.id = f.seller_id
                     ON CONFLICT (seller_id) DO UPDATE SET orders_30d = excluded.orders_30d, city_id = excluded.city_id
                 RETURNING 1),
             zeroed AS (UPDATE seller_popularity p SET orders_30d = 0
                         WHERE p.orders_30d <> 0 AND NOT EXISTS (SELECT 1 FROM fresh f WHERE f.seller_id = p.seller_id)
                        RETURNING 1),
             slid AS (INSERT INTO seller_popularity_window AS x (one, since, refreshed_at)
                      SELECT true, b.since, now() FROM bounds b
                          ON CONFLICT (one) DO UPDATE SET since = excluded.since, refreshed_at = excluded.refreshed_at
                      RETURNING 1)
        SELECT (SELECT count(*) FROM gone) INTO folded;
        action := 'rebuilt';
    END IF;
    -- Sellers whose count fell to zero leave the table; one with a log row
    -- not yet folded stays (the fold would only add it back).
    DELETE FROM seller_popularity p
     WHERE p.orders_30d = 0 AND NOT EXISTS (SELECT 1 FROM seller_popularity_log l WHERE l.seller_id = p.seller_id);
END
$$;

-- The counts of the data already there, exactly: the triggers above are in
-- place and hold orders and sellers against writes until this commits.
SELECT marketd_refresh_popular();

