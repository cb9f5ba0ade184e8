/* Accounts (api.md "Auth"): register, login, /me. Argon2id runs on the
 * offload pool; the loop only sends queries and renders. The bearer token
 * itself is checked by the dispatcher for every AUTH_USER route. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "api/api.h"
#include "api/fields.h"
#include "api/render.h"
#include "api/throttle.h"
#include "core/email.h"
#include "core/error.h"
#include "core/jwt.h"
#include "core/offload.h"
#include "core/password.h"
#include "core/timefmt.h"
#include "http/body.h"

static const db_stmt_t *st_insert_user, *st_user_by_email, *st_user_by_id;

/* A user as api.md shows it; the login statement adds the hash after it. */
static const api_col_t user_cols[] = {
    {"id", "u.id", COL_NUM},
    {"email", "u.email", COL_TEXT},
    {"name", "u.name", COL_TEXT},
    {"seller_id", "(SELECT s.id FROM sellers s WHERE s.user_id = u.id)", COL_NUM},
};
#define USER API_TABLE(user_cols)
enum { U_ID = 0, U_HASH = 4 };

/* {"token","expires_at","user"} for the user in row 0 of res. */
static void reply_session(rctx_t *r, int status, const PGresult *res)
{
    const config_t *cfg = api_config();
    jwt_claims_t c = {.sub = api_int(res, 0, U_ID), .iat = (int64_t)time(NULL)};
    c.exp = c.iat + cfg->jwt_ttl;
    char token[JWT_MAX_LEN], exp[TS_BUFSZ];
    size_t tn = jwt_sign((const unsigned char *)cfg->jwt_secret, strlen(cfg->jwt_secret), &c, token);
    size_t en = ts_format_rfc3339(c.exp * 1000000, exp);
    jbuf_t *b = reply_buffer(r);
    jbuf_puts(b, "{\"user\":");
    api_render_row(b, USER, 1, res, 0, 0, "");
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
    const char *email, *password, *name;
    size_t password_len;
    char hash[PASSWORD_HASH_MAX];
    int ok;
    PGresult *user;                            /* login: the user row, or NULL */
    unsigned char account[THROTTLE_KEY_BYTES]; /* login: the throttled account (api/throttle.h) */
} account_job_t;

/* Reads and validates {"email","password"[,"name"]} into a job; answers and
 * returns NULL on bad input. */
static account_job_t *read_account(rctx_t *r, int with_name)
{
    json_t *obj = r->body;
    const char *email = NULL, *password = NULL, *name = NULL;
    verr_t *v = &r->verr;
    /* Registration enforces the rules; a login only needs two strings: a
     * value that breaks a rule simply cannot match, so it gets the same 401
     * as any wrong password (api.md) instead of a 422 that would tell. */
    int rc = with_name ? field_text(obj, "email", "email", 3, 254, FIELD_LINE, &email, v)
                       : body_string(obj, "email", "email", 1, 1024, &email, v);
    body_require(rc, "email", v);
    if (with_name && rc > 0 && !email_valid(email))
        verr_add(v, "email", "must be an email address");
    body_require(
        body_string(obj, "password", "password", with_name ? 8 : 1, with_name ? 128 : 1024, &password, v),
        "password", v);
    if (with_name)
        body_require(field_text(obj, "name", "name", 1, FIELD_NAME_MAX, FIELD_LINE, &name, v), "name", v);
    if (reply_if_invalid(r))
        return NULL;
    account_job_t *j = h2o_mem_alloc_pool(&r->req->pool, sizeof(*j));
    memset(j, 0, sizeof(*j));
    j->r = r;
    /* r->body, which holds these strings, lives as long as the request. */
    j->email = email;
    j->password = password;
    j->password_len = strlen(password);
    j->name = with_name ? name : NULL;
    return j;
}

