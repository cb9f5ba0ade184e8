-- 0004: POST /orders fixes (B6, B8), redefining marketd_place_order of
-- 0002 (same signature):
--  * a token whose user no longer exists gets 401, like every other
--    authenticated route, instead of an order with a dangling buyer_id;
--  * a retry with the Idempotency-Key of a request still in progress gets
--    409 at once (a transaction-scoped advisory lock on user and key), as
--    api.md says, instead of waiting on the first request's row lock.

-- POST /orders. `items` is a JSON array of {"product_id", "quantity"},
-- already validated by the server (1..50 distinct products, quantity
-- 1..1000). `idem_key` NULL means no Idempotency-Key header.
CREATE OR REPLACE FUNCTION marketd_place_order(buyer bigint, items jsonb, idem_key text, request_hash text,
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
    -- A valid signature is not an account: the token's user may be gone.
    IF NOT EXISTS (SELECT 1 FROM users u WHERE u.id = buyer) THEN
        http_status := 401;
        body := marketd_problem(401, 'Unauthorized', 'the token''s user does not exist');
        RETURN;
    END IF;
    IF idem_key IS NOT NULL THEN
        -- One request per (user, key) at a time: a retry that arrives while
        -- the first is still inside its transaction gets 409 at once
        -- (api.md) instead of queueing on the first one's row lock and
        -- holding a database connection meanwhile. The lock ends with the
        -- transaction, i.e. exactly when the first one's row is committed.
        IF NOT pg_try_advisory_xact_lock(hashtextextended(buyer::text || ':' || idem_key, 7)) THEN
            http_status := 409;
            body := marketd_problem(409, 'Conflict', 'a request with this Idempotency-Key is still being processed');
            RETURN;
        END IF;
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

