-- 0005: SQL returns domain outcomes; C alone speaks HTTP.
--
-- Why. Until 0004 the order functions returned (http_status, body) with the
-- RFC 9457 problem already rendered by marketd_problem, and
-- marketd_seller_patch returned an http_status. HTTP was thus decided in
-- two languages: statuses, titles and problem shapes lived partly in
-- migrations, C relayed an opaque body it could neither log by cause nor
-- render like its own errors, and changing the error format meant a schema
-- migration. The project now has one convention: SQL says what happened in
-- domain terms, C maps that outcome to its error codes and renders the
-- HTTP answer (status, problem JSON, headers) with its one renderer.
--
-- The contract C relies on. `outcome` is exactly one of these strings
-- (idempotency_keys.outcome is CHECKed against the same list):
--   'ok'              success. body = the order JSON (marketd_order_json);
--                     detail/field/message/extra NULL. C answers 201 for a
--                     placed order, 200 for a transition or a seller patch.
--   'unauthenticated' the token's user does not exist        (C: 401)
--   'forbidden'       the actor may not do this              (C: 403)
--   'not_found'       no such order/seller, or not visible   (C: 404)
--   'conflict'        the state forbids it (stock, status)   (C: 409)
--   'invalid'         a request value is wrong; field and message name it
--                     (the problem's errors[0])              (C: 422)
-- For the order functions every non-ok outcome sets `detail` to the
-- problem "detail" text, byte-identical to what 0004 rendered (the
-- integration tests compare it), and `extra` to the problem's extension
-- members as a jsonb object ({"product_id": 5, "available": 2} for missing
-- stock, {"current_status": "new"} for a refused transition), else NULL;
-- body is then NULL. `replayed` is true only for an answer read back from
-- idempotency_keys (C says so: Idempotent-Replayed), always false for a
-- transition. marketd_seller_patch has no detail/extra: its outcome is
-- 'ok' (seller row filled), 'not_found', 'forbidden' or 'invalid'
-- (field, message), as its http_status was.
--
-- Idempotency keys store the outcome columns instead of a rendered answer:
-- a replay returns the first answer's outcome and C renders it the way it
-- renders everything else. `body` keeps only a success's order JSON, so a
-- replayed order is still the very same document. Recorded refusals are
-- unchanged (a completed 'conflict' for stock or 'invalid' for products is
-- recorded and replayed; unauthenticated, a key in progress and a key
-- reused with another body are answered without touching the key row).
-- Existing rows are converted below from their problem JSON.
--
-- Two fixes ride along, since these functions are rewritten anyway:
--  * deadlock: a cancel returned stock with UPDATE ... FROM order_items,
--    whose row order is the plan's, while marketd_place_order (and
--    marketd_seller_patch) lock products in id order. Two transactions
--    taking the same rows in opposite orders deadlock, so a cancel now
--    locks the order's products in id order first.
--  * cancel at the stock ceiling: products.stock was CHECKed BETWEEN 0 AND
--    1000000; a seller who raised stock to 1000000 after an order made
--    that order impossible to cancel (returning its stock broke the
--    CHECK, the whole call failed). The bound of 1000000 is an API limit
--    on what a client may write, enforced by C when it validates a request
--    (FIELD_STOCK_MAX); the table keeps only the invariant no code path
--    may break, stock >= 0, so a cancel from new/confirmed always
--    succeeds, even when it takes a product above 1000000.
--
-- Applied by `marketd migrate` in one transaction. It takes ACCESS
-- EXCLUSIVE on idempotency_keys and products: a long transaction on
-- either would make it, and every request behind it, queue; the
-- lock_timeout makes it fail instead (nothing applied, rerun migrate).
-- The binary must be the one that reads outcomes: 0004's callers select
-- http_status, which no longer exists.

SET LOCAL lock_timeout = '5s';

-- ---- idempotency_keys: outcome columns instead of (http_status, body) ----

ALTER TABLE idempotency_keys
    ADD COLUMN outcome text CHECK (outcome IN ('ok', 'unauthenticated', 'forbidden', 'not_found',
                                              'conflict', 'invalid')),  -- NULL while running
    ADD COLUMN detail  text,
    ADD COLUMN field   text,
    ADD COLUMN message text,
    ADD COLUMN extra   jsonb;

