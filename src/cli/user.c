/* `marketd user create | set-admin` (cli/user.h). */
#include "cli/user.h"

#include <libpq-fe.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "cli/db.h"
#include "core/email.h"
#include "core/password.h"

/* POST /auth/register's bounds (src/api/auth.c, api.md). */
#define PASSWORD_MIN 8
#define PASSWORD_MAX 128
#define NAME_MAX_LEN 200
#define EMAIL_MAX    254

typedef struct user_args {
    const char *email, *name;
    int admin, revoke;
} user_args_t;

static int usage(void)
{
    fprintf(stderr, "usage: marketd user create --email EMAIL [--name NAME] [--admin]\n"
                    "       marketd user set-admin --email EMAIL [--revoke]\n"
                    "the password of create comes from MARKETD_PASSWORD or one line of stdin\n");
    return CLI_USER_USAGE;
}

/* Parses argv[2..]; `create` allows --name/--admin, set-admin --revoke. */
static int parse_args(int argc, char **argv, int create, user_args_t *a)
{
    memset(a, 0, sizeof(*a));
    for (int i = 2; i < argc; i++) {
        const char *o = argv[i];
        if (strncmp(o, "--password", 10) == 0 && (o[10] == '\0' || o[10] == '=')) {
            fprintf(stderr, "marketd user: passwords are never taken from the command line (ps shows it to "
                            "every user, shells keep it in their history); pipe it on stdin or set "
                            "MARKETD_PASSWORD\n");
            return -1;
        }
        if (strcmp(o, "--email") == 0 && i + 1 < argc)
            a->email = argv[++i];
        else if (create && strcmp(o, "--name") == 0 && i + 1 < argc)
            a->name = argv[++i];
        else if (create && strcmp(o, "--admin") == 0)
            a->admin = 1;
        else if (!create && strcmp(o, "--revoke") == 0)
            a->revoke = 1;
        else {
            fprintf(stderr, "marketd user: unexpected argument \"%s\"\n", o);
            usage();
            return -1;
        }
    }
    if (a->email == NULL) {
        fprintf(stderr, "marketd user: --email is required\n");
        return -1;
    }
    size_t n = strlen(a->email);
    if (n < 3 || n > EMAIL_MAX || !email_valid(a->email)) {
        fprintf(stderr, "marketd user: \"%s\" is not an email address\n", a->email);
        return -1;
    }
    if (a->name != NULL && (a->name[0] == '\0' || strlen(a->name) > NAME_MAX_LEN)) {
        fprintf(stderr, "marketd user: --name must be 1 to %d characters\n", NAME_MAX_LEN);
        return -1;
    }
    return 0;
}

/* One line of stdin into buf (without its line end); no echo on a terminal. */
static int read_password_line(char *buf, size_t size, size_t *len)
{
    struct termios old, quiet;
    int tty = isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &old) == 0;
    if (tty) {
        fprintf(stderr, "password: ");
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
    }
    char *got = fgets(buf, (int)size, stdin);
    if (tty) {
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
        fprintf(stderr, "\n");
    }
    if (got == NULL)
        return -1;
    *len = strlen(buf);
    if (*len > 0 && buf[*len - 1] != '\n' && !feof(stdin))
        return -2; /* longer than the buffer */
    while (*len > 0 && (buf[*len - 1] == '\n' || buf[*len - 1] == '\r'))
        buf[--*len] = '\0';
    return 0;
}

/* The password from MARKETD_PASSWORD or stdin, checked like the API does. */
static int read_password(char *buf, size_t size, size_t *len)
{
    const char *env = getenv("MARKETD_PASSWORD");
    if (env != NULL && env[0] != '\0') {
        *len = strlen(env);
        if (*len >= size)
            *len = size; /* too long: refused below */
        else
            memcpy(buf, env, *len + 1);
    } else {
        int rc = read_password_line(buf, size, len);
        if (rc == -1) {
            fprintf(stderr,
                    "marketd user: no password: set MARKETD_PASSWORD or write it as one line on stdin\n");
            return -1;
        }
        if (rc == -2)
            *len = size;
    }
    if (*len < PASSWORD_MIN || *len > PASSWORD_MAX) {
        fprintf(stderr, "marketd user: the password must be %d to %d bytes\n", PASSWORD_MIN, PASSWORD_MAX);
        return -1;
    }
    return 0;
}

