#ifndef MARKETD_CLI_USER_H
#define MARKETD_CLI_USER_H
/*
 * `marketd user ...` (argv[0] is "user"): accounts from the binary, so the
 * first production administrator needs no SQL.
 *
 *   user create --email EMAIL [--name NAME] [--admin]
 *       The password is read from MARKETD_PASSWORD, else one line of stdin
 *       (a prompt without echo on a terminal) — never from argv, which
 *       other users see in ps and shells keep in their history: a
 *       --password option is refused. The same rules (email, 8..128-byte
 *       password, 1..200-character name; default: the email's local part)
 *       and the same Argon2id hash (core/password.h) as POST /auth/register.
 *   user set-admin --email EMAIL [--revoke]
 *       Grants (or revokes) administrator rights; effective on the next
 *       request, which reads the flag from the database.
 *
 * DATABASE_URL names the database (blocking libpq: a CLI). Returns the
 * process exit code, one of CLI_USER_*.
 */
enum {
    CLI_USER_OK = 0,
    CLI_USER_FAILED = 1,    /* database unreachable, or an unexpected error */
    CLI_USER_USAGE = 2,     /* bad arguments or input: email, password, name */
    CLI_USER_EXISTS = 3,    /* create: an account with this email exists */
    CLI_USER_NOT_FOUND = 4, /* set-admin: no account with this email */
};

int cli_user_main(int argc, char **argv);
#endif
