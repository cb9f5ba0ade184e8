-- 0001: the catalogue, accounts and date-partitioned orders.
-- Applied by `marketd migrate` inside one transaction.

CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE TABLE cities (
    id         bigserial PRIMARY KEY,
    name       text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    slug       text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9-]{0,99}$'),
    created_at timestamptz NOT NULL DEFAULT now()
);
-- GET /cities lists all cities by name.
CREATE INDEX cities_name_idx ON cities (name, id);

CREATE TABLE districts (
    id         bigserial PRIMARY KEY,
    city_id    bigint NOT NULL REFERENCES cities (id),
    name       text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    slug       text NOT NULL CHECK (slug ~ '^[a-z0-9][a-z0-9-]{0,99}$'),
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (city_id, slug)
);
-- GET /cities/{id}/districts, by name.
CREATE INDEX districts_city_name_idx ON districts (city_id, name, id);

CREATE TABLE categories (
    id         bigserial PRIMARY KEY,
    parent_id  bigint REFERENCES categories (id),
    name       text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    slug       text NOT NULL CHECK (slug ~ '^[a-z0-9][a-z0-9-]{0,99}$'),
    created_at timestamptz NOT NULL DEFAULT now()
);
-- A slug is unique among its siblings; roots share the scope "no parent".
CREATE UNIQUE INDEX categories_scope_slug_idx ON categories (coalesce(parent_id, 0), slug);

CREATE TABLE users (
    id            bigserial PRIMARY KEY,
    email         text NOT NULL CHECK (length(email) BETWEEN 3 AND 254),
    password_hash text NOT NULL,
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    is_admin      boolean NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now()
);
-- Emails compare case-insensitively (api.md: register 409).
CREATE UNIQUE INDEX users_email_lower_idx ON users (lower(email));

CREATE TABLE sellers (
    id          bigserial PRIMARY KEY,
    user_id     bigint NOT NULL UNIQUE REFERENCES users (id),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    description text NOT NULL DEFAULT '' CHECK (length(description) <= 5000),
    city_id     bigint NOT NULL REFERENCES cities (id),
    district_id bigint REFERENCES districts (id),
    rating      numeric(3, 2) NOT NULL DEFAULT 0 CHECK (rating BETWEEN 0 AND 5),
    created_at  timestamptz NOT NULL DEFAULT now()
);
-- GET /sellers?city_id / ?district_id, keyset by id.
CREATE INDEX sellers_city_id_idx ON sellers (city_id, id);
CREATE INDEX sellers_district_id_idx ON sellers (district_id, id);

-- city_id/district_id are copied from the seller and category_root_id from
-- the category tree so that every list filter is a plain column of products
-- and can lead a composite index (S11). Writes that move a seller or a
-- category keep the copies in step inside the same transaction.
CREATE TABLE products (
    id               bigserial PRIMARY KEY,
    seller_id        bigint NOT NULL REFERENCES sellers (id),
    category_id      bigint NOT NULL REFERENCES categories (id),
    category_root_id bigint NOT NULL REFERENCES categories (id),
    city_id          bigint NOT NULL REFERENCES cities (id),
    district_id      bigint REFERENCES districts (id),
    title            text NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    description      text NOT NULL DEFAULT '' CHECK (length(description) <= 5000),
    price            bigint NOT NULL CHECK (price BETWEEN 1 AND 100000000000),
    currency         char(3) NOT NULL DEFAULT 'RUB',
    stock            integer NOT NULL CHECK (stock BETWEEN 0 AND 1000000),
    images           text[] NOT NULL DEFAULT '{}',
    status           text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'archived')),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
-- Product lists only ever show active products; every list index is partial.
-- sort=newest, no filter / city / district / category / seller.
CREATE INDEX products_new_idx ON products (created_at DESC, id DESC) WHERE status = 'active';
CREATE INDEX products_city_new_idx ON products (city_id, created_at DESC, id DESC) WHERE status = 'active';
CREATE INDEX products_district_new_idx ON products (district_id, created_at DESC, id DESC) WHERE status = 'active';
CREATE INDEX products_cat_new_idx ON products (category_root_id, created_at DESC, id DESC) WHERE status = 'active';
CREATE INDEX products_city_cat_new_idx ON products (city_id, category_root_id, created_at DESC, id DESC) WHERE status = 'active';
CREATE INDEX products_seller_new_idx ON products (seller_id, created_at DESC, id DESC) WHERE status = 'active';
-- sort=price_asc / price_desc (ties by id ascending), no filter / city / category.
CREATE INDEX products_price_idx ON products (price, id) WHERE status = 'active';
CREATE INDEX products_price_desc_idx ON products (price DESC, id) WHERE status = 'active';
CREATE INDEX products_city_price_idx ON products (city_id, price, id) WHERE status = 'active';
CREATE INDEX products_city_price_desc_idx ON products (city_id, price DESC, id) WHERE status = 'active';
CREATE INDEX products_cat_price_idx ON products (category_root_id, price, id) WHERE status = 'active';
-- q: every word is an ILIKE substring; trigrams make that indexable.
CREATE INDEX products_title_trgm_idx ON products USING gin (lower(title) gin_trgm_ops) WHERE status = 'active';

