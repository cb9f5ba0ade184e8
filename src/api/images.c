/* Product images (api.md "Products", S13): POST /products/{id}/images.
 *
 * The request flows: token → size (413) → declared type and magic bytes
 * (415) → owner check (one query) → hash and store on the offload pool →
 * append the path to products.images (one query, owner checked again) →
 * 201 {"url"}.
 *
 * Files are content-addressed: MEDIA_DIR/ab/cd/<sha256>.<ext>, written to a
 * temporary file in the same directory, fsync'ed and rename()d, so a name
 * that exists always holds its complete bytes (which is what makes "exists
 * → skip the write" a safe dedup, and lets nginx serve them as immutable).
 * The database stores the path ("/ab/cd/<sha>.jpg"), never CDN_BASE_URL, so
 * the CDN can move without a data migration. The backend never serves the
 * bytes.
 *
 * Why the owner is checked before the file is written and again when the
 * path is appended: a refused upload must not leave a file behind (nor let
 * strangers fill the disk), and the append is the authoritative check. The
 * upload takes two round trips; the file I/O between them cannot share a
 * transaction with either. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api/api.h"
#include "api/render.h"
#include "core/error.h"
#include "core/log.h"
#include "core/offload.h"

/* A bound on a product's image list (S12), far above any real gallery. */
#define IMAGES_PER_PRODUCT_MAX 50
#define IMAGES_MAX_TEXT        "50"

static const db_stmt_t *st_check, *st_append;

static void images_init(void)
{
    st_check = db_stmt_register("SELECT CASE WHEN p.id IS NULL THEN 'not_found'"
                                "            WHEN s.user_id <> $1::int8 THEN 'forbidden' ELSE 'ok' END"
                                " FROM (VALUES (1)) one LEFT JOIN products p ON p.id = $2::int8"
                                " LEFT JOIN sellers s ON s.id = p.seller_id",
                                2);
    /* Appends the path unless present (a re-upload is answered 201 again,
     * so a retried upload is safe). The conditions read the updated row, so
     * two concurrent uploads of the same image append it once. */
    st_append = db_stmt_register(
        "WITH cur AS (SELECT p.id, s.user_id, p.city_id FROM products p JOIN sellers s ON s.id = p.seller_id"
        "             WHERE p.id = $2::int8),"
        " upd AS (UPDATE products p"
        "         SET images = CASE WHEN $3::text = ANY (p.images) THEN p.images ELSE p.images || $3::text "
        "END,"
        "             updated_at = CASE WHEN $3::text = ANY (p.images) THEN p.updated_at ELSE now() END"
        "         FROM cur WHERE p.id = cur.id AND cur.user_id = $1::int8"
        "           AND ($3::text = ANY (p.images) OR cardinality(p.images) < $4::int4)"
        "         RETURNING p.id)"
        " SELECT CASE WHEN cur.id IS NULL THEN 'not_found' WHEN cur.user_id <> $1::int8 THEN 'forbidden'"
        "             WHEN upd.id IS NULL THEN 'conflict' ELSE 'ok' END, cur.city_id"
        " FROM (VALUES (1)) one LEFT JOIN cur ON true LEFT JOIN upd ON true",
        4);
}

/* ---- types and magic bytes ---------------------------------------------------------- */

enum { IMG_JPEG, IMG_PNG, IMG_WEBP, IMG_NTYPES };
static const struct {
    const char *mime;
    const char *ext;
} image_types[IMG_NTYPES] = {{"image/jpeg", "jpg"}, {"image/png", "png"}, {"image/webp", "webp"}};

/* The declared type: one of ours (parameters after ';' ignored), or -1. */
static int declared_type(const char *ct, size_t n)
{
    if (ct == NULL)
        return -1;
    for (int t = 0; t < IMG_NTYPES; t++) {
        size_t m = strlen(image_types[t].mime);
        if (n >= m && strncasecmp(ct, image_types[t].mime, m) == 0 &&
            (n == m || ct[m] == ';' || ct[m] == ' ' || ct[m] == '\t'))
            return t;
    }
    return -1;
}

