-- 0008: order partition retention and the look-ahead measure (issue 9).
-- marketd: compatible-with-previous
--
-- Adds two functions and changes nothing else, so the binary of 0007 runs
-- on this schema unchanged (docs/deploy.md "Migrations: expand and
-- contract"). Both are called by the hourly partition job of every
-- instance (src/api/ops.c).

-- Detaches and drops the partitions of orders and order_items that lie
-- entirely before now() - keep_months months (their upper bound is at or
-- before that instant), oldest first, and returns their names.
-- keep_months <= 0 keeps everything (ORDER_RETENTION_MONTHS=0, the
-- default). Whatever keep_months says, nothing younger than 31 days goes:
-- the popular-sellers counts (0006) slide over the last 30 days of orders.
-- The bound is read from the catalog, not from the name, so partitions made
-- by hand count too; a DEFAULT partition (no upper bound) is never dropped.
-- DETACH and DROP take ACCESS EXCLUSIVE on the parent for an instant: the
-- caller sets lock_timeout, and a run that times out tries again next hour.
CREATE FUNCTION marketd_drop_old_partitions(keep_months int) RETURNS text[]
    LANGUAGE plpgsql AS $$
DECLARE
    cutoff  timestamptz;
    p       record;
    dropped text[] := '{}';
BEGIN
    IF keep_months IS NULL OR keep_months <= 0 THEN
        RETURN dropped;
    END IF;
    cutoff := least(now() - make_interval(months => keep_months), now() - interval '31 days');
    FOR p IN
        SELECT b.parent, b.part, b.upper
          FROM (SELECT parent.relname AS parent, child.relname AS part,
                       substring(pg_get_expr(child.relpartbound, child.oid) FROM 'TO \(''([^'']+)''\)')::timestamptz
                           AS upper
                  FROM pg_inherits i
                  JOIN pg_class parent ON parent.oid = i.inhparent
                  JOIN pg_class child ON child.oid = i.inhrelid
                 WHERE i.inhparent IN ('orders'::regclass, 'order_items'::regclass)) b
         WHERE b.upper IS NOT NULL AND b.upper <= cutoff
         ORDER BY b.upper, b.parent
    LOOP
        EXECUTE format('ALTER TABLE %I DETACH PARTITION %I', p.parent, p.part);
        EXECUTE format('DROP TABLE %I', p.part);
        dropped := dropped || p.part::text;
    END LOOP;
    RETURN dropped;
END
$$;

-- Whole months of order partitions (orders and order_items, named as
-- marketd_ensure_partitions names them) that exist after the current
-- month without a gap: 3 after a successful upkeep run. The gauge
-- marketd_order_partitions_ahead_months reports it and an alert fires below
-- 2, i.e. when upkeep has failed for about a month and inserts are at most
-- two months from failing (an order needs its month's partition).
CREATE FUNCTION marketd_order_partitions_ahead() RETURNS int
    LANGUAGE plpgsql STABLE AS $$
DECLARE
    base  timestamp := date_trunc('month', now() AT TIME ZONE 'UTC');
    month text;
    n     int := 0;
BEGIN
    LOOP
        month := to_char(base + make_interval(months => n + 1), 'YYYYMM');
        EXIT WHEN n >= 1200 OR to_regclass('orders_' || month) IS NULL
                  OR to_regclass('order_items_' || month) IS NULL;
        n := n + 1;
    END LOOP;
    RETURN n;
END
$$;