-- Orders are range-partitioned by month on created_at (S6). An order id
-- carries its month: id = YYYYMM * 10^9 + n, so GET /orders/{id} knows the
-- one partition to read without a lookup table, and ids stay below 2^53
-- (exact in every JSON client).
CREATE SEQUENCE orders_id_seq;

CREATE FUNCTION marketd_order_id(ts timestamptz, n bigint) RETURNS bigint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT to_char(ts AT TIME ZONE 'UTC', 'YYYYMM')::bigint * 1000000000 + (n % 1000000000) $$;

-- The [from, to) month range an order id belongs to.
CREATE FUNCTION marketd_order_month(id bigint) RETURNS timestamptz
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT make_timestamptz((id / 100000000000)::int, ((id / 1000000000) % 100)::int, 1, 0, 0, 0, 'UTC') $$;

CREATE TABLE orders (
    id         bigint NOT NULL,
    buyer_id   bigint NOT NULL,
    seller_id  bigint NOT NULL,
    status     text NOT NULL CHECK (status IN ('new', 'confirmed', 'shipped', 'delivered', 'cancelled')),
    total      bigint NOT NULL CHECK (total >= 0),
    currency   char(3) NOT NULL DEFAULT 'RUB',
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);
-- Order history as buyer / as seller, newest first, keyset (created_at, id).
CREATE INDEX orders_buyer_idx ON orders (buyer_id, created_at DESC, id DESC);
CREATE INDEX orders_seller_idx ON orders (seller_id, created_at DESC, id DESC);
-- Popular sellers: delivered orders of the last 30 days grouped by seller.
CREATE INDEX orders_delivered_idx ON orders (created_at, seller_id) WHERE status = 'delivered';

CREATE TABLE order_items (
    order_id   bigint NOT NULL,
    created_at timestamptz NOT NULL,
    product_id bigint NOT NULL,
    title      text NOT NULL,
    price      bigint NOT NULL CHECK (price > 0),
    quantity   integer NOT NULL CHECK (quantity BETWEEN 1 AND 1000),
    PRIMARY KEY (order_id, created_at, product_id)
) PARTITION BY RANGE (created_at);

-- Creates the monthly partitions of orders and order_items from
-- months_back months ago to months_ahead months ahead. Each partition is
-- built detached and then ATTACHed: ATTACH PARTITION takes only a
-- SHARE UPDATE EXCLUSIVE lock on the parent, so reads and inserts on the
-- existing partitions go on while a month is added (CREATE TABLE ...
-- PARTITION OF would take ACCESS EXCLUSIVE). The CHECK constraint added
-- first lets ATTACH skip its validation scan. Returns how many it created.
CREATE FUNCTION marketd_ensure_partitions(months_back int, months_ahead int) RETURNS int
    LANGUAGE plpgsql AS $$
DECLARE
    base    timestamptz := date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    lo      timestamptz;
    hi      timestamptz;
    parent  text;
    part    text;
    created int := 0;
BEGIN
    FOR i IN -months_back .. months_ahead LOOP
        lo := (base AT TIME ZONE 'UTC' + make_interval(months => i)) AT TIME ZONE 'UTC';
        hi := (base AT TIME ZONE 'UTC' + make_interval(months => i + 1)) AT TIME ZONE 'UTC';
        FOREACH parent IN ARRAY ARRAY['orders', 'order_items'] LOOP
            part := parent || '_' || to_char(lo AT TIME ZONE 'UTC', 'YYYYMM');
            CONTINUE WHEN to_regclass(part) IS NOT NULL;
            EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', part, parent);
            EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I CHECK (created_at >= %L AND created_at < %L)',
                           part, part || '_range', lo, hi);
            EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', parent, part, lo, hi);
            EXECUTE format('ALTER TABLE %I DROP CONSTRAINT %I', part, part || '_range');
            created := created + 1;
        END LOOP;
    END LOOP;
    RETURN created;
END
$$;

SELECT marketd_ensure_partitions(25, 3);