static void on_user_inserted(rctx_t *r, PGresult *res)
{
    if (PQntuples(res) == 0) {
        reply_error(r, MKD_ECONFLICT, "an account with this email already exists");
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
    api_query(r, st_insert_user, (const char *[]){j->email, j->hash, j->name}, on_user_inserted);
}

static void auth_register(rctx_t *r)
{
    account_job_t *j = read_account(r, 1);
    if (j == NULL)
        return;
    if (offload_submit(&r->w->offload, hash_work, hash_done, j) != 0)
        reply_error(r, MKD_EBUSY, "too many sign-ups at once; retry shortly");
}

/* ---- login ------------------------------------------------------------------ */

static void verify_work(void *arg)
{
    account_job_t *j = arg;
    const char *hash = j->user != NULL ? PQgetvalue(j->user, 0, U_HASH) : NULL;
    j->ok = password_verify(hash, j->password, j->password_len);
}

static void on_login_recorded(void *arg)
{
    account_job_t *j = arg;
    if (j->ok)
        reply_session(j->r, 200, j->user);
    else
        reply_error(j->r, MKD_EUNAUTH, "invalid email or password");
    if (j->user != NULL)
        PQclear(j->user);
}

/* The outcome is recorded before the answer: the client's next attempt,
 * on any worker or instance, already counts it. */
static void verify_done(void *arg)
{
    account_job_t *j = arg;
    if (j->ok)
        throttle_succeeded(j->r->w, j->account, on_login_recorded, j);
    else
        throttle_failed(j->r->w, j->account, on_login_recorded, j);
}

static void on_login_user(rctx_t *r, PGresult *res)
{
    account_job_t *j = r->data;
    /* The pool clears `res` after this callback; the verification outlives
     * it, so keep a copy. An unknown email still runs a verification (of a
     * dummy hash): the answer and its timing match a wrong password. */
    j->user = PQntuples(res) == 1 ? PQcopyResult(res, PG_COPYRES_ATTRS | PG_COPYRES_TUPLES) : NULL;
    if (offload_submit(&r->w->offload, verify_work, verify_done, j) != 0) {
        if (j->user != NULL)
            PQclear(j->user);
        reply_error(r, MKD_EBUSY, "too many logins at once; retry shortly");
    }
}

/* A throttled account is answered before the database is asked whether it
 * exists: the same 429, body and (short) time for any email. */
static void on_throttle_checked(void *arg, int64_t wait_ms)
{
    account_job_t *j = arg;
    rctx_t *r = j->r;
    if (wait_ms > 0) {
        char s[24];
        int n = snprintf(s, sizeof(s), "%lld", (long long)throttle_retry_after_s(wait_ms));
        reply_header(r, "retry-after", s, (size_t)n);
        reply_error(r, MKD_ELIMITED,
                    "too many failed logins for this account; retry after the time in Retry-After");
        return;
    }
    api_query(r, st_user_by_email, (const char *[]){j->email}, on_login_user);
}

static void auth_login(rctx_t *r)
{
    account_job_t *j = read_account(r, 0);
    if (j == NULL)
        return;
    r->data = j;
    throttle_account(throttle_policy(), j->email, strlen(j->email), j->account);
    throttle_check(r->w, j->account, on_throttle_checked, j);
}

/* ---- /me ---------------------------------------------------------------------- */

static int render_me(rctx_t *r, PGresult *res, jbuf_t *b)
{
    if (PQntuples(res) == 0)
        return MKD_EUNAUTH; /* a valid signature for a user that no longer exists */
    api_render_row(b, USER, 1, res, 0, 0, "");
    return 0;
}

static void auth_me(rctx_t *r)
{
    char id[24];
    api_id_text(r->user_id, id);
    api_read(r, &(api_read_t){st_user_by_id, (const char *[]){id}, render_me,
                              "the token's user does not exist", NULL, NULL});
}

static void auth_init(void)
{
    throttle_init(api_config());
    const char *cols = api_select_list(USER, 1);
    st_insert_user = api_stmt(3,
                              "INSERT INTO users AS u (email, password_hash, name) VALUES ($1, $2, $3)"
                              " ON CONFLICT ((lower(email))) DO NOTHING RETURNING %s",
                              cols);
    st_user_by_email =
        api_stmt(1, "SELECT %s, u.password_hash FROM users u WHERE lower(u.email) = lower($1)", cols);
    st_user_by_id = api_stmt(1, "SELECT %s FROM users u WHERE u.id = $1::int8", cols);
}

static const route_t routes[] = {
    {.method = M_POST,
     .pattern = "/api/v1/auth/register",
     HANDLER(auth_register),
     .body = BODY_JSON,
     .limit = LIMIT_AUTH},
    {.method = M_POST,
     .pattern = "/api/v1/auth/login",
     HANDLER(auth_login),
     .body = BODY_JSON,
     .limit = LIMIT_AUTH},
    {.method = M_GET, .pattern = "/api/v1/me", HANDLER(auth_me), .auth = AUTH_USER, .limit = LIMIT_API},
};

const api_module_t api_auth = {"auth", routes, sizeof(routes) / sizeof(routes[0]), auth_init, NULL};
