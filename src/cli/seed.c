/*
 * `marketd seed --scale demo|bench [--force]`: deterministic demo and
 * benchmark data (see seed.h).
 *
 * Shape of a run:
 *   1. parse the word lists it draws from (cities, categories, names,
 *      brands: src/cli/seed-data/, compiled in), so that a bad file stops
 *      the run before it touches the database;
 *   2. connect (DATABASE_URL), take an advisory lock so two seeds never
 *      interleave, check the schema is there and the tables are empty
 *      (else skip, or with --force TRUNCATE them);
 *   3. build the "world" in memory: sellers, and every product's seller,
 *      category, price, title and created_at (orders need them: items copy
 *      title and price, and an order only buys products that already
 *      existed at its time);
 *   4. load with COPY FROM STDIN on three connections at once, each in its
 *      own transaction: the catalogue (cities … products) on the main one,
 *      orders and order_items on two worker threads. The order stream is
 *      generated twice, identically (same PRNG, same code), once per
 *      thread: regenerating is far cheaper than the server-side work it
 *      lets run in parallel on a second core. The three transactions commit
 *      only when all three loads succeeded;
 *   5. setval the sequences past the loaded ids, store the orders' documents
 *      (`marketd backfill order-docs`, cli/backfill.h), ANALYZE, print a
 *      summary.
 *
 * Determinism: every random choice comes from splitmix64 streams with fixed
 * seeds, so two runs produce the same rows. Only two things depend on the
 * run: timestamps are relative to the current UTC day (orders must fall in
 * the partitions that exist and "the last 30 days" must have data), and the
 * one password hash has a random salt. The order of the lines of the data
 * files is part of the seed: random choices are indexes into them.
 */
#include "cli/seed.h"

#include "cli/backfill.h"
#include "core/password.h"

#include <errno.h>
#include <libpq-fe.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ------------------------------------------------------------------------ */
/* Reference data: the word lists of src/cli/seed-data/ (see its README.md)  */
/* ------------------------------------------------------------------------ */

/* The longest field of a data file, in bytes. scripts/embed-seed-data.sh
 * refuses longer ones at build time and ref_load again at start, so that
 * the buffers sized from it below never truncate. */
#define SEED_MAX_FIELD 200

typedef struct seed_city {
    const char *name;
    const char *slug;
    int weight;         /* share of sellers, roughly by population */
    int first_district; /* index into ref.districts; a city's are contiguous */
    int ndistricts;
} seed_city_t;

typedef struct seed_district {
    int city; /* index into ref.cities */
    const char *name;
    const char *slug;
} seed_district_t;

typedef struct seed_root {
    const char *name;
    const char *slug;
    const char *sells; /* "Продаем <sells>" in seller descriptions */
} seed_root_t;

/* Grammatical gender of a noun, so that a colour agrees with it; also the
 * columns of colours.tsv. */
enum { G_M, G_F, G_N, G_PL, G_COUNT };

typedef struct seed_noun {
    const char *word;
    int gender;
} seed_noun_t;

typedef struct seed_child {
    int root; /* index into ref.roots */
    const char *name;
    const char *slug;
    int min_rub, max_rub; /* price range, roubles */
    int colours;          /* 1 if "синий" etc. makes sense for it */
    const seed_noun_t *nouns;
    int nnouns;
    const char *const *brands;
    int nbrands;
} seed_child_t;

typedef struct seed_colour {
    const char *form[G_COUNT]; /* by the gender of the noun */
} seed_colour_t;

/* A one-column file: its items in file order. */
typedef struct seed_list {
    const char *const *item;
    int n;
} seed_list_t;

/* One data file split into fields: a private copy of its text with every
 * field NUL-terminated in place, and where the fields of each row start. */
typedef struct seed_table {
    const char *file;
    char *text;
    const char **header; /* ncols column names (.tsv only) */
    const char **field;  /* nrows * ncols, row by row */
    int *line;           /* the file's line number of each row, for messages */
    int nrows, ncols;
} seed_table_t;

enum {
    F_CITIES,
    F_DISTRICTS,
    F_CATEGORIES,
    F_SUBCATEGORIES,
    F_NOUNS,
    F_BRANDS,
    F_COLOURS,
    F_MODEL_WORDS,
    F_PHRASES,
    F_MALE_NAMES,
    F_FEMALE_NAMES,
    F_SURNAMES,
    F_SHOP_PREFIXES,
    F_SHOP_SUFFIXES,
    F_SHOP_WORDS,
    F_COUNT
};

/* The files and their columns (NULL: a one-column .txt file). */
static const struct {
    const char *file;
    const char *columns;
} seed_files[F_COUNT] = {
    [F_CITIES] = {"cities.tsv", "name slug weight"},
    [F_DISTRICTS] = {"districts.tsv", "city name slug"},
    [F_CATEGORIES] = {"categories.tsv", "name slug sells"},
    [F_SUBCATEGORIES] = {"subcategories.tsv", "parent name slug min_rub max_rub colours"},
    [F_NOUNS] = {"nouns.tsv", "subcategory gender noun"},
    [F_BRANDS] = {"brands.tsv", "subcategory brand"},
    [F_COLOURS] = {"colours.tsv", "m f n pl"},
    [F_MODEL_WORDS] = {"model-words.txt", NULL},
    [F_PHRASES] = {"phrases.txt", NULL},
    [F_MALE_NAMES] = {"male-names.txt", NULL},
    [F_FEMALE_NAMES] = {"female-names.txt", NULL},
    [F_SURNAMES] = {"surnames.txt", NULL},
    [F_SHOP_PREFIXES] = {"shop-prefixes.txt", NULL},
    [F_SHOP_SUFFIXES] = {"shop-suffixes.txt", NULL},
    [F_SHOP_WORDS] = {"shop-words.txt", NULL},
};

/* Everything the generator draws from, parsed once by ref_load at start and
 * read-only afterwards (the loader threads only read it). Ids follow the
 * order of the files: cities.id is the index in cities + 1, and so on. */
static struct {
    seed_table_t table[F_COUNT]; /* own the text every string below points into */
    seed_city_t *cities;
    int ncities;
    int total_weight; /* of all cities */
    seed_district_t *districts;
    int ndistricts;
    seed_root_t *roots;
    int nroots;
    seed_child_t *children;
    int nchildren;
    seed_noun_t *nouns; /* every child's, child by child */
    const char **brands;
    seed_colour_t *colours;
    int ncolours;
    seed_list_t model_words, phrases, male_names, female_names, surnames, shop_prefixes, shop_suffixes,
        shop_words;
} ref;

/* ------------------------------------------------------------------------ */
/* Scales, constants                                                        */
/* ------------------------------------------------------------------------ */

typedef struct seed_scale {
    const char *name;
    int users;
    int sellers;
    int products;
    int64_t orders;
} seed_scale_t;

static const seed_scale_t seed_scales[] = {
    {"demo", 200, 20, 2000, 5000},
    {"bench", 100000, 10000, 1000000, 10000000},
};

#define SEED_DAY            86400
#define SEED_HISTORY_DAYS   730 /* orders and products: the last 24 months */
#define SEED_RECENT_DAYS    30  /* "popular sellers" looks at the last 30 days */
#define SEED_RECENT_SHARE   0.15
#define SEED_COPY_BATCH     (1u << 20) /* bytes handed to PQputCopyData at once */
#define SEED_PROGRESS_EVERY 2.0        /* seconds between progress lines */
#define SEED_ORDER_ID_MUL   INT64_C(1000000000)

/* Room reserved for one COPY row: the longest row that SEED_MAX_FIELD
 * allows (order_items, three titles of four fields, each doubled by COPY
 * escaping) is about 5 KiB. */
#define SEED_ROW_MAX 16384

/* Same key space as migrate's lock, different key ("mkts"). */
#define SEED_LOCK_KEY "1835758707"

/* PRNG streams: one per kind of entity, so that e.g. a user's name does not
 * change when the number of products does. */
enum { RNG_WORLD = 1, RNG_USER, RNG_SELLER, RNG_PRODUCT_TEXT, RNG_ORDERS };
#define SEED_PRNG_SEED UINT64_C(0x6d61726b65746421) /* "marketd!" */

static const char *const seed_order_statuses[] = {"new", "confirmed", "shipped", "delivered", "cancelled"};
enum { ST_NEW, ST_CONFIRMED, ST_SHIPPED, ST_DELIVERED, ST_CANCELLED };

/* ------------------------------------------------------------------------ */
/* PRNG: splitmix64                                                          */
/* ------------------------------------------------------------------------ */

typedef struct rng {
    uint64_t s;
} rng_t;