/* The type the bytes say they are, or -1. */
static int sniffed_type(const unsigned char *p, size_t n)
{
    if (n >= 3 && p[0] == 0xFF && p[1] == 0xD8 && p[2] == 0xFF)
        return IMG_JPEG;
    if (n >= 8 && memcmp(p, "\x89PNG\r\n\x1a\n", 8) == 0)
        return IMG_PNG;
    if (n >= 12 && memcmp(p, "RIFF", 4) == 0 && memcmp(p + 8, "WEBP", 4) == 0)
        return IMG_WEBP;
    return -1;
}

/* ---- the file (offload threads) ------------------------------------------------------- */

typedef struct image_job {
    rctx_t *r;
    const unsigned char *data; /* the request body: valid until the answer */
    size_t len;
    int type;
    const char *media_dir;
    char uid[24], pid[24];
    char path[96]; /* "/ab/cd/<64 hex>.webp" */
    int err;       /* errno of the failed step, 0 when stored */
    const char *step;
} image_job_t;

/* mkdir -p of dir (a writable copy); 0 or an errno. */
static int make_dirs(char *dir)
{
    for (char *p = dir + 1;; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char c = *p;
        *p = '\0';
        int rc = mkdir(dir, 0755);
        int e = errno;
        struct stat st;
        int exists = rc != 0 && e != EEXIST && stat(dir, &st) == 0 && S_ISDIR(st.st_mode);
        *p = c;
        if (rc != 0 && e != EEXIST && !exists)
            return e;
        if (c == '\0')
            return 0;
    }
}

static int write_all(int fd, const unsigned char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return errno;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Stores j->data at media_dir + j->path: 0 or an errno (j->step names the
 * step). Runs on an offload thread. */
static int store_file(image_job_t *j)
{
    char final[PATH_MAX], dir[PATH_MAX], tmp[PATH_MAX];
    int n = snprintf(final, sizeof(final), "%s%s", j->media_dir, j->path);
    if (n < 0 || (size_t)n >= sizeof(final)) {
        j->step = "path";
        return ENAMETOOLONG;
    }
    memcpy(dir, final, (size_t)n + 1);
    *strrchr(dir, '/') = '\0';
    if ((j->err = make_dirs(dir)) != 0) {
        j->step = "mkdir";
        return j->err;
    }
    struct stat st;
    if (stat(final, &st) == 0 && S_ISREG(st.st_mode))
        return 0; /* the same bytes are already there: names are their hash */
    n = snprintf(tmp, sizeof(tmp), "%s/.upload-XXXXXX", dir);
    if (n < 0 || (size_t)n >= sizeof(tmp)) {
        j->step = "path";
        return ENAMETOOLONG;
    }
    int fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0) {
        j->step = "create";
        return errno;
    }
    int e = write_all(fd, j->data, j->len);
    j->step = "write";
    /* 0644: nginx, another user, serves the file. fsync before rename: a
     * crash must never leave a short file under the final name. */
    if (e == 0 && fchmod(fd, 0644) != 0)
        e = errno, j->step = "chmod";
    if (e == 0 && fsync(fd) != 0)
        e = errno, j->step = "fsync";
    if (close(fd) != 0 && e == 0)
        e = errno, j->step = "close";
    if (e == 0 && rename(tmp, final) != 0)
        e = errno, j->step = "rename";
    if (e != 0) {
        unlink(tmp);
        return e;
    }
    /* The new directory entry reaches the disk before the database names it. */
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return 0;
}

static void store_work(void *arg)
{
    image_job_t *j = arg;
    unsigned char digest[crypto_hash_sha256_BYTES];
    char hex[2 * crypto_hash_sha256_BYTES + 1];
    crypto_hash_sha256(digest, j->data, j->len);
    sodium_bin2hex(hex, sizeof(hex), digest, sizeof(digest));
    snprintf(j->path, sizeof(j->path), "/%.2s/%.2s/%s.%s", hex, hex + 2, hex, image_types[j->type].ext);
    j->err = store_file(j);
}

/* ---- the request (event loop) ----------------------------------------------------------- */

/* Refusals of both statements: outcome in column 0. The detail names the
 * product as the client sent it. */