-- marketd_place_order only ever recorded 201, 409 and 422 (401 is answered
-- before the key is touched); the other refusal statuses are mapped for
-- completeness. Any other status cannot have been written by 0002/0004:
-- stop rather than invent an outcome for it.
DO $$
DECLARE
    bad record;
BEGIN
    SELECT k.user_id, k.key, k.http_status INTO bad FROM idempotency_keys k
     WHERE k.http_status NOT IN (201, 401, 403, 404, 409, 422) LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'idempotency key (%, %) holds HTTP status %, which has no outcome',
                        bad.user_id, bad.key, bad.http_status;
    END IF;
END
$$;

-- A success keeps its order JSON. A refusal's problem JSON is split into
-- detail, errors[0] and the remaining extension members; its body goes.
-- A row without a status stays without an outcome: NULL still means "in
-- progress" (none should be left: the ALTER above waited for every running
-- request).
UPDATE idempotency_keys k SET outcome = 'ok' WHERE k.http_status = 201;
UPDATE idempotency_keys k
   SET outcome = CASE k.http_status WHEN 401 THEN 'unauthenticated' WHEN 403 THEN 'forbidden'
                                    WHEN 404 THEN 'not_found' WHEN 409 THEN 'conflict'
                                    WHEN 422 THEN 'invalid' END,
       detail  = k.body::jsonb ->> 'detail',
       field   = k.body::jsonb -> 'errors' -> 0 ->> 'field',
       message = k.body::jsonb -> 'errors' -> 0 ->> 'message',
       extra   = nullif(k.body::jsonb - 'type' - 'title' - 'status' - 'detail' - 'errors', '{}'::jsonb),
       body    = NULL
 WHERE k.http_status <> 201;

ALTER TABLE idempotency_keys DROP COLUMN http_status;

-- ---- products.stock: only stock >= 0 in the table ----
--
-- 0001 declared the check inline, so PostgreSQL named it
-- products_stock_check; the new one keeps the name. NOT VALID skips a scan
-- of every product under this ACCESS EXCLUSIVE lock, i.e. with the whole
-- catalogue blocked (measured on 1,000,000 synthetic products, 650 MB:
-- 0.4 s with a warm cache, more when cold; the benchmark has 1,000,000
-- products). The scan would prove nothing: the old, validated constraint
-- already proved stock BETWEEN 0 AND 1000000 for every existing row, which
-- implies stock >= 0, and a NOT VALID check is enforced on every INSERT
-- and UPDATE from now on exactly like a validated one. (ALTER TABLE ...
-- VALIDATE CONSTRAINT takes only SHARE UPDATE EXCLUSIVE: a later migration
-- of its own can mark it validated without blocking traffic.)
ALTER TABLE products
    DROP CONSTRAINT products_stock_check,
    ADD CONSTRAINT products_stock_check CHECK (stock >= 0) NOT VALID;

-- ---- the functions: OUT columns change, so DROP and CREATE ----

DROP FUNCTION marketd_place_order(bigint, jsonb, text, text);
DROP FUNCTION marketd_order_transition(bigint, bigint, text, text);
DROP FUNCTION marketd_seller_patch(bigint, bigint, text, text, bigint, bigint);
-- Nothing renders problems in SQL any more.
DROP FUNCTION marketd_problem(int, text, text, jsonb);

-- POST /orders. `items` is a JSON array of {"product_id", "quantity"},
-- already validated by the server (1..50 distinct products, quantity
-- 1..1000). `idem_key` NULL means no Idempotency-Key header. Behaviour is
-- 0004's; only the shape of the answer changed (see the top).
CREATE FUNCTION marketd_place_order(buyer bigint, items jsonb, idem_key text, request_hash text,
                                    OUT outcome text, OUT detail text, OUT field text, OUT message text,
                                    OUT extra jsonb, OUT body text, OUT replayed boolean)
    LANGUAGE plpgsql AS $$
DECLARE
    prev      idempotency_keys;
    want      record;
    p         record;
    n_want    int;
    n_found   int := 0;
    seller    bigint;
    total     bigint := 0;
    o         orders;
