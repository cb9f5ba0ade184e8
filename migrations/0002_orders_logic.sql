-- 0002: idempotency keys and the order transactions (S6, B6).
--
-- Every order write is one PL/pgSQL call, i.e. one round trip and one
-- transaction: row locks are taken in id order (no deadlocks between two
-- orders sharing products), stock is only ever taken by a conditional
-- UPDATE under that lock (never below zero), and an error rolls back
-- everything, including the idempotency record. A *completed* refusal
-- (409 not enough stock, 422) changes no data but is recorded under its
-- Idempotency-Key, since api.md replays the first completed response.
--
-- The functions return (http_status, body) with the response body already
-- rendered, so that an idempotent replay returns byte-for-byte the first
-- answer and the C side has a single renderer for orders:
-- marketd_order_json.

CREATE TABLE idempotency_keys (
    user_id      bigint NOT NULL,
    key          text NOT NULL,
    request_hash text NOT NULL,
    http_status  int,           -- NULL while the first request is running
    body         text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key)
);
-- Expired keys are deleted in batches by marketd_cleanup_idempotency.
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);

CREATE FUNCTION marketd_ts(ts timestamptz) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') $$;

-- The JSON of one order (api.md "Order"), items by product id.
CREATE FUNCTION marketd_order_json(o orders) RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$
    SELECT json_build_object(
        'id', o.id, 'buyer_id', o.buyer_id, 'seller_id', o.seller_id, 'status', o.status,
        'items', coalesce((SELECT json_agg(json_build_object('product_id', i.product_id, 'title', i.title,
                                                             'price', i.price, 'quantity', i.quantity)
                                           ORDER BY i.product_id)
                           FROM order_items i
                           WHERE i.order_id = o.id AND i.created_at = o.created_at), '[]'::json),
        'total', o.total, 'currency', o.currency,
        'created_at', marketd_ts(o.created_at), 'updated_at', marketd_ts(o.updated_at))::text
    $$;

CREATE FUNCTION marketd_problem(status int, title text, detail text, extra jsonb DEFAULT '{}') RETURNS text
    LANGUAGE sql IMMUTABLE
    AS $$ SELECT (jsonb_build_object('type', 'about:blank', 'title', title, 'status', status, 'detail', detail)
                  || extra)::text $$;

-- POST /orders. `items` is a JSON array of {"product_id", "quantity"},
-- already validated by the server (1..50 distinct products, quantity
-- 1..1000). `idem_key` NULL means no Idempotency-Key header.
CREATE FUNCTION marketd_place_order(buyer bigint, items jsonb, idem_key text, request_hash text,
                                    OUT http_status int, OUT body text, OUT replayed boolean)
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
    IF idem_key IS NOT NULL THEN
        -- A concurrent request with the same key blocks here until the
        -- first one commits, then sees its row.
        INSERT INTO idempotency_keys (user_id, key, request_hash) VALUES (buyer, idem_key, request_hash)
            ON CONFLICT (user_id, key) DO NOTHING;
        IF NOT FOUND THEN
            SELECT * INTO prev FROM idempotency_keys k WHERE k.user_id = buyer AND k.key = idem_key;
            IF prev.created_at < now() - interval '24 hours' THEN
                -- Expired but not yet cleaned up: the key starts afresh.
                UPDATE idempotency_keys k SET request_hash = marketd_place_order.request_hash, http_status = NULL,
                       body = NULL, created_at = now()
                 WHERE k.user_id = buyer AND k.key = idem_key;
            ELSIF prev.request_hash <> marketd_place_order.request_hash THEN
                http_status := 422;
                body := marketd_problem(422, 'Unprocessable Content',
                                        'Idempotency-Key was already used with a different request body',
                                        jsonb_build_object('errors', jsonb_build_array(jsonb_build_object(
                                            'field', 'Idempotency-Key', 'message', 'reused with a different body'))));
                RETURN;
            ELSIF prev.http_status IS NULL THEN
                http_status := 409;
                body := marketd_problem(409, 'Conflict', 'a request with this Idempotency-Key is still being processed');
                RETURN;
            ELSE
                http_status := prev.http_status;
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
            http_status := 422;
            body := marketd_problem(422, 'Unprocessable Content', format('product %s is not active', p.id),
                                    jsonb_build_object('errors', jsonb_build_array(jsonb_build_object(
                                        'field', 'items', 'message', format('product %s is not active', p.id)))));
            EXIT;
        END IF;
        IF seller IS NULL THEN
            seller := p.seller_id;
        ELSIF seller <> p.seller_id THEN
            http_status := 422;
            body := marketd_problem(422, 'Unprocessable Content', 'all items of an order must be of one seller',
                                    jsonb_build_object('errors', jsonb_build_array(jsonb_build_object(
                                        'field', 'items', 'message', 'products of different sellers'))));
            EXIT;
        END IF;
        IF p.stock < p.qty THEN
            http_status := 409;
            body := marketd_problem(409, 'Conflict',
                                    format('not enough stock for product %s: %s requested, %s available',
                                           p.id, p.qty, p.stock),
                                    jsonb_build_object('product_id', p.id, 'available', p.stock));
            EXIT;
        END IF;
        total := total + p.price * p.qty;
    END LOOP;
    IF http_status IS NULL AND n_found <> n_want THEN
        SELECT min((w.value ->> 'product_id')::bigint) INTO want
          FROM jsonb_array_elements(items) w
         WHERE NOT EXISTS (SELECT 1 FROM products pr WHERE pr.id = (w.value ->> 'product_id')::bigint);
        http_status := 422;
        body := marketd_problem(422, 'Unprocessable Content', format('product %s does not exist', want.min),
                                jsonb_build_object('errors', jsonb_build_array(jsonb_build_object(
                                    'field', 'items', 'message', format('product %s does not exist', want.min)))));
    END IF;

    IF http_status IS NULL THEN
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
        http_status := 201;
        body := marketd_order_json(o);
    END IF;

    IF idem_key IS NOT NULL THEN
        UPDATE idempotency_keys k SET http_status = marketd_place_order.http_status, body = marketd_place_order.body
         WHERE k.user_id = buyer AND k.key = idem_key;
    END IF;
