-- 0009: stored order documents and one generic plan for order history
-- (issue 11, deliverable 3; S6, B6).
-- marketd: compatible-with-previous
-- (Only adds: a nullable column, a trigger, a function; marketd_place_order
-- keeps 0007's signature and results. The binary of 0008 never reads doc,
-- and every write it makes goes through the functions and the trigger
-- below, so it runs on this schema unchanged.)
--
-- GET /orders rendered every order of a page from its row and its items
-- (0006: a LATERAL json_agg per order): ~4.5x the cost of the page alone at
-- bench scale. And as a prepared statement on the partitioned root, the
-- plan cache kept choosing custom plans (the pruned custom plan looks
-- cheaper than the 29-partition generic one), i.e. it planned the
-- statement on every execution: the page alone ran 2.5x faster with a
-- generic plan (docs/indexes.md O1).
--
-- 1. orders.doc: marketd_order_json(o), stored. NULL means "not stored":
--    every reader falls back to computing it (coalesce(o.doc,
--    marketd_order_json(o))), so rows written before this migration, or
--    by anything that leaves doc NULL, read exactly as before. A non-NULL
--    doc is always byte for byte marketd_order_json(o):
--    - marketd_place_order (below) renders its answer before inserting the
--      order and stores it with the row;
--    - every other UPDATE of an order that does not itself write doc
--      (marketd_order_transition, cancellations, a manual UPDATE) has doc
--      recomputed from the new row and its items by orders_doc_sync;
--    - an UPDATE that writes doc owns it: `marketd backfill order-docs`
--      writes marketd_order_json(o), a test or an operator may write NULL
--      (forget: reads compute it);
--    - INSERT leaves doc as given (NULL by every writer but the functions
--      above): the items of an order come after the order row.
--    Items are written once, with their order (marketd_place_order, the
--    seeder, fixtures); an UPDATE or DELETE of order_items sets the doc
--    of their orders back to NULL (orders_items_doc_forget). Inserting
--    items into an order that already has a stored doc is not something
--    marketd does; whoever does it by hand must set that doc to NULL.
-- 2. marketd_order_page: the page of GET /orders, one PL/pgSQL function
--    run with plan_cache_mode = force_generic_plan, so its two statements
--    (buyer, seller) are planned once per connection and pruned at
--    executor start. The rest of the application keeps the default
--    (auto): some product statements need custom plans (docs/indexes.md).
--
-- Adding a nullable column without a default does not rewrite the table;
-- ALTER TABLE takes ACCESS EXCLUSIVE on orders and its partitions for an
-- instant, CREATE TRIGGER SHARE ROW EXCLUSIVE on orders and order_items
-- until commit: order writes wait for this migration (milliseconds),
-- reads do not wait for the triggers. lock_timeout makes it fail instead
-- of queueing traffic behind a long transaction (rerun migrate).
-- Existing orders keep doc NULL: `marketd backfill order-docs` fills them
-- in small batches afterwards (docs/deploy.md).

SET LOCAL lock_timeout = '5s';

ALTER TABLE orders ADD COLUMN doc text;

-- Recomputes doc on an UPDATE that left it as it was. The expression is
-- marketd_order_json's (0006) spelled out over NEW: a row trigger runs on
-- the partition, whose row type is not `orders`.
CREATE FUNCTION marketd_order_doc_sync() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    NEW.doc := marketd_order_doc(
        NEW.id, NEW.buyer_id, NEW.seller_id, NEW.status,
        (SELECT json_agg(marketd_order_item_json(i.product_id, i.title, i.price, i.quantity) ORDER BY i.product_id)
           FROM order_items i
          WHERE i.order_id = NEW.id AND i.created_at = NEW.created_at),
        NEW.total, NEW.currency, NEW.created_at, NEW.updated_at);
    RETURN NEW;
END
$$;

-- "Left it as it was": the statement did not change doc. One that does
-- (the backfill, place_order, SET doc = NULL on a stored doc) does not
-- fire it at all.
CREATE TRIGGER orders_doc_sync BEFORE UPDATE ON orders
    FOR EACH ROW WHEN (NEW.doc IS NOT DISTINCT FROM OLD.doc)
    EXECUTE FUNCTION marketd_order_doc_sync();

-- Changed or removed items: their orders' stored documents are forgotten
-- (the readers compute them until the next write or backfill). Statement
-- level: marketd never updates or deletes items, so this costs nothing.
CREATE FUNCTION marketd_order_items_doc_forget() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    UPDATE orders o SET doc = NULL
      FROM (SELECT DISTINCT c.order_id, c.created_at FROM changed_items c) c
     WHERE o.id = c.order_id AND o.created_at = c.created_at AND o.doc IS NOT NULL;
    RETURN NULL;