BEGIN
    replayed := false;
    -- A valid signature is not an account: the token's user may be gone.
    IF NOT EXISTS (SELECT 1 FROM users u WHERE u.id = buyer) THEN
        outcome := 'unauthenticated';
        detail := 'the token''s user does not exist';
        RETURN;
    END IF;
    IF idem_key IS NOT NULL THEN
        -- One request per (user, key) at a time: a retry that arrives while
        -- the first is still inside its transaction is refused at once
        -- (api.md: 409) instead of queueing on the first one's row lock and
        -- holding a database connection meanwhile. The lock ends with the
        -- transaction, i.e. exactly when the first one's row is committed.
        IF NOT pg_try_advisory_xact_lock(hashtextextended(buyer::text || ':' || idem_key, 7)) THEN
            outcome := 'conflict';
            detail := 'a request with this Idempotency-Key is still being processed';
            RETURN;
        END IF;
        INSERT INTO idempotency_keys (user_id, key, request_hash) VALUES (buyer, idem_key, request_hash)
            ON CONFLICT (user_id, key) DO NOTHING;
        IF NOT FOUND THEN
            SELECT * INTO prev FROM idempotency_keys k WHERE k.user_id = buyer AND k.key = idem_key;
            IF prev.created_at < now() - interval '24 hours' THEN
                -- Expired but not yet cleaned up: the key starts afresh.
                UPDATE idempotency_keys k
                   SET request_hash = marketd_place_order.request_hash, outcome = NULL, detail = NULL,
                       field = NULL, message = NULL, extra = NULL, body = NULL, created_at = now()
                 WHERE k.user_id = buyer AND k.key = idem_key;
            ELSIF prev.request_hash <> marketd_place_order.request_hash THEN
                outcome := 'invalid';
                detail := 'Idempotency-Key was already used with a different request body';
                field := 'Idempotency-Key';
                message := 'reused with a different body';
                RETURN;
            ELSIF prev.outcome IS NULL THEN
                outcome := 'conflict';
                detail := 'a request with this Idempotency-Key is still being processed';
                RETURN;
            ELSE
                outcome := prev.outcome;
                detail := prev.detail;
                field := prev.field;
                message := prev.message;
                extra := prev.extra;
                body := prev.body;
                replayed := true;
                RETURN;
            END IF;
        END IF;
    END IF;

    n_want := jsonb_array_length(items);
    -- Lock the products in id order: two orders over the same products
    -- always queue in the same order and cannot deadlock.
    FOR p IN
        SELECT pr.id, pr.seller_id, pr.title, pr.price, pr.stock, pr.status, (w.value ->> 'quantity')::int AS qty
          FROM jsonb_array_elements(items) w
          JOIN products pr ON pr.id = (w.value ->> 'product_id')::bigint
         ORDER BY pr.id
           FOR UPDATE OF pr
    LOOP
        n_found := n_found + 1;
        IF p.status <> 'active' THEN
            outcome := 'invalid';
            detail := format('product %s is not active', p.id);
            field := 'items';
            message := format('product %s is not active', p.id);
            EXIT;
        END IF;
        IF seller IS NULL THEN
            seller := p.seller_id;
        ELSIF seller <> p.seller_id THEN
            outcome := 'invalid';
            detail := 'all items of an order must be of one seller';
            field := 'items';
            message := 'products of different sellers';
            EXIT;
        END IF;
        IF p.stock < p.qty THEN
            outcome := 'conflict';
            detail := format('not enough stock for product %s: %s requested, %s available', p.id, p.qty, p.stock);
            extra := jsonb_build_object('product_id', p.id, 'available', p.stock);
            EXIT;
        END IF;
        total := total + p.price * p.qty;
    END LOOP;
    IF outcome IS NULL AND n_found <> n_want THEN
        SELECT min((w.value ->> 'product_id')::bigint) INTO want
          FROM jsonb_array_elements(items) w
         WHERE NOT EXISTS (SELECT 1 FROM products pr WHERE pr.id = (w.value ->> 'product_id')::bigint);
        outcome := 'invalid';
        detail := format('product %s does not exist', want.min);
        field := 'items';
        message := format('product %s does not exist', want.min);
    END IF;

    IF outcome IS NULL THEN
        -- Every row is locked and checked: take the stock. The condition is
        -- kept anyway so that no code path can ever drive stock negative.
        UPDATE products pr SET stock = pr.stock - (w.value ->> 'quantity')::int, updated_at = now()
          FROM jsonb_array_elements(items) w
         WHERE pr.id = (w.value ->> 'product_id')::bigint AND pr.stock >= (w.value ->> 'quantity')::int;
        GET DIAGNOSTICS n_found = ROW_COUNT;
        IF n_found <> n_want THEN
            RAISE EXCEPTION 'stock changed under a row lock' USING ERRCODE = 'P0001';
        END IF;
        INSERT INTO orders (id, buyer_id, seller_id, status, total, currency, created_at, updated_at)
             VALUES (marketd_order_id(now(), nextval('orders_id_seq')), buyer, seller, 'new', total, 'RUB', now(), now())
          RETURNING * INTO o;
        INSERT INTO order_items (order_id, created_at, product_id, title, price, quantity)
             SELECT o.id, o.created_at, pr.id, pr.title, pr.price, (w.value ->> 'quantity')::int
               FROM jsonb_array_elements(items) w
               JOIN products pr ON pr.id = (w.value ->> 'product_id')::bigint;
        outcome := 'ok';
        body := marketd_order_json(o);
    END IF;

    -- A completed answer, success or refusal, is what a retry replays.
    IF idem_key IS NOT NULL THEN
        UPDATE idempotency_keys k
           SET outcome = marketd_place_order.outcome, detail = marketd_place_order.detail,
               field = marketd_place_order.field, message = marketd_place_order.message,
               extra = marketd_place_order.extra, body = marketd_place_order.body
         WHERE k.user_id = buyer AND k.key = idem_key;
    END IF;