static int user_create(const user_args_t *a)
{
    char password[PASSWORD_MAX + 2], hash[PASSWORD_HASH_MAX], name[NAME_MAX_LEN + 1];
    size_t plen = 0;
    int rc = CLI_USER_FAILED;
    PGconn *conn = NULL;
    PGresult *res = NULL;

    if (read_password(password, sizeof password, &plen) != 0) {
        sodium_memzero(password, sizeof password);
        return CLI_USER_USAGE;
    }
    int hashed = password_hash(password, plen, hash);
    sodium_memzero(password, sizeof password);
    if (hashed != 0) {
        fprintf(stderr, "marketd user: out of memory hashing the password\n");
        return CLI_USER_FAILED;
    }
    /* Default name: the email's local part (non-empty: email_valid). */
    if (a->name != NULL) {
        snprintf(name, sizeof name, "%s", a->name);
    } else {
        size_t local = (size_t)(strchr(a->email, '@') - a->email);
        snprintf(name, sizeof name, "%.*s", (int)local, a->email);
    }
    conn = cli_db_connect("user");
    if (conn == NULL)
        goto out;
    const char *params[4] = {a->email, hash, name, a->admin ? "true" : "false"};
    res = PQexecParams(
        conn,
        "INSERT INTO users (email, password_hash, name, is_admin) VALUES ($1, $2, $3, $4::boolean)"
        " ON CONFLICT ((lower(email))) DO NOTHING RETURNING id",
        4, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        fprintf(stderr, "marketd user: creating the account failed: %s", PQresultErrorMessage(res));
        goto out;
    }
    if (PQntuples(res) == 0) {
        fprintf(stderr,
                "marketd user: an account with the email %s already exists (marketd user set-admin "
                "changes its role)\n",
                a->email);
        rc = CLI_USER_EXISTS;
        goto out;
    }
    printf("created user %s (%s)%s\n", PQgetvalue(res, 0, 0), a->email,
           a->admin ? " as an administrator" : "");
    rc = CLI_USER_OK;
out:
    PQclear(res);
    PQfinish(conn);
    return rc;
}

static int user_set_admin(const user_args_t *a)
{
    int rc = CLI_USER_FAILED;
    PGconn *conn = cli_db_connect("user");
    PGresult *res = NULL;
    if (conn == NULL)
        return rc;
    const char *params[2] = {a->email, a->revoke ? "false" : "true"};
    res = PQexecParams(conn,
                       "UPDATE users SET is_admin = $2::boolean WHERE lower(email) = lower($1) RETURNING id",
                       2, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        fprintf(stderr, "marketd user: updating the account failed: %s", PQresultErrorMessage(res));
        goto out;
    }
    if (PQntuples(res) == 0) {
        fprintf(stderr, "marketd user: no account with the email %s\n", a->email);
        rc = CLI_USER_NOT_FOUND;
        goto out;
    }
    printf("user %s (%s) %s\n", PQgetvalue(res, 0, 0), a->email,
           a->revoke ? "is no longer an administrator" : "is an administrator");
    rc = CLI_USER_OK;
out:
    PQclear(res);
    PQfinish(conn);
    return rc;
}

int cli_user_main(int argc, char **argv)
{
    user_args_t a;
    if (argc < 2)
        return usage();
    if (strcmp(argv[1], "create") == 0)
        return parse_args(argc, argv, 1, &a) != 0 ? CLI_USER_USAGE : user_create(&a);
    if (strcmp(argv[1], "set-admin") == 0)
        return parse_args(argc, argv, 0, &a) != 0 ? CLI_USER_USAGE : user_set_admin(&a);
    fprintf(stderr, "marketd user: unknown command \"%s\"\n", argv[1]);
    return usage();
}
