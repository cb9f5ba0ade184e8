-- 0003: the catalogue write path (api.md "Sellers", "Products").
--
-- Most catalogue writes are a single statement with data-modifying CTEs
-- (src/api/catalogue_write.c). Moving a seller is the exception: its
-- products carry copies of the seller's city_id/district_id (0001), and
-- those copies must follow the seller in the same transaction without
-- missing a product created concurrently. That needs two statements with
-- two snapshots, i.e. a function:
--
--   1. lock the seller row (FOR UPDATE). POST /products locks the same row
--      FOR SHARE while it inserts, so a product insert either committed
--      before this lock was granted, or waits for this transaction and then
--      reads the seller's new location;
--   2. update the seller and then its products; under READ COMMITTED each
--      statement takes a fresh snapshot, so step 2 sees every product that
--      committed before step 1 got its lock.
--
-- Returns the HTTP status, the field and message of a 422, and the seller
-- row in the column order of src/api/sellers.c (SELLER_COLS).
CREATE FUNCTION marketd_seller_patch(actor bigint, seller bigint, new_name text, new_description text,
                                     new_city bigint, new_district bigint,
                                     OUT http_status int, OUT field text, OUT message text,
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
        http_status := 404;
        RETURN;
    END IF;
    IF s.user_id <> actor THEN
        http_status := 403;
        RETURN;
    END IF;
    city := coalesce(new_city, s.city_id);
    district := coalesce(new_district, s.district_id);
    IF new_city IS NOT NULL AND NOT EXISTS (SELECT 1 FROM cities c WHERE c.id = new_city) THEN
        http_status := 422;
        field := 'city_id';
        message := 'is not a known city';
        RETURN;
    END IF;
    IF new_district IS NULL AND new_city IS NOT NULL AND new_city <> s.city_id THEN
        -- The old district belongs to the old city.
        http_status := 422;
        field := 'district_id';
        message := 'is required when city_id changes';
        RETURN;
    END IF;
    IF new_district IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM districts d WHERE d.id = new_district AND d.city_id = city) THEN
        http_status := 422;
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
    http_status := 200;
END
$$;