END
$$;

-- POST /orders/{id}/cancel (role 'buyer') and PATCH /orders/{id}
-- (role 'seller'). Transitions: new → confirmed → shipped → delivered;
-- new | confirmed → cancelled (stock returned). Same OUT columns as
-- marketd_place_order so that C reads both the same way; replayed is
-- always false (no idempotency keys here).
CREATE FUNCTION marketd_order_transition(order_id bigint, actor bigint, role text, new_status text,
                                         OUT outcome text, OUT detail text, OUT field text, OUT message text,
                                         OUT extra jsonb, OUT body text, OUT replayed boolean)
    LANGUAGE plpgsql AS $$
DECLARE
    o         orders;
    is_buyer  boolean;
    is_seller boolean;
    allowed   boolean;
BEGIN
    replayed := false;
    SELECT x.* INTO o FROM orders x
     WHERE x.id = order_id
       AND x.created_at >= marketd_order_month(order_id)
       AND x.created_at < marketd_order_month(order_id) + interval '1 month'
       FOR UPDATE;
    IF NOT FOUND THEN
        outcome := 'not_found';
        detail := format('order %s not found', order_id);
        RETURN;
    END IF;
    is_buyer := o.buyer_id = actor;
    is_seller := o.seller_id = (SELECT s.id FROM sellers s WHERE s.user_id = actor);
    IF NOT is_buyer AND NOT coalesce(is_seller, false) THEN
        -- Existence is not revealed to strangers: the very same answer.
        outcome := 'not_found';
        detail := format('order %s not found', order_id);
        RETURN;
    END IF;
    IF role = 'buyer' AND NOT is_buyer THEN
        outcome := 'forbidden';
        detail := 'only the buyer may cancel an order this way';
        RETURN;
    END IF;
    IF role = 'seller' AND NOT coalesce(is_seller, false) THEN
        outcome := 'forbidden';
        detail := 'only the seller may change the status of an order';
        RETURN;
    END IF;
    allowed := (o.status, new_status) IN (('new', 'confirmed'), ('confirmed', 'shipped'), ('shipped', 'delivered'),
                                          ('new', 'cancelled'), ('confirmed', 'cancelled'));
    IF NOT allowed THEN
        outcome := 'conflict';
        detail := format('an order in status %s cannot become %s', o.status, new_status);
        extra := jsonb_build_object('current_status', o.status);
        RETURN;
    END IF;
    IF new_status = 'cancelled' THEN
        -- Lock the products in id order before touching them, the order
        -- marketd_place_order and marketd_seller_patch lock them in: the
        -- UPDATE below visits rows in whatever order its plan yields and,
        -- left to take its own locks, could deadlock with an order being
        -- placed over the same products.
        PERFORM 1 FROM products p
          WHERE p.id IN (SELECT i.product_id FROM order_items i
                          WHERE i.order_id = o.id AND i.created_at = o.created_at)
          ORDER BY p.id
            FOR UPDATE OF p;
        -- No upper bound on stock in the table (see the top): returning the
        -- stock of a new or confirmed order always succeeds.
        UPDATE products pr SET stock = pr.stock + i.quantity, updated_at = now()
          FROM order_items i
         WHERE i.order_id = o.id AND i.created_at = o.created_at AND pr.id = i.product_id;
    END IF;
    UPDATE orders x SET status = new_status, updated_at = now()
     WHERE x.id = o.id AND x.created_at = o.created_at
     RETURNING * INTO o;
    outcome := 'ok';
    body := marketd_order_json(o);