static uint64_t rng_next(rng_t *r)
{
    uint64_t z = (r->s += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

/* A stream for one entity: independent of how many others came before. */
static rng_t rng_for(uint64_t stream, uint64_t id)
{
    rng_t r = {SEED_PRNG_SEED ^ (stream << 56) ^ (id * UINT64_C(0xd1b54a32d192ed03))};
    rng_next(&r);
    return r;
}

/* Modulo bias is below 2^-40 for every n used here. n is never 0, as
 * ref_load refuses empty lists; answering 0 is the last guard against a
 * division by 0. */
static uint64_t rng_below(rng_t *r, uint64_t n)
{
    return n ? rng_next(r) % n : 0;
}

static double rng_unit(rng_t *r)
{
    return (double)(rng_next(r) >> 11) * 0x1.0p-53;
}

/* One item of a word list, uniformly. */
static const char *pick_word(rng_t *r, const seed_list_t *l)
{
    return l->item[rng_below(r, (uint64_t)l->n)];
}

/* ------------------------------------------------------------------------ */
/* Small helpers                                                             */
/* ------------------------------------------------------------------------ */

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL) {
        fprintf(stderr, "seed: out of memory (%zu bytes)\n", n);
        abort();
    }
    return p;
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (p == NULL) {
        fprintf(stderr, "seed: out of memory\n");
        abort();
    }
    return p;
}

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void print_pq_error(const char *what, const char *msg)
{
    size_t len = strlen(msg);
    while (len > 0 && (msg[len - 1] == '\n' || msg[len - 1] == '\r'))
        len--;
    fprintf(stderr, "seed: %s: %.*s\n", what, (int)len, msg);
}

static int exec_ok(PGconn *conn, const char *sql, const char *what)
{
    PGresult *res = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(res);
    int rc = 0;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        print_pq_error(what, res ? PQresultErrorMessage(res) : PQerrorMessage(conn));
        rc = -1;
    }
    PQclear(res);
    return rc;
}

/* Runs a one-value query; copies the value into out. Returns 0 or -1. */
static int query_value(PGconn *conn, const char *sql, char *out, size_t outlen, const char *what)
{
    int rc = -1;
    PGresult *res = PQexec(conn, sql);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1 || PQnfields(res) != 1) {
        print_pq_error(what, res ? PQresultErrorMessage(res) : PQerrorMessage(conn));
        goto out;
    }
    snprintf(out, outlen, "%s", PQgetvalue(res, 0, 0));
    rc = 0;
out:
    PQclear(res);
    return rc;
}

static PGconn *seed_connect(const char *url)
{
    PGconn *conn = PQconnectdb(url);
    if (PQstatus(conn) != CONNECTION_OK) {
        print_pq_error("cannot connect", PQerrorMessage(conn));
        PQfinish(conn);
        return NULL;
    }
    /* A bulk load: losing the last commits in a crash costs a rerun, not
     * data anyone relies on, so do not wait for the WAL flush. */
    if (exec_ok(conn,
                "SET synchronous_commit = off; SET client_min_messages = warning;"
                " SET application_name = 'marketd seed'; SET TIME ZONE 'UTC'",
                "session setup") != 0) {
        PQfinish(conn);
        return NULL;
    }
    return conn;
}

/* Howard Hinnant's days → civil date (proleptic Gregorian, UTC). */
static void civil_from_days(int64_t z, int *year, int *month, int *day)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    unsigned d = doy - (153 * mp + 2) / 5 + 1;
    unsigned m = mp < 10 ? mp + 3 : mp - 9;
    *year = (int)((int64_t)yoe + era * 400 + (m <= 2));
    *month = (int)m;
    *day = (int)d;
}

/* ------------------------------------------------------------------------ */
/* Reading the data files into ref                                           */
/* ------------------------------------------------------------------------ */

static int data_error(const seed_table_t *t, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prints "seed: src/cli/seed-data/<file>:<line>: <message>"; returns -1. */
static int data_error(const seed_table_t *t, int line, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "seed: src/cli/seed-data/%s:%d: ", t->file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return -1;
}

static const char *cell(const seed_table_t *t, int row, int col)
{
    return t->field[(size_t)row * (size_t)t->ncols + (size_t)col];
}

/* Splits a line in place at its tabs into at most max fields; returns how
 * many fields it has (more than max: the extra ones were not stored). */
static int split_line(char *s, const char **field, int max)
{
    int n = 0;
    for (;;) {
        char *tab = strchr(s, '\t');
        if (n < max)
            field[n] = s;
        n++;
        if (tab == NULL)
            return n;
        *tab = '\0';
        s = tab + 1;
    }
}

/* Whether the header fields are the words of columns ("name slug weight"). */
static int header_matches(const char *const *header, const char *columns)
{
    for (int i = 0; *columns != '\0'; i++) {
        size_t n = strcspn(columns, " ");
        if (strlen(header[i]) != n || memcmp(header[i], columns, n) != 0)
            return 0;
        columns += n + (columns[n] == ' ');
    }
    return 1;
}

/* Splits seed_files[f] into ref.table[f]. The script checked the format at
 * build time; what is checked again here is what the code below relies on:
 * the columns, every field there, none empty or longer than SEED_MAX_FIELD,
 * at least one row. Returns 0 or -1 with a message. */
static int table_load(int f)
{
    seed_table_t *t = &ref.table[f];
    const char *columns = seed_files[f].columns;
    const seed_data_file_t *df = NULL;
    size_t nlines = 1;
    char *s, *next, *end;
    int line = 0;

    t->file = seed_files[f].file;
    for (size_t i = 0; i < seed_data_files_count; i++)
        if (strcmp(seed_data_files[i].name, t->file) == 0)
            df = &seed_data_files[i];
    if (df == NULL) {
        fprintf(stderr, "seed: src/cli/seed-data/%s was not embedded at build time\n", t->file);
        return -1;
    }
    t->ncols = 1;
    for (const char *c = columns; c != NULL && *c != '\0'; c++)
        t->ncols += *c == ' ';
    t->text = xmalloc(df->len + 1);
    memcpy(t->text, df->text, df->len);
    t->text[df->len] = '\0';
    for (size_t i = 0; i < df->len; i++)
        nlines += t->text[i] == '\n';
    t->header = xcalloc((size_t)t->ncols, sizeof *t->header);
    t->field = xcalloc(nlines * (size_t)t->ncols, sizeof *t->field);
    t->line = xcalloc(nlines, sizeof *t->line);

    end = t->text + df->len;
    for (s = t->text; s < end; s = next) {
        char *eol = memchr(s, '\n', (size_t)(end - s));
        int is_header = columns != NULL && t->header[0] == NULL;
        const char **field = is_header ? t->header : &t->field[(size_t)t->nrows * (size_t)t->ncols];
        int n;

        line++;
        next = eol != NULL ? eol + 1 : end;
        if (eol != NULL)
            *eol = '\0';
        if (*s == '\0' || *s == '#')
            continue;
        n = split_line(s, field, t->ncols);
        if (n != t->ncols)
            return data_error(t, line, "%d fields, expected %d (%s)", n, t->ncols,
                              columns != NULL ? columns : "one item a line");
        for (int i = 0; i < n; i++) {
            size_t len = strlen(field[i]);
            if (len == 0 || len > SEED_MAX_FIELD)
                return data_error(t, line, "field %d is empty or longer than %d bytes", i + 1,
                                  SEED_MAX_FIELD);
        }
        if (is_header && !header_matches(t->header, columns))
            return data_error(t, line, "the header must be the column names \"%s\", tab-separated", columns);
        if (!is_header)
            t->line[t->nrows++] = line;
    }
    if (t->nrows == 0)
        return data_error(t, line, "no rows");
    return 0;
}

/* A whole number in lo..hi from column col of row. Returns 0 or -1. */
static int cell_int(const seed_table_t *t, int row, int col, int lo, int hi, int *out)
{
    const char *s = cell(t, row, col);
    char *end;
    long v;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < lo || v > hi)
        return data_error(t, t->line[row], "%s is \"%s\", expected a whole number from %d to %d",
                          t->header[col], s, lo, hi);
    *out = (int)v;
    return 0;
}

/* The first row of t whose column col is s, or -1. */
static int table_find(const seed_table_t *t, int col, const char *s)
{
    for (int r = 0; r < t->nrows; r++)
        if (strcmp(cell(t, r, col), s) == 0)
            return r;
    return -1;
}

/* Other files refer to these rows by this column: it must be unique. */
static int check_unique(const seed_table_t *t, int col)
{
    for (int r = 1; r < t->nrows; r++) {
        int first = table_find(t, col, cell(t, r, col));
        if (first < r)
            return data_error(t, t->line[r], "%s \"%s\" is already on line %d", t->header[col],
                              cell(t, r, col), t->line[first]);
    }
    return 0;
}

/* The rows of t name their owner, a row of `owners`, in column col by the
 * owner's column key; they must come owner by owner in the owners' order,
 * every owner at least once, so that an owner's rows are contiguous and the
 * ids they get follow the file. Returns each row's owner (the caller frees
 * it), or NULL after a message. */
static int *group_rows(const seed_table_t *t, int col, const seed_table_t *owners, int key)
{
    int *owner = xcalloc((size_t)t->nrows, sizeof *owner);
    int prev = -1;

    for (int r = 0; r < t->nrows; r++) {
        const char *name = cell(t, r, col);
        int o = table_find(owners, key, name);
        if (o < 0) {
            data_error(t, t->line[r], "%s \"%s\" is not in %s", t->header[col], name, owners->file);
            goto fail;
        }
        if (o < prev) {
            data_error(t, t->line[r], "%s \"%s\" comes after \"%s\": keep the rows in the order of %s",
                       t->header[col], name, cell(owners, prev, key), owners->file);
            goto fail;
        }
        if (o > prev + 1)
            break; /* owner prev + 1 has no rows: said below */
        owner[r] = prev = o;
    }
    if (prev == owners->nrows - 1)
        return owner;
    data_error(owners, owners->line[prev + 1], "\"%s\" has no rows in %s (it needs at least one)",
               cell(owners, prev + 1, key), t->file);
fail:
    free(owner);
    return NULL;
}

