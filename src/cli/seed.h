#ifndef MARKETD_CLI_SEED_H
#define MARKETD_CLI_SEED_H
#include <stddef.h>

/*
 * `marketd seed --scale demo|bench`: deterministic demo/benchmark data,
 * bulk-loaded with COPY through blocking libpq (a CLI, not the server).
 * Returns 0 on success, -1 with a message on stderr.
 */
int seed_main(int argc, char **argv);

/*
 * The word lists the seeder draws from (src/cli/seed-data/, format in its
 * README.md), embedded at build time by scripts/embed-seed-data.sh into
 * build/gen/seed_data_embed.c, sorted by name. text holds the file's len
 * bytes as they are, comments included, followed by a NUL. The script has
 * checked the format; seed_main parses the files once at start.
 */
typedef struct seed_data_file {
    const char *name; /* "cities.tsv" */
    const char *text;
    size_t len;
} seed_data_file_t;

extern const seed_data_file_t seed_data_files[];
extern const size_t seed_data_files_count;
#endif
