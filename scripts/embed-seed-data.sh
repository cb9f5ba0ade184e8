#!/usr/bin/env bash
# Generates the C table of the seeder's data files (src/cli/seed.h) from
# src/cli/seed-data/*.tsv and *.txt, so that `marketd seed` needs no files
# at run time.  Usage:
#   bash scripts/embed-seed-data.sh src/cli/seed-data > build/gen/seed_data_embed.c
#
# Checks every file against the format of src/cli/seed-data/README.md and
# fails the build with file:line on the first violation; what only the
# seeder knows (column names, slugs that must exist, numbers) it checks at
# start.  Like embed-migrations.sh it needs only bash, od and awk, and the
# bytes go through `od` for the same reasons: printable ASCII is copied,
# everything else becomes a three-digit octal escape, '?' is escaped against
# trigraphs, and each line of a file is its own string literal piece.
# The files are embedded whole, comments included, so that the seeder's
# messages can give line numbers that match the file.
set -euo pipefail
export LC_ALL=C

# The longest field in bytes; seed.c sizes its buffers from the same number
# (SEED_MAX_FIELD) and checks it again.
max_field=200

dir=${1:?usage: embed-seed-data.sh SEED_DATA_DIR}
if [[ ! -d $dir ]]; then
    echo "embed-seed-data: $dir is not a directory" >&2
    exit 1
fi

shopt -s nullglob
files=()
for f in "$dir"/*.tsv "$dir"/*.txt; do
    base=${f##*/}
    if [[ ! $base =~ ^[a-z0-9-]+\.(tsv|txt)$ ]]; then
        echo "embed-seed-data: $f: name must be lower-case letters, digits and '-', then .tsv or .txt" >&2
        exit 1
    fi
    files+=("$f")
done
# Sorted by name, whatever the order of the two globs.
if ((${#files[@]} > 0)); then
    mapfile -t files < <(printf '%s\n' "${files[@]}" | sort)
fi

# Bytes: UTF-8 without a byte-order mark, LF line ends, a final newline, no
# control character but tab.  Reads `od` output, one decimal byte a field.
check_bytes() {
    od -An -v -tu1 "$1" | awk -v file="$1" '
        function fail(msg) {
            print "embed-seed-data: " file ":" line ": " msg > "/dev/stderr"
            failed = 1
            exit 1
        }
        BEGIN { line = 1; need = 0; lo = 128; hi = 191; nbytes = 0; last = -1 }
        {
            for (i = 1; i <= NF; i++) {
                b = $i + 0
                if (++nbytes <= 3) first[nbytes] = b
                if (nbytes == 3 && first[1] == 239 && first[2] == 187 && first[3] == 191)
                    fail("starts with a UTF-8 byte-order mark; save without it")
                if (need > 0) {
                    # A continuation byte; lo..hi excludes overlong forms,
                    # surrogates and code points above U+10FFFF.
                    if (b < lo || b > hi) fail("not UTF-8")
                    need--; lo = 128; hi = 191
                } else if (b == 13) {
                    fail("CR: use LF line endings")
                } else if (b == 10) {
                    line++
                } else if ((b < 32 && b != 9) || b == 127) {
                    fail("control character " b)
                } else if (b >= 194 && b <= 223) {
                    need = 1
                } else if (b >= 224 && b <= 239) {
                    need = 2
                    if (b == 224) lo = 160
                    if (b == 237) hi = 159
                } else if (b >= 240 && b <= 244) {
                    need = 3
                    if (b == 240) lo = 144
                    if (b == 244) hi = 143
                } else if (b >= 128) {
                    fail("not UTF-8")
                }
                last = b
            }
        }
        END {
            if (failed) exit 1
            if (nbytes == 0) fail("empty file")
            if (need > 0) fail("not UTF-8 (a character cut short at the end)")
            if (last != 10) fail("no newline at the end of the file")
        }'
}

# Lines: "#" comments and empty lines aside, a .tsv file has a header of
# column names and rows of exactly as many tab-separated fields; a .txt file
# has one item a line.  No field is empty, starts or ends with a space, or is
# longer than max_field bytes; there is at least one row.
check_lines() {
    awk -F '\t' -v file="$1" -v tsv="$2" -v max="$max_field" '
        function fail(where, msg) {
            print "embed-seed-data: " file ":" where ": " msg > "/dev/stderr"
            failed = 1
            exit 1
        }
        /^#/ || /^$/ { next }
        {
            if (!tsv && NF != 1) fail(FNR, "a tab in a .txt file (one item a line)")
            for (i = 1; i <= NF; i++) {
                if ($i == "") fail(FNR, "field " i " is empty")
                if ($i ~ /^ / || $i ~ / $/) fail(FNR, "field " i " starts or ends with a space")
                if (length($i) > max) fail(FNR, "field " i " is longer than " max " bytes")
            }
            if (tsv && columns == 0) { columns = NF; next }
            if (tsv && NF != columns) fail(FNR, NF " fields, the header has " columns)
            rows++
        }
        END {
            if (failed) exit 1
            if (rows == 0) fail(NR, tsv ? "no rows under the header" : "no items")
        }' "$1"
}

for f in "${files[@]}"; do
    check_bytes "$f"
    if [[ $f == *.tsv ]]; then
        check_lines "$f" 1
    else
        check_lines "$f" 0
    fi
done

echo "/* Generated by scripts/embed-seed-data.sh from $dir/ -- do not edit. */"
echo '#include "cli/seed.h"'
echo
echo '#pragma GCC diagnostic ignored "-Woverlength-strings"'
echo

for i in "${!files[@]}"; do
    f=${files[$i]}
    echo "/* ${f##*/} */"
    echo "static const char seed_data_${i}[] ="
    od -An -v -tu1 "$f" | awk '
        BEGIN { line = ""; n = 0 }
        function flush(end_of_line) {
            if (line == "" && !end_of_line) return
            printf "    \"%s%s\"\n", line, (end_of_line ? "\\n" : "")
            line = ""; n = 0
        }
        {
            for (i = 1; i <= NF; i++) {
                b = $i + 0
                if (b == 10) { flush(1); continue }
                if (b == 34) s = "\\\""
                else if (b == 92) s = "\\\\"
                else if (b == 63) s = "\\?"
                else if (b == 9) s = "\\t"
                else if (b >= 32 && b < 127) s = sprintf("%c", b)
                else s = sprintf("\\%03o", b)
                line = line s; n += length(s)
                if (n >= 200) flush(0)
            }
        }
        END { flush(0); print "    ;" }'
    echo
done

echo "const seed_data_file_t seed_data_files[] = {"
if ((${#files[@]} == 0)); then
    # C has no empty arrays; the count below says there is nothing here.
    echo "    {0, 0, 0},"
fi
for i in "${!files[@]}"; do
    echo "    {\"${files[$i]##*/}\", seed_data_${i}, sizeof seed_data_${i} - 1},"
done
echo "};"
echo "const size_t seed_data_files_count = ${#files[@]};"
