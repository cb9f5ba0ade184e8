/* Product images (api.md "Products", S13): POST /products/{id}/images.
 *
 * The request flows: size (413) → token (401) → declared type, magic bytes
 * and header (415, core/imagetype.h) → owner check (one query) → hash and
 * stage the bytes on the offload pool → append the path to products.images
 * (one query: the authoritative check) → publish the file (rename, offload
 * pool) → 201 {"url"}.
 *
 * Files are content-addressed: MEDIA_DIR/ab/cd/<sha256>.<ext>, so a name
 * that exists always holds its complete bytes (which is what makes "exists
 * → skip the write" a safe dedup, and lets nginx serve them as immutable).
 * The database stores the path ("/ab/cd/<sha>.jpg"), never CDN_BASE_URL, so
 * the CDN can move without a data migration. The backend never serves the
 * bytes.
 *
 * Why stage, then append, then publish (issue 10): nginx serves MEDIA_DIR,
 * so a file under its final name is public. The owner check before staging
 * refuses strangers, unknown and archived products without touching the
 * disk; but only the append decides (the 50-image cap, a product archived
 * meanwhile), so the bytes wait under a private name (MEDIA_DIR/.upload/,
 * which nginx refuses to serve) until the append has committed, and are
 * renamed into place only then. Every other ending — a refusal, a database
 * error, a client gone — unlinks the staged file when the request's pool is
 * released (job_dispose). A crash between the commit and the rename leaves
 * a path without a file; the client saw no 201, and its retry (the append
 * is idempotent) publishes the file again. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api/api.h"
#include "api/render.h"
#include "core/error.h"
#include "core/imagetype.h"
#include "core/log.h"
#include "core/offload.h"

/* A bound on a product's image list (S12), far above any real gallery. */
#define IMAGES_PER_PRODUCT_MAX 50
#define IMAGES_MAX_TEXT        "50"

/* Where uploads wait for their append, inside MEDIA_DIR (same file system,
 * so the publishing rename is atomic). nginx answers 404 under /media/. */
#define STAGING_DIR "/.upload"

static const db_stmt_t *st_check, *st_append;

/* Both statements answer (outcome, reason): the reason tells the two
 * conflicts apart ("archived" or "full"). */
static void images_init(void)
{
    st_check = db_stmt_register("SELECT CASE WHEN p.id IS NULL THEN 'not_found'"
                                "            WHEN s.user_id <> $1::int8 THEN 'forbidden'"
                                "            WHEN p.status <> 'active' THEN 'conflict' ELSE 'ok' END,"
                                "       'archived'"
                                " FROM (VALUES (1)) one LEFT JOIN products p ON p.id = $2::int8"
                                " LEFT JOIN sellers s ON s.id = p.seller_id",
                                2);
    /* Appends the path unless present (a re-upload is answered 201 again,
     * so a retried upload is safe). The conditions read the updated row, so
     * two concurrent uploads of the same image append it once, and a
     * product archived meanwhile takes nothing. */
    st_append = db_stmt_register(
        "WITH cur AS (SELECT p.id, s.user_id, p.city_id, p.status FROM products p"
        "             JOIN sellers s ON s.id = p.seller_id WHERE p.id = $2::int8),"
        " upd AS (UPDATE products p"
        "         SET images = CASE WHEN $3::text = ANY (p.images) THEN p.images ELSE p.images || $3::text "
        "END,"
        "             updated_at = CASE WHEN $3::text = ANY (p.images) THEN p.updated_at ELSE now() END"
        "         FROM cur WHERE p.id = cur.id AND cur.user_id = $1::int8 AND p.status = 'active'"
        "           AND ($3::text = ANY (p.images) OR cardinality(p.images) < $4::int4)"
        "         RETURNING p.id)"
        " SELECT CASE WHEN cur.id IS NULL THEN 'not_found' WHEN cur.user_id <> $1::int8 THEN 'forbidden'"
        "             WHEN upd.id IS NULL THEN 'conflict' ELSE 'ok' END,"
        "        CASE WHEN cur.status <> 'active' THEN 'archived' ELSE 'full' END, cur.city_id"
        " FROM (VALUES (1)) one LEFT JOIN cur ON true LEFT JOIN upd ON true",
        4);
}

/* ---- the file (offload threads) ------------------------------------------------------- */

