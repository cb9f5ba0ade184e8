/* Accounts (api.md "Auth"): register, login, /me, and the bearer-token
 * check every authenticated handler starts with. Argon2id runs on the
 * offload pool; the loop only sends queries and renders. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "api/api.h"
#include "api/common.h"
#include "core/error.h"
#include "core/jwt.h"
#include "core/offload.h"
#include "core/password.h"
#include "core/timefmt.h"
#include "http/body.h"

static const db_stmt_t *st_insert_user, *st_user_by_email, *st_user_by_id;

#define USER_COLS "u.id, u.email, u.name, (SELECT s.id FROM sellers s WHERE s.user_id = u.id), u.is_admin"
enum { U_ID, U_EMAIL, U_NAME, U_SELLER_ID, U_IS_ADMIN, U_HASH };

void api_auth_init(void)
{
    st_insert_user = db_stmt_register("INSERT INTO users AS u (email, password_hash, name) VALUES ($1, $2, $3)"
                                      " ON CONFLICT ((lower(email))) DO NOTHING RETURNING " USER_COLS,
                                      3);
    st_user_by_email =
        db_stmt_register("SELECT " USER_COLS ", u.password_hash FROM users u WHERE lower(u.email) = lower($1)", 1);
    st_user_by_id = db_stmt_register("SELECT " USER_COLS " FROM users u WHERE u.id = $1::int8", 1);
}

/* ---- the bearer token ---------------------------------------------------- */

int api_authenticate(rctx_t *r, int64_t *user_id)
{
    const config_t *cfg = r->w->server->cfg;
    ssize_t h = h2o_find_header(&r->req->headers, H2O_TOKEN_AUTHORIZATION, -1);
    if (h < 0) {
        reply_problem(r, 401, "authentication required: send Authorization: Bearer <token>");
        return -1;
    }
    h2o_iovec_t v = r->req->headers.entries[h].value;
    jwt_claims_t c;
    if (v.len < 8 || strncasecmp(v.base, "Bearer ", 7) != 0 ||
        jwt_verify((const unsigned char *)cfg->jwt_secret, strlen(cfg->jwt_secret), v.base + 7, v.len - 7,
                   (int64_t)time(NULL), &c) != 0) {
        reply_problem(r, 401, "the token is missing, invalid or expired");
        return -1;
    }
    *user_id = c.sub;
    return 0;
}

/* ---- rendering ----------------------------------------------------------- */

static void render_user(jbuf_t *b, const PGresult *res)
{
    jbuf_puts(b, "{\"id\":");
    api_json_num(b, res, 0, U_ID);
    jbuf_puts(b, ",\"email\":");
    api_json_text(b, res, 0, U_EMAIL);
    jbuf_puts(b, ",\"name\":");
    api_json_text(b, res, 0, U_NAME);
    jbuf_puts(b, ",\"seller_id\":");
    api_json_num(b, res, 0, U_SELLER_ID);
    jbuf_putc(b, '}');
}

/* {"token","expires_at","user"} for the user in row 0 of res. */
static void reply_session(rctx_t *r, int status, const PGresult *res)
{
    const config_t *cfg = r->w->server->cfg;
    jwt_claims_t c = {.sub = api_int(res, 0, U_ID), .iat = (int64_t)time(NULL)};
    c.exp = c.iat + cfg->jwt_ttl;
    char token[JWT_MAX_LEN], exp[TS_BUFSZ];
    size_t tn = jwt_sign((const unsigned char *)cfg->jwt_secret, strlen(cfg->jwt_secret), &c, token);
    size_t en = ts_format_rfc3339(c.exp * 1000000, exp);
    jbuf_t *b = reply_buffer(r);
    jbuf_puts(b, "{\"user\":");
    render_user(b, res);
    jbuf_puts(b, ",\"token\":");
    json_str(b, token, tn);
    jbuf_puts(b, ",\"expires_at\":");
    json_str(b, exp, en);
    jbuf_putc(b, '}');
    reply_json(r, status, b);
}

/* ---- register -------------------------------------------------------------- */

typedef struct account_job {
    rctx_t *r;
    char *email, *password, *name;
    size_t password_len;
    char hash[PASSWORD_HASH_MAX];
    int ok;
    PGresult *user; /* login: the user row, or NULL */
} account_job_t;

static char *pool_strdup(rctx_t *r, const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = h2o_mem_alloc_pool(&r->req->pool, n);
    memcpy(p, s, n);
    return p;
}

/* Light, deliberate email check: something@something.tld, no spaces, no
 * control characters. Deliverability is the mail system's job. */
static int email_valid(const char *s)
{
    const char *at = strchr(s, '@');
    if (at == NULL || at == s || strchr(at + 1, '@') != NULL || strchr(at, '.') == NULL)
        return 0;
    const char *dot = strrchr(at, '.');
    if (dot == at + 1 || dot[1] == '\0')
        return 0;
    for (const char *p = s; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == 0x7f)
            return 0;
    return 1;
}

/* Reads and validates {"email","password"[,"name"]} into a job; answers and
 * returns NULL on bad input. */
