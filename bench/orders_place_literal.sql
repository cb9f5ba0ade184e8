-- pgbench reference for POST /api/v1/orders (bench/orders.sh): the order
-- function with one item, quantity 1, as issue 3 words it. The product is
-- drawn uniformly from the same pre-selected set as the wrk run's
-- (bench_orders.pids, built by bench/orders.sh: active, stock >= 100,
-- restocked before each round), the buyer from the same users whose tokens
-- wrk sends. The set lookup is one primary-key probe of a small table.
-- Variables (-D): buyer_lo, buyer_hi, npids.
\set buyer random(:buyer_lo, :buyer_hi)
\set n random(1, :npids)
SELECT * FROM marketd_place_order(:buyer, ('[{"product_id":' || (SELECT pid FROM bench_orders.pids WHERE n = :n) || ',"quantity":1}]')::jsonb, NULL, NULL);
