#ifndef MARKETD_CLI_SEED_H
#define MARKETD_CLI_SEED_H
/*
 * `marketd seed --scale demo|bench`: deterministic demo/benchmark data,
 * bulk-loaded with COPY through blocking libpq (a CLI, not the server).
 * Returns 0 on success, -1 with a message on stderr.
 */
int seed_main(int argc, char **argv);
#endif
