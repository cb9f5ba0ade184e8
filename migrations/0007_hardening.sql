-- 0007: hardening (issue 10).
-- marketd: compatible-with-previous
-- (Same signature and outcomes as 0005's function: the binary of 0006 runs
-- on it unchanged; it only refuses one more kind of order.)
--
-- Self-orders (defect 10). A seller could order its own products: nothing
-- refused an order whose products belong to the buyer's own seller profile
-- (api.md "Orders": such an order → 422 naming items[i].product_id). The
-- rule lives in marketd_place_order, where the products are locked and
-- read anyway, so no path into the database can place such an order; C
-- only maps the outcome. The function is 0005's, with one check added in
-- its product loop (first, before the status and seller checks: the
-- product is the buyer's own whatever its state) and the items read WITH
-- ORDINALITY so that `field` names the item as the client sent it: C now
-- passes the items in request order (it still hashes the canonical,
-- sorted form for Idempotency-Key). A refusal is an 'invalid' outcome like
-- the others: recorded and replayed under an Idempotency-Key, nothing
-- taken. Same signature and OUT columns as 0005, hence CREATE OR REPLACE
-- (no DROP: callers keep working while this migration commits).
--
-- Existing self-orders are left alone: they are history, and cancelling
-- or fulfilling them follows the ordinary transitions.

CREATE OR REPLACE FUNCTION marketd_place_order(buyer bigint, items jsonb, idem_key text, request_hash text,
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
    own       bigint;
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
    -- The buyer's own seller profile, if any: its products are not for it.
    SELECT s.id INTO own FROM sellers s WHERE s.user_id = buyer;
    -- Lock the products in id order: two orders over the same products
    -- always queue in the same order and cannot deadlock.
    FOR p IN
        SELECT pr.id, pr.seller_id, pr.title, pr.price, pr.stock, pr.status, (w.value ->> 'quantity')::int AS qty,
               w.ord - 1 AS idx
          FROM jsonb_array_elements(items) WITH ORDINALITY w(value, ord)
          JOIN products pr ON pr.id = (w.value ->> 'product_id')::bigint
         ORDER BY pr.id
           FOR UPDATE OF pr
    LOOP
        n_found := n_found + 1;
        IF p.seller_id = own THEN
            outcome := 'invalid';
            detail := format('product %s is your own: a seller cannot order its own products', p.id);
            field := format('items[%s].product_id', p.idx);
            message := 'is a product of your own seller profile';
            EXIT;
        END IF;
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