static int gender_of(const char *s)
{
    static const char *const codes[G_COUNT] = {"m", "f", "n", "pl"};
    for (int g = 0; g < G_COUNT; g++)
        if (strcmp(s, codes[g]) == 0)
            return g;
    return -1;
}

static seed_list_t list_of(int f)
{
    seed_list_t l = {ref.table[f].field, ref.table[f].nrows};
    return l;
}

/* Parses every data file into ref, once, before anything else. Returns 0,
 * or -1 after a message naming the file and line (ref_free cleans up). */
static int ref_load(void)
{
    const seed_table_t *t, *cities = &ref.table[F_CITIES], *roots = &ref.table[F_CATEGORIES],
                           *children = &ref.table[F_SUBCATEGORIES];
    int *owner = NULL, rc = -1;
    int64_t total_weight = 0;

    for (int f = 0; f < F_COUNT; f++)
        if (table_load(f) != 0)
            goto out;

    if (check_unique(cities, 1) != 0)
        goto out;
    ref.ncities = cities->nrows;
    ref.cities = xcalloc((size_t)ref.ncities, sizeof *ref.cities);
    for (int r = 0; r < cities->nrows; r++) {
        seed_city_t *c = &ref.cities[r];
        c->name = cell(cities, r, 0);
        c->slug = cell(cities, r, 1);
        if (cell_int(cities, r, 2, 1, 1000000, &c->weight) != 0)
            goto out;
        total_weight += c->weight;
    }
    /* pick_weighted_city draws below the total in an int. */
    if (total_weight > INT_MAX) {
        data_error(cities, cities->line[cities->nrows - 1], "the weights add up to more than %d", INT_MAX);
        goto out;
    }
    ref.total_weight = (int)total_weight;

    t = &ref.table[F_DISTRICTS];
    owner = group_rows(t, 0, cities, 1);
    if (owner == NULL)
        goto out;
    ref.ndistricts = t->nrows;
    ref.districts = xcalloc((size_t)ref.ndistricts, sizeof *ref.districts);
    for (int r = 0; r < t->nrows; r++) {
        seed_city_t *c = &ref.cities[owner[r]];
        ref.districts[r].city = owner[r];
        ref.districts[r].name = cell(t, r, 1);
        ref.districts[r].slug = cell(t, r, 2);
        if (c->ndistricts++ == 0)
            c->first_district = r;
    }
    free(owner);
    owner = NULL;

    if (check_unique(roots, 1) != 0)
        goto out;
    ref.nroots = roots->nrows;
    ref.roots = xcalloc((size_t)ref.nroots, sizeof *ref.roots);
    for (int r = 0; r < roots->nrows; r++) {
        ref.roots[r].name = cell(roots, r, 0);
        ref.roots[r].slug = cell(roots, r, 1);
        ref.roots[r].sells = cell(roots, r, 2);
    }

    /* seed_product_t keeps the index of a subcategory in a byte; nouns.tsv
     * and brands.tsv name them by slug, unique across all parents. */
    if (children->nrows > UINT8_MAX + 1) {
        data_error(children, children->line[UINT8_MAX + 1], "more than %d subcategories", UINT8_MAX + 1);
        goto out;
    }
    if (check_unique(children, 2) != 0)
        goto out;
    ref.nchildren = children->nrows;
    ref.children = xcalloc((size_t)ref.nchildren, sizeof *ref.children);
    for (int r = 0; r < children->nrows; r++) {
        seed_child_t *ch = &ref.children[r];
        const char *colours = cell(children, r, 5);
        ch->root = table_find(roots, 1, cell(children, r, 0));
        if (ch->root < 0) {
            data_error(children, children->line[r], "parent \"%s\" is not in %s", cell(children, r, 0),
                       roots->file);
            goto out;
        }
        ch->name = cell(children, r, 1);
        ch->slug = cell(children, r, 2);
        /* make_price takes a logarithm and caps prices at 100,000 roubles. */
        if (cell_int(children, r, 3, 1, 100000, &ch->min_rub) != 0 ||
            cell_int(children, r, 4, ch->min_rub, 100000, &ch->max_rub) != 0)
            goto out;
        if (strcmp(colours, "yes") != 0 && strcmp(colours, "no") != 0) {
            data_error(children, children->line[r], "colours is \"%s\", expected yes or no", colours);
            goto out;
        }
        ch->colours = strcmp(colours, "yes") == 0;
    }
    /* A product's category is drawn among the children of a root. */
    for (int r = 0; r < ref.nroots; r++) {
        int n = 0;
        for (int c = 0; c < ref.nchildren; c++)
            n += ref.children[c].root == r;
        if (n == 0) {
            data_error(roots, roots->line[r], "\"%s\" has no rows in %s (it needs at least one)",
                       ref.roots[r].slug, children->file);
            goto out;
        }
    }

    t = &ref.table[F_NOUNS];
    owner = group_rows(t, 0, children, 2);
    if (owner == NULL)
        goto out;
    ref.nouns = xcalloc((size_t)t->nrows, sizeof *ref.nouns);
    for (int r = 0; r < t->nrows; r++) {
        seed_child_t *ch = &ref.children[owner[r]];
        ref.nouns[r].gender = gender_of(cell(t, r, 1));
        ref.nouns[r].word = cell(t, r, 2);
        if (ref.nouns[r].gender < 0) {
            data_error(t, t->line[r], "gender is \"%s\", expected m, f, n or pl", cell(t, r, 1));
            goto out;
        }
        if (ch->nnouns++ == 0)
            ch->nouns = &ref.nouns[r];
    }
    free(owner);
    owner = NULL;

    t = &ref.table[F_BRANDS];
    owner = group_rows(t, 0, children, 2);
    if (owner == NULL)
        goto out;
    ref.brands = xcalloc((size_t)t->nrows, sizeof *ref.brands);
    for (int r = 0; r < t->nrows; r++) {
        seed_child_t *ch = &ref.children[owner[r]];
        ref.brands[r] = cell(t, r, 1);
        if (ch->nbrands++ == 0)
            ch->brands = &ref.brands[r];
    }

    t = &ref.table[F_COLOURS];
    ref.ncolours = t->nrows;
    ref.colours = xcalloc((size_t)ref.ncolours, sizeof *ref.colours);
    for (int r = 0; r < t->nrows; r++)
        for (int g = 0; g < G_COUNT; g++)
            ref.colours[r].form[g] = cell(t, r, g);

    ref.model_words = list_of(F_MODEL_WORDS);
    ref.phrases = list_of(F_PHRASES);
    ref.male_names = list_of(F_MALE_NAMES);
    ref.female_names = list_of(F_FEMALE_NAMES);
    ref.surnames = list_of(F_SURNAMES);
    ref.shop_prefixes = list_of(F_SHOP_PREFIXES);
    ref.shop_suffixes = list_of(F_SHOP_SUFFIXES);
    ref.shop_words = list_of(F_SHOP_WORDS);
    rc = 0;
out:
    free(owner);
    return rc;
}

static void ref_free(void)
{
    for (int f = 0; f < F_COUNT; f++) {
        free(ref.table[f].text);
        free(ref.table[f].header);
        free(ref.table[f].field);
        free(ref.table[f].line);
    }
    free(ref.cities);
    free(ref.districts);
    free(ref.roots);
    free(ref.children);
    free(ref.nouns);
    free(ref.brands);
    free(ref.colours);
    memset(&ref, 0, sizeof ref);
}

/* ------------------------------------------------------------------------ */
/* COPY output                                                               */
/* ------------------------------------------------------------------------ */

typedef struct copy_out {
    PGconn *conn;
    const char *table;
    char *data;
    size_t len;
    size_t cap;
    atomic_int *stop; /* set by whoever fails first; every loader polls it */
    int failed;
} copy_out_t;

static int copy_begin(copy_out_t *c, PGconn *conn, const char *table, const char *sql, atomic_int *stop)
{
    PGresult *res;
    memset(c, 0, sizeof *c);
    c->conn = conn;
    c->table = table;
    c->stop = stop;
    res = PQexec(conn, sql);
    if (PQresultStatus(res) != PGRES_COPY_IN) {
        print_pq_error(table, res ? PQresultErrorMessage(res) : PQerrorMessage(conn));
        PQclear(res);
        c->failed = 1;
        return -1;
    }
    PQclear(res);
    c->cap = SEED_COPY_BATCH + 65536;
    c->data = xmalloc(c->cap);
    return 0;
}

static int copy_flush(copy_out_t *c)
{
    if (c->failed)
        return -1;
    if (atomic_load(c->stop)) {
        c->failed = 1;
        return -1;
    }
    if (c->len > 0 && PQputCopyData(c->conn, c->data, (int)c->len) != 1) {
        print_pq_error(c->table, PQerrorMessage(c->conn));
        c->failed = 1;
        return -1;
    }
    c->len = 0;
    return 0;
}

/* Room for n more bytes; returns where to write them. */
static char *copy_reserve(copy_out_t *c, size_t n)
{
    if (c->len + n > c->cap) {
        c->cap = (c->len + n) * 2;
        c->data = realloc(c->data, c->cap);
        if (c->data == NULL) {
            fprintf(stderr, "seed: out of memory\n");
            abort();
        }
    }
    return c->data + c->len;
}