END
$$;
CREATE TRIGGER order_items_doc_forget_update AFTER UPDATE ON order_items
    REFERENCING OLD TABLE AS changed_items
    FOR EACH STATEMENT EXECUTE FUNCTION marketd_order_items_doc_forget();
CREATE TRIGGER order_items_doc_forget_delete AFTER DELETE ON order_items
    REFERENCING OLD TABLE AS changed_items
    FOR EACH STATEMENT EXECUTE FUNCTION marketd_order_items_doc_forget();

-- The page of GET /orders (src/api/orders.c): the orders of user `usr` as
-- buyer (or, with as_seller, of the user's seller profile), optionally of
-- one status, created in [since, until), strictly before the keyset
-- cursor (after_at, after_id) in (created_at DESC, id DESC) order, at most
-- lim of them: id, created_at in microseconds since the epoch (the
-- cursor's key) and the document. NULL = no such filter.
--
-- Why a function: force_generic_plan for these two statements only. A
-- generic plan prunes partitions at executor start (run-time pruning of
-- the stable bounds below), so one plan serves every range; NULL bounds
-- become ±infinity (created_at is always finite), which keeps the range
-- an index condition of orders_buyer_idx / orders_seller_idx. The first
-- cursor clause is implied by the second; unlike a row comparison it
-- prunes the partitions after the cursor.
CREATE FUNCTION marketd_order_page(usr bigint, as_seller boolean, want_status text, since timestamptz,
                                   until timestamptz, after_at timestamptz, after_id bigint, lim int)
    RETURNS TABLE (id bigint, created_us bigint, doc text)
    LANGUAGE plpgsql STABLE
    SET plan_cache_mode = force_generic_plan
    AS $$
BEGIN
    IF as_seller THEN
        RETURN QUERY
        SELECT o.id, (extract(epoch FROM o.created_at) * 1000000)::int8, coalesce(o.doc, marketd_order_json(o))
          FROM orders o
         WHERE o.seller_id = (SELECT s.id FROM sellers s WHERE s.user_id = usr)
           AND (want_status IS NULL OR o.status = want_status)
           AND o.created_at >= coalesce(since, '-infinity')
           AND o.created_at < coalesce(until, 'infinity')
           AND o.created_at <= coalesce(after_at, 'infinity')
           AND (after_at IS NULL OR (o.created_at, o.id) < (after_at, after_id))
         ORDER BY o.created_at DESC, o.id DESC
         LIMIT lim;
    ELSE
        RETURN QUERY
        SELECT o.id, (extract(epoch FROM o.created_at) * 1000000)::int8, coalesce(o.doc, marketd_order_json(o))
          FROM orders o
         WHERE o.buyer_id = usr
           AND (want_status IS NULL OR o.status = want_status)
           AND o.created_at >= coalesce(since, '-infinity')
           AND o.created_at < coalesce(until, 'infinity')
           AND o.created_at <= coalesce(after_at, 'infinity')
           AND (after_at IS NULL OR (o.created_at, o.id) < (after_at, after_id))
         ORDER BY o.created_at DESC, o.id DESC
         LIMIT lim;
    END IF;
END
$$;

-- 0007's function, its insert changed only: the answer is rendered before
-- the order row is inserted and stored in it as doc (it was rendered from
-- the inserted rows, marketd_order_json(o), after them). Same signature
-- and outcomes.
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
    new_id    bigint;
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
        -- 0009: the document is rendered before the order is inserted and
        -- stored with it (no second write of the row): from the rows its
        -- items are made of, by the functions marketd_order_json is made
        -- of, in its order (product id), so it is byte for byte what
        -- marketd_order_json(o) gives once the items are in.
        new_id := marketd_order_id(now(), nextval('orders_id_seq'));
        body := marketd_order_doc(
            new_id, buyer, seller, 'new',
            (SELECT json_agg(marketd_order_item_json(pr.id, pr.title, pr.price, (w.value ->> 'quantity')::int)
                             ORDER BY pr.id)
               FROM jsonb_array_elements(items) w
               JOIN products pr ON pr.id = (w.value ->> 'product_id')::bigint),
            total, 'RUB', now(), now());
        INSERT INTO orders (id, buyer_id, seller_id, status, total, currency, created_at, updated_at, doc)
             VALUES (new_id, buyer, seller, 'new', total, 'RUB', now(), now(), body)
          RETURNING * INTO o;
        INSERT INTO order_items (order_id, created_at, product_id, title, price, quantity)
             SELECT o.id, o.created_at, pr.id, pr.title, pr.price, (w.value ->> 'quantity')::int
               FROM jsonb_array_elements(items) w
               JOIN products pr ON pr.id = (w.value ->> 'product_id')::bigint;
        outcome := 'ok';
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