static account_job_t *read_account(rctx_t *r, int with_name)
{
    char detail[256];
    int status;
    json_t *obj = body_parse(api_content_type(r), api_content_type_len(r), r->req->entity.base, r->req->entity.len,
                             &status, detail, sizeof(detail));
    if (obj == NULL) {
        reply_problem(r, status, "%s", detail);
        return NULL;
    }
    const char *email = NULL, *password = NULL, *name = NULL;
    verr_t *v = &r->verr;
    /* Registration enforces the rules; a login only needs two strings: a
     * value that breaks a rule simply cannot match, so it gets the same 401
     * as any wrong password (api.md) instead of a 422 that would tell. */
    int rc = body_string(obj, "email", "email", with_name ? 3 : 1, with_name ? 254 : 1024, &email, v);
    body_require(rc, "email", v);
    if (with_name && rc > 0 && !email_valid(email))
        verr_add(v, "email", "must be an email address");
    body_require(body_string(obj, "password", "password", with_name ? 8 : 1, with_name ? 128 : 1024, &password, v),
                 "password", v);
    if (with_name)
        body_require(body_string(obj, "name", "name", 1, 200, &name, v), "name", v);
    if (v->count > 0) {
        json_decref(obj);
        reply_invalid(r);
        return NULL;
    }
    account_job_t *j = h2o_mem_alloc_pool(&r->req->pool, sizeof(*j));
    memset(j, 0, sizeof(*j));
    j->r = r;
    j->email = pool_strdup(r, email);
    j->password = pool_strdup(r, password);
    j->password_len = strlen(password);
    j->name = with_name ? pool_strdup(r, name) : NULL;
    json_decref(obj);
    return j;
}

static void on_user_inserted(void *arg, PGresult *res, int err)
{
    account_job_t *j = arg;
    rctx_t *r = j->r;
    if (err != 0) {
        api_db_failed(r, err, res, "user");
        return;
    }
    if (PQntuples(res) == 0) {
        reply_problem(r, 409, "an account with this email already exists");
        return;
    }
    reply_session(r, 201, res);
}

static void hash_work(void *arg)
{
    account_job_t *j = arg;
    j->ok = password_hash(j->password, j->password_len, j->hash) == 0;
}

static void hash_done(void *arg)
{
    account_job_t *j = arg;
    rctx_t *r = j->r;
    if (!j->ok) {
        reply_error(r, MKD_ENOMEM, "password hash");
        return;
    }
    const char *params[] = {j->email, j->hash, j->name};
    int rc = db_pool_query(r->w->primary, st_insert_user, params, on_user_inserted, j);
    if (rc != 0)
        reply_error(r, rc, "user");
}

void api_auth_register(rctx_t *r)
{
    account_job_t *j = read_account(r, 1);
    if (j == NULL)
        return;
    if (offload_submit(&r->w->offload, hash_work, hash_done, j) != 0)
        reply_problem(r, 503, "too many sign-ups at once; retry shortly");
}

/* ---- login ------------------------------------------------------------------ */

static void verify_work(void *arg)
{
    account_job_t *j = arg;
    const char *hash = j->user != NULL ? PQgetvalue(j->user, 0, U_HASH) : NULL;
    j->ok = password_verify(hash, j->password, j->password_len);
}

static void verify_done(void *arg)
{
    account_job_t *j = arg;
    rctx_t *r = j->r;
    if (j->ok)
        reply_session(r, 200, j->user);
    else
        reply_problem(r, 401, "invalid email or password");
    if (j->user != NULL)
        PQclear(j->user);
}

static void on_login_user(void *arg, PGresult *res, int err)
{
    account_job_t *j = arg;
    rctx_t *r = j->r;
    if (err != 0) {
        api_db_failed(r, err, res, "user");
        return;
    }
    /* The pool clears `res` after this callback; the verification outlives
     * it, so keep a copy. An unknown email still runs a verification (of a
     * dummy hash): the answer and its timing match a wrong password. */
    j->user = PQntuples(res) == 1 ? PQcopyResult(res, PG_COPYRES_ATTRS | PG_COPYRES_TUPLES) : NULL;
    if (offload_submit(&r->w->offload, verify_work, verify_done, j) != 0) {
        if (j->user != NULL)
            PQclear(j->user);
        reply_problem(r, 503, "too many logins at once; retry shortly");
    }
}

void api_auth_login(rctx_t *r)
{
    account_job_t *j = read_account(r, 0);
    if (j == NULL)
        return;
    const char *params[] = {j->email};
    int rc = db_pool_query(r->w->primary, st_user_by_email, params, on_login_user, j);
    if (rc != 0)
        reply_error(r, rc, "user");
}

/* ---- /me ---------------------------------------------------------------------- */

static void on_me(void *arg, PGresult *res, int err)
{
    rctx_t *r = arg;
    if (err != 0) {
        api_db_failed(r, err, res, "user");
        return;
    }
    if (PQntuples(res) == 0) {
        /* A valid signature for a user that no longer exists. */
        reply_problem(r, 401, "the token's user does not exist");
        return;
    }
    jbuf_t *b = reply_buffer(r);
    render_user(b, res);
    reply_json(r, 200, b);
}

void api_auth_me(rctx_t *r)
{
    int64_t uid;
    if (api_authenticate(r, &uid) != 0)
        return;
    char id[24];
    snprintf(id, sizeof(id), "%lld", (long long)uid);
    const char *params[] = {id};
    api_query(r, st_user_by_id, params, on_me);
}
