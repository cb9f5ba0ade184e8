#ifndef MARKETD_DB_MIGRATE_FILE_H
#define MARKETD_DB_MIGRATE_FILE_H
/*
 * The pure parts of a migration file (no database, no I/O), shared by
 * `marketd migrate`, `migrate status` and `migrate new`, and unit-tested on
 * their own (tests/unit/test_migrate_file.c):
 *
 *   - markers: lines of the file's leading comment block of the form
 *       -- marketd: no-transaction            run statement by statement, outside a transaction
 *       -- marketd: compatible-with-previous  the previous binary still works on the schema after it
 *       -- marketd: incompatible-with-previous  (the default, stated explicitly)
 *     The block is the run of blank and `--` lines at the top of the file;
 *     a marker further down is ordinary SQL comment. An unknown marker is an
 *     error, so a typo cannot silently run a CREATE INDEX CONCURRENTLY in a
 *     transaction or declare a contract migration compatible.
 *   - statement splitting for no-transaction files (quotes, E'' strings,
 *     quoted identifiers, dollar quotes, line and nested block comments);
 *   - the checksum (sha256 of the file's bytes, lower-case hex);
 *   - the name rule of `migrate new` ([a-z0-9_]).
 */
#include <stddef.h>

#define MIGRATE_NO_TRANSACTION 1u
#define MIGRATE_COMPATIBLE     2u

#define MIGRATE_CHECKSUM_HEX 65 /* 64 hex digits and a NUL */
#define MIGRATE_NAME_MAX     64 /* the sanitised name part of NNNN_name.sql */

/*
 * Reads the markers of `sql` (len bytes, no NUL needed) into *flags (a set
 * of MIGRATE_*). Returns 0, or -1 with a message naming the line in `err`
 * (unknown marker, or compatible and incompatible together).
 */
int migrate_parse_markers(const char *sql, size_t len, unsigned *flags, char *err, size_t errlen);

/*
 * Finds the next statement of `sql` from *pos: on 1 the statement is
 * sql[*start, *start + *stmt_len) without its terminating ';' and without
 * surrounding whitespace, and *pos is past it. Text holding only comments
 * and whitespace is no statement. Returns 1, 0 at the end, or -1 when a
 * quote, dollar quote or block comment is not closed (*start is where it
 * began).
 */
int migrate_next_statement(const char *sql, size_t len, size_t *pos, size_t *start, size_t *stmt_len);

/* sha256 of len bytes of sql as 64 lower-case hex digits and a NUL. */
void migrate_checksum(const char *sql, size_t len, char out[MIGRATE_CHECKSUM_HEX]);

/*
 * The file-name form of a migration name: ASCII letters lower-cased, every
 * run of other characters one '_', no leading or trailing '_', at most
 * MIGRATE_NAME_MAX characters. Returns the length written to out (NUL
 * terminated, outlen > MIGRATE_NAME_MAX), or -1 when nothing is left
 * ("", "--", "ßß") or it would be longer than MIGRATE_NAME_MAX.
 */
int migrate_sanitize_name(const char *in, char *out, size_t outlen);

#endif