END
$$;

-- POST /orders/{id}/cancel (role 'buyer') and PATCH /orders/{id}
-- (role 'seller'). Transitions: new → confirmed → shipped → delivered;
-- new | confirmed → cancelled (stock returned).
CREATE FUNCTION marketd_order_transition(order_id bigint, actor bigint, role text, new_status text,
                                         OUT http_status int, OUT body text)
    LANGUAGE plpgsql AS $$
DECLARE
    o         orders;
    is_buyer  boolean;
    is_seller boolean;
    allowed   boolean;
BEGIN
    SELECT x.* INTO o FROM orders x
     WHERE x.id = order_id
       AND x.created_at >= marketd_order_month(order_id)
       AND x.created_at < marketd_order_month(order_id) + interval '1 month'
       FOR UPDATE;
    IF NOT FOUND THEN
        http_status := 404;
        body := marketd_problem(404, 'Not Found', format('order %s not found', order_id));
        RETURN;
    END IF;
    is_buyer := o.buyer_id = actor;
    is_seller := o.seller_id = (SELECT s.id FROM sellers s WHERE s.user_id = actor);
    IF NOT is_buyer AND NOT coalesce(is_seller, false) THEN
        -- Existence is not revealed to strangers.
        http_status := 404;
        body := marketd_problem(404, 'Not Found', format('order %s not found', order_id));
        RETURN;
    END IF;
    IF role = 'buyer' AND NOT is_buyer THEN
        http_status := 403;
        body := marketd_problem(403, 'Forbidden', 'only the buyer may cancel an order this way');
        RETURN;
    END IF;
    IF role = 'seller' AND NOT coalesce(is_seller, false) THEN
        http_status := 403;
        body := marketd_problem(403, 'Forbidden', 'only the seller may change the status of an order');
        RETURN;
    END IF;
    allowed := (o.status, new_status) IN (('new', 'confirmed'), ('confirmed', 'shipped'), ('shipped', 'delivered'),
                                          ('new', 'cancelled'), ('confirmed', 'cancelled'));
    IF NOT allowed THEN
        http_status := 409;
        body := marketd_problem(409, 'Conflict', format('an order in status %s cannot become %s', o.status, new_status),
                                jsonb_build_object('current_status', o.status));
        RETURN;
    END IF;
    IF new_status = 'cancelled' THEN
        UPDATE products pr SET stock = pr.stock + i.quantity, updated_at = now()
          FROM order_items i
         WHERE i.order_id = o.id AND i.created_at = o.created_at AND pr.id = i.product_id;
    END IF;
    UPDATE orders x SET status = new_status, updated_at = now()
     WHERE x.id = o.id AND x.created_at = o.created_at
     RETURNING * INTO o;
    http_status := 200;
    body := marketd_order_json(o);
END
$$;

-- Deletes up to `batch` idempotency keys older than 24 hours; returns how
-- many. Called periodically by the server.
CREATE FUNCTION marketd_cleanup_idempotency(batch int) RETURNS int
    LANGUAGE sql AS $$
    WITH gone AS (
        DELETE FROM idempotency_keys
         WHERE ctid = ANY (ARRAY(SELECT ctid FROM idempotency_keys
                                  WHERE created_at < now() - interval '24 hours' LIMIT batch))
     RETURNING 1)
    SELECT count(*)::int FROM gone
    $$;