/* After each row: hand over a full batch. */
static int copy_row_done(copy_out_t *c, const char *end)
{
    c->len = (size_t)(end - c->data);
    if (c->len >= SEED_COPY_BATCH)
        return copy_flush(c);
    return 0;
}

/* Ends the COPY: with ok, sends the rest and checks the server's verdict
 * (constraint violations surface here); otherwise aborts it. Frees the
 * buffer either way. Returns 0 or -1. */
static int copy_end(copy_out_t *c, int ok)
{
    int rc = -1;
    PGresult *res;
    if (ok && copy_flush(c) != 0)
        ok = 0;
    if (PQputCopyEnd(c->conn, ok ? NULL : "seed aborted") != 1) {
        print_pq_error(c->table, PQerrorMessage(c->conn));
        goto out;
    }
    rc = 0;
    while ((res = PQgetResult(c->conn)) != NULL) {
        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            /* Our own abort also ends up here; only report real errors. */
            if (ok)
                print_pq_error(c->table, PQresultErrorMessage(res));
            rc = -1;
        }
        PQclear(res);
    }
    if (!ok)
        rc = -1;
out:
    free(c->data);
    c->data = NULL;
    return rc;
}

static char *put_str(char *p, const char *s)
{
    size_t n = strlen(s);
    memcpy(p, s, n);
    return p + n;
}

/* COPY text format: backslash, tab, newline and CR must be escaped. The
 * caller reserved 2 * strlen(s) bytes. */
static char *put_text(char *p, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        switch (ch) {
        case '\\':
            *p++ = '\\';
            *p++ = '\\';
            break;
        case '\t':
            *p++ = '\\';
            *p++ = 't';
            break;
        case '\n':
            *p++ = '\\';
            *p++ = 'n';
            break;
        case '\r':
            *p++ = '\\';
            *p++ = 'r';
            break;
        default:
            *p++ = ch;
        }
    }
    return p;
}

static char *put_i64(char *p, int64_t v)
{
    char tmp[24];
    int n = 0;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    if (v < 0)
        *p++ = '-';
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    while (n > 0)
        *p++ = tmp[--n];
    return p;
}

static char *put_2d(char *p, int v)
{
    *p++ = (char)('0' + v / 10);
    *p++ = (char)('0' + v % 10);
    return p;
}

/* "YYYY-MM-DD HH:MM:SS+00" (the sessions run in UTC, but be explicit). */
static char *put_ts(char *p, int64_t epoch)
{
    int y, mo, d;
    int64_t days = epoch / SEED_DAY;
    int sec = (int)(epoch - days * SEED_DAY);
    civil_from_days(days, &y, &mo, &d);
    p = put_2d(p, y / 100);
    p = put_2d(p, y % 100);
    *p++ = '-';
    p = put_2d(p, mo);
    *p++ = '-';
    p = put_2d(p, d);
    *p++ = ' ';
    p = put_2d(p, sec / 3600);
    *p++ = ':';
    p = put_2d(p, sec / 60 % 60);
    *p++ = ':';
    p = put_2d(p, sec % 60);
    return put_str(p, "+00");
}

/* ------------------------------------------------------------------------ */
/* Progress                                                                  */
/* ------------------------------------------------------------------------ */

typedef struct progress {
    const char *table;
    int64_t total;
    double t0;
    double last;
} progress_t;

static void progress_start(progress_t *p, const char *table, int64_t total)
{
    p->table = table;
    p->total = total;
    p->t0 = p->last = mono_now();
}

/* done counts towards total; rows is what was written (the same, except for
 * order_items, which counts orders done and item rows written). */
static void progress_tick(progress_t *p, int64_t done, int64_t rows)
{
    double now;
    if ((done & 4095) != 0)
        return;
    now = mono_now();
    if (now - p->last < SEED_PROGRESS_EVERY)
        return;
    p->last = now;
    if (rows == done)
        fprintf(stderr, "seed: %s %lld/%lld (%.0f rows/s)\n", p->table, (long long)done, (long long)p->total,
                (double)rows / (now - p->t0));
    else
        fprintf(stderr, "seed: %s %lld rows, orders %lld/%lld (%.0f rows/s)\n", p->table, (long long)rows,
                (long long)done, (long long)p->total, (double)rows / (now - p->t0));
}

static void progress_done(progress_t *p, int64_t done)
{
    double secs = mono_now() - p->t0;
    /* Small tables finish in milliseconds: say nothing about them. */
    if (secs >= 1.0)
        fprintf(stderr, "seed: %s %lld rows in %.1f s (%.0f rows/s)\n", p->table, (long long)done, secs,
                (double)done / secs);
}

/* ------------------------------------------------------------------------ */
/* The world: what orders need to know about sellers and products            */
/* ------------------------------------------------------------------------ */

typedef struct seed_seller {
    int city;        /* index into ref.cities */
    int district_id; /* districts.id */
    int roots[2];    /* the seller's specialities, indexes into ref.roots */
    int rating;      /* hundredths, 300..500 */
    int64_t created;
    int first_product; /* products of a seller are contiguous, by created_at */
    int nproducts;
} seed_seller_t;

typedef struct seed_product {
    int64_t created;
    int64_t updated;
    int64_t price; /* kopecks */
    uint32_t title_off;
    uint16_t title_len;
    uint8_t child; /* index into ref.children */
    uint8_t archived;
    int32_t seller; /* index into sellers */
    int32_t stock;
} seed_product_t;

typedef struct seed_world {
    const seed_scale_t *scale;
    int64_t anchor;       /* today 00:00 UTC: the end of generated history */
    int64_t history_from; /* anchor - 24 months */
    int64_t recent_from;  /* anchor - 30 days */
    seed_seller_t *sellers;
    double *seller_cum_weight; /* cumulative order popularity */
    seed_product_t *products;
    char *titles;
    size_t titles_len, titles_cap;
    char password_hash[crypto_pwhash_STRBYTES];
} seed_world_t;

static int category_id_of_root(int root)
{
    return root + 1; /* roots are loaded first */
}