static const api_refusal_t refusals[] = {
    {MKD_EFORBIDDEN, "product %s belongs to another seller"},
    {MKD_ENOTFOUND, "product %s not found"},
    {MKD_ECONFLICT, "product %s already has " IMAGES_MAX_TEXT " images"},
    {0},
};

static void on_appended(rctx_t *r, PGresult *res)
{
    image_job_t *j = r->data;
    if (api_outcome_or_reply(r, res, 0, refusals) != 0)
        return;
    jbuf_t *b = reply_buffer(r);
    const char *cdn = api_config()->cdn_base_url;
    size_t cn = strlen(cdn), pn = strlen(j->path);
    char *url = h2o_mem_alloc_pool(&r->req->pool, cn + pn);
    memcpy(url, cdn, cn);
    memcpy(url + cn, j->path, pn);
    jbuf_puts(b, "{\"url\":");
    json_str(b, url, cn + pn);
    jbuf_putc(b, '}');
    cache_tags_t tags = {0};
    tags_product_changed(&tags, strtoll(j->pid, NULL, 10), api_int(res, 0, 1));
    api_reply_written(r, &tags, 201, "application/json", b->data, b->len);
}

static void store_done(void *arg)
{
    image_job_t *j = arg;
    rctx_t *r = j->r;
    if (j->err != 0) {
        reply_error(r, MKD_EINTERNAL, "storing image %s%s: %s: %s", j->media_dir, j->path, j->step,
                    strerror(j->err));
        return;
    }
    char max[16];
    snprintf(max, sizeof(max), "%d", IMAGES_PER_PRODUCT_MAX);
    const char *params[] = {j->uid, j->pid, j->path, max};
    api_query(r, st_append, params, on_appended);
}

static void on_checked(rctx_t *r, PGresult *res)
{
    image_job_t *j = r->data;
    if (api_outcome_or_reply(r, res, 0, refusals) != 0)
        return;
    if (offload_submit(&r->w->offload, store_work, store_done, j) != 0)
        reply_error(r, MKD_EBUSY, "too many uploads at once; retry shortly");
}

/* The request flows: size (413, the dispatcher) → token (401, the
 * dispatcher) → product id → declared type and magic bytes (415) → owner
 * check → store → append. */
static void product_images_upload(rctx_t *r)
{
    int64_t pid;
    if (api_path_id(r, 0, "product", &pid) != 0)
        return;
    const unsigned char *data = (const unsigned char *)r->req->entity.base;
    size_t len = r->req->entity.len, ct_len;
    const char *ct = rctx_header(r, "content-type", &ct_len);
    int type = declared_type(ct, ct_len);
    if (type < 0) {
        reply_error(r, MKD_EMEDIATYPE, "Content-Type must be image/jpeg, image/png or image/webp");
        return;
    }
    if (len == 0 || data == NULL) {
        reply_error(r, MKD_EBADREQ, "the body is empty: send the image bytes");
        return;
    }
    int sniffed = sniffed_type(data, len);
    if (sniffed != type) {
        if (sniffed < 0)
            reply_error(r, MKD_EMEDIATYPE, "the body is not a JPEG, PNG or WebP image");
        else
            reply_error(r, MKD_EMEDIATYPE, "the body is %s, not the declared %s", image_types[sniffed].mime,
                        image_types[type].mime);
        return;
    }
    image_job_t *j = h2o_mem_alloc_pool(&r->req->pool, sizeof(*j));
    memset(j, 0, sizeof(*j));
    j->r = r;
    j->data = data;
    j->len = len;
    j->type = type;
    j->media_dir = api_config()->media_dir;
    api_id_text(r->user_id, j->uid);
    api_id_text(pid, j->pid);
    r->data = j;
    api_query(r, st_check, (const char *[]){j->uid, j->pid}, on_checked);
}

static const route_t routes[] = {
    {.method = M_POST,
     .pattern = "/api/v1/products/{id}/images",
     HANDLER(product_images_upload),
     .auth = AUTH_USER,
     .body = BODY_IMAGE,
     .limit = LIMIT_API},
};

const api_module_t api_images = {"images", routes, sizeof(routes) / sizeof(routes[0]), images_init, NULL};