typedef struct image_job {
    rctx_t *r;
    const unsigned char *data; /* the request body: valid until the answer */
    size_t len;
    int type;
    const char *media_dir;
    char uid[24], pid[24];
    char path[96];        /* "/ab/cd/<64 hex>.webp" */
    char final[PATH_MAX]; /* media_dir + path */
    char tmp[PATH_MAX];   /* the staged file; "" when none (already published, or never written) */
    cache_tags_t tags;    /* what the append changed */
    int err;              /* errno of the failed step, 0 when it went well */
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

/* dir + "/" of a path, in out; 0 or ENAMETOOLONG. */
static int dir_of(const char *path, char out[PATH_MAX])
{
    size_t n = (size_t)(strrchr(path, '/') - path);
    if (n >= PATH_MAX)
        return ENAMETOOLONG;
    memcpy(out, path, n);
    out[n] = '\0';
    return 0;
}

static void fsync_dir(const char *dir)
{
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
}

/* Writes j->data to a new private file under MEDIA_DIR/.upload/ (j->tmp)
 * unless the final name exists already; makes the final directory. 0 or an
 * errno (j->step names the step). Runs on an offload thread. */
static int stage_file(image_job_t *j)
{
    char dir[PATH_MAX];
    int n = snprintf(j->final, sizeof(j->final), "%s%s", j->media_dir, j->path);
    if (n < 0 || (size_t)n >= sizeof(j->final) || dir_of(j->final, dir) != 0) {
        j->step = "path";
        return ENAMETOOLONG;
    }
    int e = make_dirs(dir);
    if (e != 0) {
        j->step = "mkdir";
        return e;
    }
    struct stat st;
    if (stat(j->final, &st) == 0 && S_ISREG(st.st_mode))
        return 0; /* the same bytes are already there: names are their hash */
    n = snprintf(j->tmp, sizeof(j->tmp), "%s" STAGING_DIR "/img-XXXXXX", j->media_dir);
    if (n < 0 || (size_t)n >= sizeof(j->tmp) || dir_of(j->tmp, dir) != 0) {
        j->tmp[0] = '\0';
        j->step = "path";
        return ENAMETOOLONG;
    }
    if ((e = make_dirs(dir)) != 0) {
        j->tmp[0] = '\0';
        j->step = "mkdir";
        return e;
    }
    int fd = mkostemp(j->tmp, O_CLOEXEC);
    if (fd < 0) {
        e = errno;
        j->tmp[0] = '\0';
        j->step = "create";
        return e;
    }
    e = write_all(fd, j->data, j->len);
    j->step = "write";
    /* 0644: nginx, another user, serves the file once published. fsync
     * before the append: a path the database names must never be a short
     * file after a crash. */
    if (e == 0 && fchmod(fd, 0644) != 0)
        e = errno, j->step = "chmod";
    if (e == 0 && fsync(fd) != 0)
        e = errno, j->step = "fsync";
    if (close(fd) != 0 && e == 0)
        e = errno, j->step = "close";
    return e; /* on failure j->tmp stays set: job_dispose unlinks it */
}

static void stage_work(void *arg)
{
    image_job_t *j = arg;
    unsigned char digest[crypto_hash_sha256_BYTES];
    char hex[2 * crypto_hash_sha256_BYTES + 1];
    crypto_hash_sha256(digest, j->data, j->len);
    sodium_bin2hex(hex, sizeof(hex), digest, sizeof(digest));
    snprintf(j->path, sizeof(j->path), "/%.2s/%.2s/%s.%s", hex, hex + 2, hex, image_ext(j->type));
    j->err = stage_file(j);
}

/* After the commit: the staged file takes its final, public name. A
 * concurrent upload of the same bytes may have published it first; the
 * rename then replaces it with identical bytes. */
static void publish_work(void *arg)
{
    image_job_t *j = arg;
    char dir[PATH_MAX];
    if (rename(j->tmp, j->final) != 0) {
        j->err = errno;
        j->step = "rename";
        return;
    }
    j->tmp[0] = '\0';
    /* The new entry reaches the disk before the client hears 201. */
    if (dir_of(j->final, dir) == 0)
        fsync_dir(dir);
}

/* The request's pool is released, however the request ended: a staged file
 * still here was never published. On the loop: one unlink. */
static void job_dispose(void *arg)
{
    image_job_t *j = arg;
    if (j->tmp[0] != '\0' && unlink(j->tmp) != 0 && errno != ENOENT)
        log_warn("images: cannot remove the staged upload %s: %s", j->tmp, strerror(errno));
}

/* ---- the request (event loop) ----------------------------------------------------------- */

/* Refusals of both statements: outcome in column 0, reason in column 1.
 * The detail names the product as the client sent it. */
static const api_refusal_t refusals_full[] = {
    {MKD_EFORBIDDEN, "product %s belongs to another seller"},
    {MKD_ENOTFOUND, "product %s not found"},
    {MKD_ECONFLICT, "product %s already has " IMAGES_MAX_TEXT " images"},
    {0},
};
static const api_refusal_t refusals_archived[] = {
    {MKD_ECONFLICT, "product %s is archived: restore it (PATCH status \"active\") to add images"},
    {0},
};

static int outcome_or_reply(rctx_t *r, PGresult *res)
{
    int archived = api_outcome(res, 0) == MKD_ECONFLICT && strcmp(PQgetvalue(res, 0, 1), "archived") == 0;
    return api_outcome_or_reply(r, res, 0, archived ? refusals_archived : refusals_full);
}

static void reply_stored(rctx_t *r, image_job_t *j)
{
    jbuf_t *b = reply_buffer(r);
    const char *cdn = api_config()->cdn_base_url;
    size_t cn = strlen(cdn), pn = strlen(j->path);
    char *url = h2o_mem_alloc_pool(&r->req->pool, cn + pn);
    memcpy(url, cdn, cn);
    memcpy(url + cn, j->path, pn);
    jbuf_puts(b, "{\"url\":");
    json_str(b, url, cn + pn);
    jbuf_putc(b, '}');
    api_reply_written(r, &j->tags, 201, "application/json", b->data, b->len);
}

static void publish_done(void *arg)
{
    image_job_t *j = arg;
    if (j->err != 0) {
        /* Committed, not published: the retry the client makes publishes. */
        reply_error(j->r, MKD_EINTERNAL, "publishing image %s: %s: %s; retry the upload", j->final, j->step,
                    strerror(j->err));
        return;
    }
    reply_stored(j->r, j);
}

static void on_appended(rctx_t *r, PGresult *res)
{
    image_job_t *j = r->data;
    if (outcome_or_reply(r, res) != 0)
        return; /* job_dispose removes the staged file */
    tags_product_changed(&j->tags, strtoll(j->pid, NULL, 10), api_int(res, 0, 2));
    if (j->tmp[0] == '\0') {
        reply_stored(r, j); /* the file was there before */
        return;
    }
    if (offload_submit(&r->w->offload, publish_work, publish_done, j) != 0) {
        /* The queue is full: one rename on the loop beats failing a
         * committed upload. */
        publish_work(j);
        publish_done(j);
    }
}

static void stage_done(void *arg)
{
    image_job_t *j = arg;
    rctx_t *r = j->r;
    if (j->err != 0) {
        reply_error(r, MKD_EINTERNAL, "storing image %s: %s: %s", j->tmp[0] ? j->tmp : j->final, j->step,
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
    if (outcome_or_reply(r, res) != 0)
        return;
    if (offload_submit(&r->w->offload, stage_work, stage_done, j) != 0)
        reply_error(r, MKD_EBUSY, "too many uploads at once; retry shortly");
}

/* The request flows: size (413, the dispatcher) → token (401, the
 * dispatcher) → product id → declared type, magic bytes and header (415)
 * → owner check → stage → append → publish. */
static void product_images_upload(rctx_t *r)
{
    int64_t pid;
    if (api_path_id(r, 0, "product", &pid) != 0)
        return;
    const unsigned char *data = (const unsigned char *)r->req->entity.base;
    size_t len = r->req->entity.len, ct_len;
    const char *ct = rctx_header(r, "content-type", &ct_len);
    int type = image_type_of_mime(ct, ct_len);
    if (type < 0) {
        reply_error(r, MKD_EMEDIATYPE, "Content-Type must be image/jpeg, image/png or image/webp");
        return;
    }
    if (len == 0 || data == NULL) {
        reply_error(r, MKD_EBADREQ, "the body is empty: send the image bytes");
        return;
    }
    image_info_t info;
    int rc = image_probe(data, len, &info);
    if (info.type != type && info.type >= 0) {
        reply_error(r, MKD_EMEDIATYPE, "the body is %s, not the declared %s", image_mime(info.type),
                    image_mime(type));
        return;
    }
    if (rc != 0) {
        reply_error(r, MKD_EMEDIATYPE, "%s", info.why);
        return;
    }
    image_job_t *j = h2o_mem_alloc_shared(&r->req->pool, sizeof(*j), job_dispose);
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