static int category_id_of_child(int child)
{
    return ref.nroots + child + 1;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static void title_append(seed_world_t *w, size_t *len, const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (w->titles_len + *len + n + 1 > w->titles_cap) {
        w->titles_cap = (w->titles_len + *len + n + 1) * 2;
        w->titles = realloc(w->titles, w->titles_cap);
        if (w->titles == NULL) {
            fprintf(stderr, "seed: out of memory\n");
            abort();
        }
    }
    if (n > 0)
        memcpy(w->titles + w->titles_len + *len, s, n);
    *len += n;
}

/* "Смартфон Samsung Galaxy A54 черный": noun, brand, maybe a model, maybe a
 * colour agreeing with the noun. Cyrillic and Latin, so `q` finds both. */
static void make_title(seed_world_t *w, seed_product_t *p, rng_t *r)
{
    const seed_child_t *c = &ref.children[p->child];
    const seed_noun_t *noun;
    size_t len = 0;

    noun = &c->nouns[rng_below(r, (uint64_t)c->nnouns)];
    title_append(w, &len, noun->word);
    title_append(w, &len, " ");
    title_append(w, &len, c->brands[rng_below(r, (uint64_t)c->nbrands)]);
    if (rng_below(r, 100) < 60) {
        char model[SEED_MAX_FIELD + 2];
        if (rng_below(r, 3) == 0) {
            snprintf(model, sizeof model, " %s", pick_word(r, &ref.model_words));
        } else {
            /* The number is drawn before the letter (see seller_text). */
            unsigned number = (unsigned)(2 + rng_below(r, 98));
            snprintf(model, sizeof model, " %c%u", "AXSGMTPNRZ"[rng_below(r, 10)], number);
        }
        title_append(w, &len, model);
    }
    if (c->colours && rng_below(r, 100) < 50) {
        title_append(w, &len, " ");
        title_append(w, &len, ref.colours[rng_below(r, (uint64_t)ref.ncolours)].form[noun->gender]);
    }
    p->title_off = (uint32_t)w->titles_len;
    p->title_len = (uint16_t)len;
    w->titles_len += len;
}

/* Log-uniform in the category's range, then a shop price: 12 990 ₽, 499 ₽.
 * Rounding makes plenty of equal prices, which price sorting must handle. */
static int64_t make_price(const seed_child_t *c, rng_t *r)
{
    double lo = log((double)c->min_rub), hi = log((double)c->max_rub);
    int64_t rub = (int64_t)exp(lo + (hi - lo) * rng_unit(r));
    int64_t step = rub < 1000 ? 10 : rub < 10000 ? 100 : 1000;
    rub = (rub / step + 1) * step;
    if (rub > 100 && rng_below(r, 2) == 0)
        rub -= step >= 100 ? 10 : 1;
    if (rub < 1)
        rub = 1;
    if (rub > 100000)
        rub = 100000;
    return rub * 100;
}

static int pick_weighted_city(rng_t *r)
{
    int x = (int)rng_below(r, (uint64_t)ref.total_weight);
    for (int i = 0; i < ref.ncities; i++) {
        if (x < ref.cities[i].weight)
            return i;
        x -= ref.cities[i].weight;
    }
    return 0;
}

static void world_free(seed_world_t *w)
{
    free(w->sellers);
    free(w->seller_cum_weight);
    free(w->products);
    free(w->titles);
}

static void world_build(seed_world_t *w, const seed_scale_t *scale)
{
    rng_t r = rng_for(RNG_WORLD, 0);
    int nsellers = scale->sellers, nproducts = scale->products;
    double *weights = xmalloc(sizeof(double) * (size_t)nsellers);
    int64_t *times = NULL;
    double wsum = 0, acc = 0;
    int assigned = 0;

    w->sellers = xcalloc((size_t)nsellers, sizeof *w->sellers);
    w->products = xcalloc((size_t)nproducts, sizeof *w->products);
    w->seller_cum_weight = xmalloc(sizeof(double) * (size_t)nsellers);
    w->titles_cap = (size_t)nproducts * 48 + 4096;
    w->titles = xmalloc(w->titles_cap);

    /* Sellers: city by population, a district of that city, one or two
     * specialities, an opening date just before the 24-month history. */
    for (int s = 0; s < nsellers; s++) {
        seed_seller_t *sl = &w->sellers[s];
        const seed_city_t *city;
        sl->city = pick_weighted_city(&r);
        city = &ref.cities[sl->city];
        /* Reference ids follow the data files: district index + 1. */
        sl->district_id = city->first_district + 1 + (int)rng_below(&r, (uint64_t)city->ndistricts);
        sl->roots[0] = (int)rng_below(&r, (uint64_t)ref.nroots);
        sl->roots[1] = rng_below(&r, 2) ? sl->roots[0] : (int)rng_below(&r, (uint64_t)ref.nroots);
        sl->rating = 300 + (int)(200.0 * sqrt(rng_unit(&r)));
        sl->created =
            w->history_from - (int64_t)(1 + rng_below(&r, 28)) * SEED_DAY - (int64_t)rng_below(&r, SEED_DAY);
        weights[s] = 0.2 + 1.6 * rng_unit(&r);
        wsum += weights[s];
    }
    /* Product counts: every seller at least one, the rest by weight. */
    for (int s = 0; s < nsellers; s++) {
        int n = 1 + (int)(weights[s] / wsum * (double)(nproducts - nsellers));
        w->sellers[s].nproducts = n;
        assigned += n;
    }
    for (int s = 0; assigned < nproducts; s = (s + 1) % nsellers) {
        w->sellers[s].nproducts++;
        assigned++;
    }

    /* Products, seller by seller, each seller's in created_at order, so
     * "which of this seller's products existed at time t" is a prefix. */
    times = xmalloc(sizeof(int64_t) * (size_t)nproducts);
    for (int s = 0, pid = 0; s < nsellers; s++) {
        seed_seller_t *sl = &w->sellers[s];
        int n = sl->nproducts;
        sl->first_product = pid;
        for (int i = 0; i < n; i++)
            times[i] = w->history_from + (int64_t)(rng_unit(&r) * (double)(w->anchor - w->history_from - 1));
        qsort(times, (size_t)n, sizeof times[0], cmp_i64);
        for (int i = 0; i < n; i++, pid++) {
            seed_product_t *p = &w->products[pid];
            int root = sl->roots[rng_below(&r, 2)];
            if (rng_below(&r, 100) < 15)
                root = (int)rng_below(&r, (uint64_t)ref.nroots); /* the odd item off-topic */
            {
                /* A child of that root, uniformly. */
                int k = 0, pick;
                for (int c = 0; c < ref.nchildren; c++)
                    k += ref.children[c].root == root;
                pick = (int)rng_below(&r, (uint64_t)k);
                for (int c = 0; c < ref.nchildren; c++)
                    if (ref.children[c].root == root && pick-- == 0) {
                        p->child = (uint8_t)c;
                        break;
                    }
            }
            p->seller = s;
            p->created = times[i];
            p->updated = p->created;
            if (rng_below(&r, 100) < 30) {
                p->updated += (int64_t)rng_below(&r, 60 * SEED_DAY);
                if (p->updated >= w->anchor)
                    p->updated = w->anchor - 1;
            }
            p->price = make_price(&ref.children[p->child], &r);
            p->stock = rng_below(&r, 100) < 5 ? 0 : 1 + (int32_t)rng_below(&r, 500);
            p->archived = rng_below(&r, 100) < 5;
            make_title(w, p, &r);
        }
    }

    /* Order popularity: proportional to the catalogue, times a heavy tail
     * so that "popular sellers" has a clear top. */
    for (int s = 0; s < nsellers; s++) {
        double u = rng_unit(&r);
        acc += (double)w->sellers[s].nproducts * (0.05 + 4.0 * u * u * u);
        w->seller_cum_weight[s] = acc;
    }
    free(times);
    free(weights);
}

/* ------------------------------------------------------------------------ */
/* The order stream (generated identically by both order loaders)            */
/* ------------------------------------------------------------------------ */

typedef struct seed_order {
    int64_t id;
    int64_t created;
    int64_t updated;
    int64_t total;
    int64_t buyer_id;
    int seller; /* index */
    int status;
    int nitems;
    int product[3]; /* indexes */
    int quantity[3];
} seed_order_t;

typedef struct order_stream {
    const seed_world_t *w;
    rng_t rng;
    int64_t next;
    int64_t n_old;    /* orders before recent_from */
    int64_t n_recent; /* orders in the last 30 days */
} order_stream_t;

static void order_stream_init(order_stream_t *os, const seed_world_t *w)
{
    os->w = w;
    os->rng = rng_for(RNG_ORDERS, 0);
    os->next = 0;
    os->n_recent = (int64_t)((double)w->scale->orders * SEED_RECENT_SHARE);
    os->n_old = w->scale->orders - os->n_recent;
}

/* How many of seller s's products existed at time t (they are sorted). */
static int products_before(const seed_world_t *w, int s, int64_t t)
{
    const seed_seller_t *sl = &w->sellers[s];
    int lo = 0, hi = sl->nproducts;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (w->products[sl->first_product + mid].created <= t)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static int pick_seller(const seed_world_t *w, rng_t *r)
{
    int n = w->scale->sellers;
    double x = rng_unit(r) * w->seller_cum_weight[n - 1];
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (w->seller_cum_weight[mid] <= x)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static void order_next(order_stream_t *os, seed_order_t *o)
{
    const seed_world_t *w = os->w;
    rng_t *r = &os->rng;
    int64_t i = os->next++;
    int64_t t, age;
    int avail = 0, want, pct;
    int y, mo, d;

    /* Time strictly increases with i (stratified: slot i of n, jittered
     * inside the slot), so ids grow with time and the load fills one month
     * partition after another: each partition's indexes stay hot in cache. */
    if (i < os->n_old)
        t = w->history_from + (int64_t)(((double)i + rng_unit(r)) *
                                        (double)(w->recent_from - w->history_from) / (double)os->n_old);
    else
        t = w->recent_from + (int64_t)(((double)(i - os->n_old) + rng_unit(r)) *
                                       (double)(w->anchor - w->recent_from) / (double)os->n_recent);
    if (t >= w->anchor)
        t = w->anchor - 1;
    o->created = t;
    civil_from_days(t / SEED_DAY, &y, &mo, &d);
    o->id = (int64_t)(y * 100 + mo) * SEED_ORDER_ID_MUL + (i + 1);

    /* A seller who already had something to sell at t; the few early
     * orders that hit a seller with nothing yet try another one. */
    for (int tries = 0; tries < 16 && avail == 0; tries++) {
        o->seller = pick_seller(w, r);
        avail = products_before(w, o->seller, t);
    }
    if (avail == 0)
        avail = 1; /* give up on the nicety, never on the order */

    /* Seller s is owned by user s + 2; a buyer never buys from themself. */
    o->buyer_id = 1 + (int64_t)rng_below(r, (uint64_t)w->scale->users);
    if (o->buyer_id == o->seller + 2)
        o->buyer_id = o->buyer_id % w->scale->users + 1;

    pct = (int)rng_below(r, 100);
    want = pct < 60 ? 1 : pct < 90 ? 2 : 3;
    if (want > avail)
        want = avail;
    o->nitems = 0;
    o->total = 0;
    while (o->nitems < want) {
        int idx = w->sellers[o->seller].first_product + (int)rng_below(r, (uint64_t)avail);
        int dup = 0, q;
        for (int k = 0; k < o->nitems; k++)
            dup |= o->product[k] == idx;
        if (dup)
            continue;
        pct = (int)rng_below(r, 100);
        q = pct < 75 ? 1 : pct < 92 ? 2 : 3 + (int)rng_below(r, 3);
        o->product[o->nitems] = idx;
        o->quantity[o->nitems] = q;
        o->total += w->products[idx].price * q;
        o->nitems++;
    }

    /* Old orders are settled (delivered or cancelled); the last two weeks
     * still have orders on their way. */
    age = w->anchor - t;
    pct = (int)rng_below(r, 100);
    if (age > 14 * SEED_DAY)
        o->status = pct < 90 ? ST_DELIVERED : ST_CANCELLED;
    else
        o->status = pct < 50   ? ST_DELIVERED
                    : pct < 58 ? ST_CANCELLED
                    : pct < 75 ? ST_SHIPPED
                    : pct < 88 ? ST_CONFIRMED
                               : ST_NEW;
    switch (o->status) {
    case ST_NEW:
        o->updated = t;
        break;
    case ST_CONFIRMED:
        o->updated = t + (int64_t)rng_below(r, 6 * 3600);
        break;
    case ST_SHIPPED:
        o->updated = t + (int64_t)rng_below(r, 3 * SEED_DAY);
        break;
    case ST_CANCELLED:
        o->updated = t + (int64_t)rng_below(r, 2 * SEED_DAY);
        break;
    default:
        o->updated = t + 2 * SEED_DAY + (int64_t)rng_below(r, 8 * SEED_DAY);
        break;
    }
    /* A recent order cannot have been updated after "now": squeeze its
     * history into the time it has had. */
    if (o->updated >= w->anchor)
        o->updated = t + (int64_t)rng_below(r, (uint64_t)(w->anchor - t));
}

/* ------------------------------------------------------------------------ */
/* Loaders                                                                   */
/* ------------------------------------------------------------------------ */

typedef struct seed_counts {
    int64_t cities, districts, categories, users, sellers, products, orders, order_items;
} seed_counts_t;

static int load_cities(PGconn *conn, const seed_world_t *w, atomic_int *stop, seed_counts_t *cnt)
{
    copy_out_t c;
    int ok = 1;
    if (copy_begin(&c, conn, "cities", "COPY cities (id, name, slug, created_at) FROM STDIN", stop) != 0)
        return -1;
    for (int i = 0; i < ref.ncities && ok; i++) {
        const seed_city_t *ci = &ref.cities[i];
        char *p = copy_reserve(&c, SEED_ROW_MAX);
        p = put_i64(p, i + 1);
        *p++ = '\t';
        p = put_text(p, ci->name, strlen(ci->name));
        *p++ = '\t';
        p = put_text(p, ci->slug, strlen(ci->slug));
        *p++ = '\t';
        p = put_ts(p, w->history_from - 60 * SEED_DAY);
        *p++ = '\n';
        ok = copy_row_done(&c, p) == 0;
        cnt->cities++;
    }
    return copy_end(&c, ok);
}

static int load_districts(PGconn *conn, const seed_world_t *w, atomic_int *stop, seed_counts_t *cnt)
{
    copy_out_t c;
    int ok = 1;
    if (copy_begin(&c, conn, "districts", "COPY districts (id, city_id, name, slug, created_at) FROM STDIN",
                   stop) != 0)
        return -1;
    for (int i = 0; i < ref.ndistricts && ok; i++) {
        const seed_district_t *d = &ref.districts[i];
        char *p = copy_reserve(&c, SEED_ROW_MAX);
        p = put_i64(p, i + 1);
        *p++ = '\t';
        p = put_i64(p, d->city + 1);
        *p++ = '\t';
        p = put_text(p, d->name, strlen(d->name));
        *p++ = '\t';
        p = put_text(p, d->slug, strlen(d->slug));
        *p++ = '\t';
        p = put_ts(p, w->history_from - 60 * SEED_DAY);
        *p++ = '\n';
        ok = copy_row_done(&c, p) == 0;
        cnt->districts++;
    }
    return copy_end(&c, ok);
}

static int load_categories(PGconn *conn, const seed_world_t *w, atomic_int *stop, seed_counts_t *cnt)
{
    copy_out_t c;
    int ok = 1;
    if (copy_begin(&c, conn, "categories",
                   "COPY categories (id, parent_id, name, slug, created_at) FROM STDIN", stop) != 0)
        return -1;
    for (int i = 0; i < ref.nroots + ref.nchildren && ok; i++) {
        int is_root = i < ref.nroots;
        const char *name = is_root ? ref.roots[i].name : ref.children[i - ref.nroots].name;
        const char *slug = is_root ? ref.roots[i].slug : ref.children[i - ref.nroots].slug;
        char *p = copy_reserve(&c, SEED_ROW_MAX);
        p = put_i64(p, is_root ? category_id_of_root(i) : category_id_of_child(i - ref.nroots));
        *p++ = '\t';
        if (is_root)
            p = put_str(p, "\\N");
        else
            p = put_i64(p, category_id_of_root(ref.children[i - ref.nroots].root));
        *p++ = '\t';
        p = put_text(p, name, strlen(name));
        *p++ = '\t';
        p = put_text(p, slug, strlen(slug));
        *p++ = '\t';
        p = put_ts(p, w->history_from - 60 * SEED_DAY);
        *p++ = '\n';
        ok = copy_row_done(&c, p) == 0;
        cnt->categories++;
    }
    return copy_end(&c, ok);
}

static void person_name(rng_t *r, char *out, size_t outlen)
{
    const char *surname = pick_word(r, &ref.surnames);
    if (rng_below(r, 2) == 0)
        snprintf(out, outlen, "%s %s", pick_word(r, &ref.male_names), surname);
    else
        snprintf(out, outlen, "%s %sа", pick_word(r, &ref.female_names), surname);
}

static int load_users(PGconn *conn, const seed_world_t *w, atomic_int *stop, seed_counts_t *cnt)
{
    copy_out_t c;
    progress_t prog;
    int ok = 1, n = w->scale->users;
    size_t hash_len = strlen(w->password_hash);
    if (copy_begin(&c, conn, "users",
                   "COPY users (id, email, password_hash, name, is_admin, created_at) FROM STDIN", stop) != 0)
        return -1;
    progress_start(&prog, "users", n);
    for (int id = 1; id <= n && ok; id++) {
        rng_t r = rng_for(RNG_USER, (uint64_t)id);
        char email[64], name[2 * SEED_MAX_FIELD + 8];
        /* Users exist before the 24 months of history, so no order or
         * seller predates its user. */
        int64_t created = w->history_from - 60 * SEED_DAY - (int64_t)rng_below(&r, 400 * SEED_DAY);
        char *p = copy_reserve(&c, SEED_ROW_MAX);
        if (id == 1) {
            snprintf(email, sizeof email, "admin@example.com");
            snprintf(name, sizeof name, "Admin");
            created = w->history_from - 500 * SEED_DAY;
        } else {
            snprintf(email, sizeof email, "user%d@example.com", id);
            person_name(&r, name, sizeof name);
        }
        p = put_i64(p, id);
        *p++ = '\t';
        p = put_text(p, email, strlen(email));
        *p++ = '\t';
        p = put_text(p, w->password_hash, hash_len);
        *p++ = '\t';
        p = put_text(p, name, strlen(name));
        *p++ = '\t';
        *p++ = id == 1 ? 't' : 'f';
        *p++ = '\t';
        p = put_ts(p, created);
        *p++ = '\n';
        ok = copy_row_done(&c, p) == 0;
        cnt->users++;
        progress_tick(&prog, id, id);
    }
    progress_done(&prog, cnt->users);
    return copy_end(&c, ok);
}

static void seller_text(const seed_world_t *w, int s, char *name, size_t namelen, char *desc, size_t desclen)
{
    const seed_seller_t *sl = &w->sellers[s];
    rng_t r = rng_for(RNG_SELLER, (uint64_t)s);
    int y, mo, d;
    /* Where a name takes two draws, they come in the order in which gcc
     * evaluated them when both were arguments of one snprintf call: the
     * last first (C leaves that order open). Keep it: another order would
     * rename every seeded shop and product model. */
    switch (rng_below(&r, 3)) {
    case 0: {
        const char *initial = rng_below(&r, 2) ? "А" : "С";
        snprintf(name, namelen, "ИП %s %s.", pick_word(&r, &ref.surnames), initial);
        break;
    }
    case 1: {
        const char *suffix = pick_word(&r, &ref.shop_suffixes);
        snprintf(name, namelen, "%s%s", pick_word(&r, &ref.shop_prefixes), suffix);
        break;
    }
    default:
        snprintf(name, namelen, "Магазин «%s»", pick_word(&r, &ref.shop_words));
        break;
    }
    civil_from_days(sl->created / SEED_DAY, &y, &mo, &d);
    if (sl->roots[0] == sl->roots[1])
        snprintf(desc, desclen, "Продаем %s в городе %s с %d года. %s", ref.roots[sl->roots[0]].sells,
                 ref.cities[sl->city].name, y, pick_word(&r, &ref.phrases));
    else
        snprintf(desc, desclen, "Продаем %s, а также %s. Город %s, работаем с %d года.",
                 ref.roots[sl->roots[0]].sells, ref.roots[sl->roots[1]].sells, ref.cities[sl->city].name, y);
}

static int load_sellers(PGconn *conn, const seed_world_t *w, atomic_int *stop, seed_counts_t *cnt)
{
    copy_out_t c;
    progress_t prog;
    int ok = 1, n = w->scale->sellers;
    if (copy_begin(&c, conn, "sellers",
                   "COPY sellers (id, user_id, name, description, city_id, district_id, rating, created_at)"
                   " FROM STDIN",
                   stop) != 0)
        return -1;
    progress_start(&prog, "sellers", n);
    for (int s = 0; s < n && ok; s++) {
        const seed_seller_t *sl = &w->sellers[s];
        /* The longest a name can be is two fields (ТехноМаркет); the
         * description, three fields and some 90 bytes of words. */
        char name[2 * SEED_MAX_FIELD + 32], desc[1024];
        char *p = copy_reserve(&c, SEED_ROW_MAX);
        seller_text(w, s, name, sizeof name, desc, sizeof desc);
        p = put_i64(p, s + 1);
        *p++ = '\t';
        p = put_i64(p, s + 2); /* users 2..n+1 own the shops; user 1 is the admin */
        *p++ = '\t';
        p = put_text(p, name, strlen(name));
        *p++ = '\t';
        p = put_text(p, desc, strlen(desc));
        *p++ = '\t';
        p = put_i64(p, sl->city + 1);
        *p++ = '\t';
        p = put_i64(p, sl->district_id);
        *p++ = '\t';
        p = put_i64(p, sl->rating / 100);
        *p++ = '.';
        p = put_2d(p, sl->rating % 100);
        *p++ = '\t';
        p = put_ts(p, sl->created);
        *p++ = '\n';
        ok = copy_row_done(&c, p) == 0;
        cnt->sellers++;
        progress_tick(&prog, s + 1, s + 1);
    }
    progress_done(&prog, cnt->sellers);
    return copy_end(&c, ok);
}

static int load_products(PGconn *conn, const seed_world_t *w, atomic_int *stop, seed_counts_t *cnt)
{
    copy_out_t c;
    progress_t prog;
    int ok = 1, n = w->scale->products;
    if (copy_begin(&c, conn, "products",
                   "COPY products (id, seller_id, category_id, category_root_id, city_id, district_id, title,"
                   " description, price, currency, stock, images, status, created_at, updated_at) FROM STDIN",
                   stop) != 0)
        return -1;
    progress_start(&prog, "products", n);
    for (int i = 0; i < n && ok; i++) {
        const seed_product_t *pr = &w->products[i];
        const seed_seller_t *sl = &w->sellers[pr->seller];
        const seed_child_t *ch = &ref.children[pr->child];
        rng_t r = rng_for(RNG_PRODUCT_TEXT, (uint64_t)i);
        const char *a = pick_word(&r, &ref.phrases), *b = pick_word(&r, &ref.phrases);
        char *p = copy_reserve(&c, SEED_ROW_MAX);
        p = put_i64(p, i + 1);
        *p++ = '\t';
        p = put_i64(p, pr->seller + 1);
        *p++ = '\t';
        p = put_i64(p, category_id_of_child(pr->child));
        *p++ = '\t';
        p = put_i64(p, category_id_of_root(ch->root));
        *p++ = '\t';
        p = put_i64(p, sl->city + 1);
        *p++ = '\t';
        p = put_i64(p, sl->district_id);
        *p++ = '\t';
        p = put_text(p, w->titles + pr->title_off, pr->title_len);
        *p++ = '\t';
        /* "<title>. <phrase> <phrase> Категория: <name>." */
        p = put_text(p, w->titles + pr->title_off, pr->title_len);
        p = put_str(p, ". ");
        p = put_text(p, a, strlen(a));
        if (b != a) {
            *p++ = ' ';
            p = put_text(p, b, strlen(b));
        }
        p = put_str(p, " Категория: ");
        p = put_text(p, ch->name, strlen(ch->name));
        p = put_str(p, ".\t");
        p = put_i64(p, pr->price);
        p = put_str(p, "\tRUB\t");
        p = put_i64(p, pr->stock);
        p = put_str(p, pr->archived ? "\t{}\tarchived\t" : "\t{}\tactive\t");
        p = put_ts(p, pr->created);
        *p++ = '\t';
        p = put_ts(p, pr->updated);
        *p++ = '\n';
        ok = copy_row_done(&c, p) == 0;
        cnt->products++;
        progress_tick(&prog, i + 1, i + 1);
    }
    progress_done(&prog, cnt->products);
    return copy_end(&c, ok);
}

/* One of the two order loaders, run on its own thread and connection. */
typedef struct order_job {
    PGconn *conn;
    const seed_world_t *w;
    atomic_int *stop;
    int items; /* 0: orders, 1: order_items */
    int64_t rows;
    int rc;
} order_job_t;

static char *put_order_row(char *p, const seed_order_t *o)
{
    p = put_i64(p, o->id);
    *p++ = '\t';
    p = put_i64(p, o->buyer_id);
    *p++ = '\t';
    p = put_i64(p, o->seller + 1);
    *p++ = '\t';
    p = put_str(p, seed_order_statuses[o->status]);
    *p++ = '\t';
    p = put_i64(p, o->total);
    p = put_str(p, "\tRUB\t");
    p = put_ts(p, o->created);
    *p++ = '\t';
    p = put_ts(p, o->updated);
    *p++ = '\n';
    return p;
}

static void *order_job_run(void *arg)
{
    order_job_t *job = arg;
    const seed_world_t *w = job->w;
    order_stream_t os;
    copy_out_t c;
    progress_t prog;
    int ok = 1;
    const char *table = job->items ? "order_items" : "orders";
    const char *sql =
        job->items ? "COPY order_items (order_id, created_at, product_id, title, price, quantity) FROM STDIN"
                   : "COPY orders (id, buyer_id, seller_id, status, total, currency, created_at, updated_at)"
                     " FROM STDIN";

    job->rc = -1;
    if (copy_begin(&c, job->conn, table, sql, job->stop) != 0) {
        atomic_store(job->stop, 1);
        return NULL;
    }
    order_stream_init(&os, w);
    /* Items: about 1.5 per order; the progress total is the order count. */
    progress_start(&prog, table, w->scale->orders);
    for (int64_t i = 0; i < w->scale->orders && ok; i++) {
        seed_order_t o;
        char *p = copy_reserve(&c, SEED_ROW_MAX);
        order_next(&os, &o);
        if (!job->items) {
            p = put_order_row(p, &o);
            job->rows++;
        } else {
            for (int k = 0; k < o.nitems; k++) {
                const seed_product_t *pr = &w->products[o.product[k]];
                p = put_i64(p, o.id);
                *p++ = '\t';
                p = put_ts(p, o.created);
                *p++ = '\t';
                p = put_i64(p, o.product[k] + 1);
                *p++ = '\t';
                p = put_text(p, w->titles + pr->title_off, pr->title_len);
                *p++ = '\t';
                p = put_i64(p, pr->price);
                *p++ = '\t';
                p = put_i64(p, o.quantity[k]);
                *p++ = '\n';
                job->rows++;
            }
        }
        ok = copy_row_done(&c, p) == 0;
        progress_tick(&prog, i + 1, job->rows);
    }
    job->rc = copy_end(&c, ok);
    if (job->rc != 0)
        atomic_store(job->stop, 1);
    else
        progress_done(&prog, job->rows);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Orchestration                                                             */
/* ------------------------------------------------------------------------ */

static const char *const seed_tables[] = {"cities",  "districts", "categories", "users",
                                          "sellers", "products",  "orders",     "order_items"};
#define SEED_NTABLES ((int)(sizeof seed_tables / sizeof seed_tables[0]))

static void usage(void)
{
    fprintf(stderr, "usage: marketd seed --scale demo|bench [--force]\n"
                    "  loads deterministic demo or benchmark data into DATABASE_URL;\n"
                    "  --force wipes every marketd table first (TRUNCATE ... RESTART IDENTITY CASCADE)\n");
}

/* 1 if any seeded table has a row, 0 if all are empty, -1 on error (e.g.
 * migrate has not run). */
static int database_has_data(PGconn *conn)
{
    char sql[1024], val[16];
    size_t len = 0;
    len += (size_t)snprintf(sql + len, sizeof sql - len, "SELECT ");
    for (int i = 0; i < SEED_NTABLES; i++)
        len += (size_t)snprintf(sql + len, sizeof sql - len, "%s to_regclass('%s') IS NULL", i ? " OR" : "",
                                seed_tables[i]);
    if (query_value(conn, sql, val, sizeof val, "checking the schema") != 0)
        return -1;
    if (strcmp(val, "t") == 0) {
        fprintf(stderr, "seed: the schema is missing; run `marketd migrate` first\n");
        return -1;
    }
    len = (size_t)snprintf(sql, sizeof sql, "SELECT ");
    for (int i = 0; i < SEED_NTABLES; i++)
        len += (size_t)snprintf(sql + len, sizeof sql - len, "%s EXISTS (SELECT 1 FROM %s)", i ? " OR" : "",
                                seed_tables[i]);
    if (query_value(conn, sql, val, sizeof val, "checking for existing data") != 0)
        return -1;
    return strcmp(val, "t") == 0;
}

/* --force: every table of the schema except schema_migrations, not just the
 * eight seeded ones: state that refers to the old rows (idempotency keys
 * replaying old orders of old user ids, ...) must go with them. One
 * TRUNCATE statement, so foreign keys between the tables do not matter. */
static int wipe(PGconn *conn)
{
    int rc = -1;
    PGresult *res =
        PQexec(conn, "SELECT 'TRUNCATE ' || string_agg(format('%I.%I', n.nspname, c.relname), ', ')"
                     " || ' RESTART IDENTITY CASCADE'"
                     " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                     " WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')"
                     " AND NOT c.relispartition AND c.relname <> 'schema_migrations'");
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1 || PQgetisnull(res, 0, 0)) {
        print_pq_error("listing the tables to wipe", PQresultErrorMessage(res));
        goto out;
    }
    if (exec_ok(conn, PQgetvalue(res, 0, 0), "wiping the old data") != 0)
        goto out;
    fprintf(stderr, "seed: --force: wiped all marketd tables\n");
    rc = 0;
out:
    PQclear(res);
    return rc;
}

/* Orders can only land in partitions that exist; make sure the 24 months
 * of history (and this month) are covered, as migrate would. */
static int ensure_partitions(PGconn *conn)
{
    if (exec_ok(conn, "BEGIN", "BEGIN") != 0)
        return -1;
    if (exec_ok(conn, "SET LOCAL lock_timeout = '5s'", "SET lock_timeout") != 0 ||
        exec_ok(conn, "SELECT marketd_ensure_partitions(25, 3)", "creating order partitions") != 0) {
        PQclear(PQexec(conn, "ROLLBACK"));
        return -1;
    }
    return exec_ok(conn, "COMMIT", "COMMIT");
}

static int set_sequences(PGconn *conn, int64_t norders)
{
    static const char *const serial_tables[] = {"cities", "districts", "categories",
                                                "users",  "sellers",   "products"};
    char sql[256];
    for (size_t i = 0; i < sizeof serial_tables / sizeof serial_tables[0]; i++) {
        snprintf(sql, sizeof sql, "SELECT setval(pg_get_serial_sequence('%s', 'id'), max(id)) FROM %s",
                 serial_tables[i], serial_tables[i]);
        if (exec_ok(conn, sql, "setting a sequence") != 0)
            return -1;
    }
    /* The API numbers new orders marketd_order_id(now(), nextval(...)):
     * continue after the running counter used here. */
    snprintf(sql, sizeof sql, "SELECT setval('orders_id_seq', %lld)", (long long)(norders > 0 ? norders : 1));
    return exec_ok(conn, sql, "setting orders_id_seq");
}

/* After a bulk load: planner statistics, and merge the GIN pending list of
 * the title trigram index, which manual ANALYZE does not do and which every
 * `q` search would otherwise scan linearly. */
static int finish_load(PGconn *conn)
{
    double t0 = mono_now();
    if (exec_ok(conn,
                "SELECT gin_clean_pending_list(i.indexrelid) FROM pg_index i"
                " JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam"
                " WHERE i.indrelid = 'products'::regclass AND a.amname = 'gin'",
                "merging GIN pending lists") != 0)
        return -1;
    if (exec_ok(conn, "ANALYZE", "ANALYZE") != 0)
        return -1;
    fprintf(stderr, "seed: ANALYZE done (%.1f s)\n", mono_now() - t0);
    return 0;
}

/* The catalogue on the main connection, in order of foreign keys. */
static int load_catalogue(PGconn *conn, const seed_world_t *w, atomic_int *stop, seed_counts_t *cnt)
{
    if (load_cities(conn, w, stop, cnt) != 0 || load_districts(conn, w, stop, cnt) != 0 ||
        load_categories(conn, w, stop, cnt) != 0 || load_users(conn, w, stop, cnt) != 0 ||
        load_sellers(conn, w, stop, cnt) != 0 || load_products(conn, w, stop, cnt) != 0) {
        atomic_store(stop, 1);
        return -1;
    }
    return 0;
}

static int parse_args(int argc, char **argv, const seed_scale_t **scale, int *force)
{
    *scale = NULL;
    *force = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val = NULL;
        if (strcmp(a, "--force") == 0) {
            *force = 1;
            continue;
        }
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage();
            return 1;
        }
        if (strcmp(a, "--scale") == 0 && i + 1 < argc)
            val = argv[++i];
        else if (strncmp(a, "--scale=", 8) == 0)
            val = a + 8;
        if (val == NULL) {
            fprintf(stderr, "seed: unknown argument '%s'\n", a);
            usage();
            return -1;
        }
        for (size_t k = 0; k < sizeof seed_scales / sizeof seed_scales[0]; k++)
            if (strcmp(val, seed_scales[k].name) == 0)
                *scale = &seed_scales[k];
        if (*scale == NULL) {
            fprintf(stderr, "seed: unknown scale '%s' (demo or bench)\n", val);
            return -1;
        }
    }
    if (*scale == NULL) {
        fprintf(stderr, "seed: --scale is required\n");
        usage();
        return -1;
    }
    return 0;
}

int seed_main(int argc, char **argv)
{
    int rc = -1, force, has, started = 0, arc;
    const seed_scale_t *scale;
    const char *url = getenv("DATABASE_URL");
    PGconn *conn = NULL, *conn_orders = NULL, *conn_items = NULL;
    seed_world_t *w = NULL;
    atomic_int stop;
    order_job_t jobs[2];
    pthread_t threads[2];
    seed_counts_t cnt;
    double t0 = mono_now();
    char dbsize[64];

    memset(&cnt, 0, sizeof cnt);
    memset(jobs, 0, sizeof jobs);
    atomic_init(&stop, 0);
    arc = parse_args(argc, argv, &scale, &force);
    if (arc != 0)
        return arc > 0 ? 0 : -1;
    if (url == NULL || url[0] == '\0') {
        fprintf(stderr, "seed: DATABASE_URL is not set\n");
        return -1;
    }
    /* Before touching the database: a bad data file changes nothing. */
    if (ref_load() != 0)
        goto out;

    conn = seed_connect(url);
    if (conn == NULL)
        goto out;
    /* Held to the end: a second seed waits, then finds the data and skips. */
    if (exec_ok(conn, "SELECT pg_advisory_lock(" SEED_LOCK_KEY ")", "taking the seed lock") != 0)
        goto out;
    has = database_has_data(conn);
    if (has < 0)
        goto out;
    if (has && !force) {
        fprintf(stderr, "seed: database already has data, skipping (use --force to wipe and reseed)\n");
        rc = 0;
        goto out;
    }
    if (has && wipe(conn) != 0)
        goto out;
    if (ensure_partitions(conn) != 0)
        goto out;

    w = xcalloc(1, sizeof *w);
    w->scale = scale;
    w->anchor = (int64_t)time(NULL) / SEED_DAY * SEED_DAY;
    w->history_from = w->anchor - SEED_HISTORY_DAYS * SEED_DAY;
    w->recent_from = w->anchor - SEED_RECENT_DAYS * SEED_DAY;
    /* One Argon2id hash for everyone: hashing 100k times would take hours,
     * and every seeded account has the same documented password anyway. */
    if (sodium_init() < 0) {
        fprintf(stderr, "seed: libsodium failed to initialise\n");
        goto out;
    }
    if (password_hash("password123", 11, w->password_hash) != 0) {
        fprintf(stderr, "seed: hashing the password failed (out of memory?)\n");
        goto out;
    }
    fprintf(stderr, "seed: scale %s: %d users, %d sellers, %d products, %lld orders\n", scale->name,
            scale->users, scale->sellers, scale->products, (long long)scale->orders);
    world_build(w, scale);

    conn_orders = seed_connect(url);
    conn_items = seed_connect(url);
    if (conn_orders == NULL || conn_items == NULL)
        goto out;
    if (exec_ok(conn, "BEGIN", "BEGIN") != 0 || exec_ok(conn_orders, "BEGIN", "BEGIN") != 0 ||
        exec_ok(conn_items, "BEGIN", "BEGIN") != 0)
        goto out;

    for (int k = 0; k < 2; k++) {
        jobs[k].conn = k ? conn_items : conn_orders;
        jobs[k].w = w;
        jobs[k].stop = &stop;
        jobs[k].items = k;
        if (pthread_create(&threads[k], NULL, order_job_run, &jobs[k]) != 0) {
            fprintf(stderr, "seed: cannot start a loader thread\n");
            atomic_store(&stop, 1);
            goto join;
        }
        started++;
    }
    /* A failure here sets `stop`, which the loader threads poll and which is
     * checked below, so the return value needs no handling of its own. */
    (void)load_catalogue(conn, w, &stop, &cnt);
join:
    for (int k = 0; k < started; k++)
        pthread_join(threads[k], NULL);
    if (atomic_load(&stop) || started < 2 || jobs[0].rc != 0 || jobs[1].rc != 0) {
        fprintf(stderr, "seed: failed, rolling back\n");
        goto out; /* closing the connections rolls the transactions back */
    }
    cnt.orders = jobs[0].rows;
    cnt.order_items = jobs[1].rows;
    /* Orders first: if the catalogue commit then failed, the tables would
     * not look empty and a rerun would ask for --force instead of
     * duplicating orders. */
    if (exec_ok(conn_orders, "COMMIT", "COMMIT orders") != 0 ||
        exec_ok(conn_items, "COMMIT", "COMMIT order_items") != 0 ||
        exec_ok(conn, "COMMIT", "COMMIT catalogue") != 0)
        goto out;

    /* The orders' stored documents (migrations/0009_order_docs.sql), so
     * that seeded data reads as a running instance's does: the items are
     * on another connection, hence after both commits. */
    if (set_sequences(conn, cnt.orders) != 0 || cli_backfill_order_docs(conn, 5000, 0, "seed") != 0 ||
        finish_load(conn) != 0)
        goto out;
    if (query_value(conn, "SELECT pg_size_pretty(pg_database_size(current_database()))", dbsize,
                    sizeof dbsize, "database size") != 0)
        goto out;
    fprintf(stderr,
            "seed: done in %.1f s: %lld cities, %lld districts, %lld categories, %lld users, %lld sellers, "
            "%lld products, %lld orders, %lld order_items; database size %s\n",
            mono_now() - t0, (long long)cnt.cities, (long long)cnt.districts, (long long)cnt.categories,
            (long long)cnt.users, (long long)cnt.sellers, (long long)cnt.products, (long long)cnt.orders,
            (long long)cnt.order_items, dbsize);
    rc = 0;
out:
    PQfinish(conn_items);
    PQfinish(conn_orders);
    PQfinish(conn);
    if (w != NULL) {
        world_free(w);
        sodium_memzero(w->password_hash, sizeof w->password_hash);
        free(w);
    }
    ref_free();
    return rc;
}