END
$$;

-- PATCH /sellers/{id}: 0003's function, with outcome in place of
-- http_status ('ok', 'not_found', 'forbidden', 'invalid' with field and
-- message); the seller row follows in the column order of src/api/sellers.c
-- (SELLER_COLS). Why it is a function at all, and its locking, see 0003.
CREATE FUNCTION marketd_seller_patch(actor bigint, seller bigint, new_name text, new_description text,
                                     new_city bigint, new_district bigint,
                                     OUT outcome text, OUT field text, OUT message text,
                                     OUT id bigint, OUT user_id bigint, OUT name text, OUT description text,
                                     OUT city_id bigint, OUT district_id bigint, OUT rating numeric,
                                     OUT created_at timestamp)
    LANGUAGE plpgsql AS $$
DECLARE
    s        sellers;
    city     bigint;
    district bigint;
BEGIN
    SELECT x.* INTO s FROM sellers x WHERE x.id = seller FOR UPDATE;
    IF NOT FOUND THEN
        outcome := 'not_found';
        RETURN;
    END IF;
    IF s.user_id <> actor THEN
        outcome := 'forbidden';
        RETURN;
    END IF;
    city := coalesce(new_city, s.city_id);
    district := coalesce(new_district, s.district_id);
    IF new_city IS NOT NULL AND NOT EXISTS (SELECT 1 FROM cities c WHERE c.id = new_city) THEN
        outcome := 'invalid';
        field := 'city_id';
        message := 'is not a known city';
        RETURN;
    END IF;
    IF new_district IS NULL AND new_city IS NOT NULL AND new_city <> s.city_id THEN
        -- The old district belongs to the old city.
        outcome := 'invalid';
        field := 'district_id';
        message := 'is required when city_id changes';
        RETURN;
    END IF;
    IF new_district IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM districts d WHERE d.id = new_district AND d.city_id = city) THEN
        outcome := 'invalid';
        field := 'district_id';
        message := format('is not a district of city %s', city);
        RETURN;
    END IF;

    UPDATE sellers x
       SET name = coalesce(new_name, x.name),
           description = coalesce(new_description, x.description),
           city_id = city,
           district_id = district
     WHERE x.id = s.id
    RETURNING x.id, x.user_id, x.name, x.description, x.city_id, x.district_id, x.rating,
              x.created_at AT TIME ZONE 'UTC'
         INTO id, user_id, name, description, city_id, district_id, rating, created_at;

    IF city IS DISTINCT FROM s.city_id OR district IS DISTINCT FROM s.district_id THEN
        -- A product's JSON shows its city/district: it changed, so does
        -- its updated_at. Rows are locked in id order first, the order
        -- marketd_place_order locks them in, so the two cannot deadlock.
        PERFORM 1 FROM products p WHERE p.seller_id = s.id ORDER BY p.id FOR UPDATE;
        UPDATE products p
           SET city_id = city, district_id = district, updated_at = now()
         WHERE p.seller_id = s.id;
    END IF;
    outcome := 'ok';
END
$$;
