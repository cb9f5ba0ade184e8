/*
 * libFuzzer target: image_probe (src/core/imagetype.c) on arbitrary bytes.
 * It must never read past the input (ASan), must always say why it refuses,
 * and whatever it accepts must have one of our magic numbers and sides in
 * 1..IMAGE_SIDE_MAX. An accepted header must stay accepted with bytes
 * appended (the parser reads a prefix, so the rest of a file cannot matter).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/imagetype.h"

static void fail(const char *what, size_t size, const image_info_t *info)
{
    fprintf(stderr, "fuzz_image: %s: %zu bytes -> type %d %ux%u why %s\n", what, size, info->type,
            info->width, info->height, info->why ? info->why : "(null)");
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* An exact copy, so that a read past `size` is a heap overflow. */
    unsigned char *p = malloc(size + 16);
    if (p == NULL)
        return 0;
    memcpy(p, data, size);
    image_info_t info;
    int rc = image_probe(p, size, &info);
    if (rc == 0) {
        if (info.type < 0 || info.type >= IMAGE_NTYPES)
            fail("accepted without a type", size, &info);
        if (info.width < 1 || info.height < 1 || info.width > IMAGE_SIDE_MAX || info.height > IMAGE_SIDE_MAX)
            fail("accepted impossible sides", size, &info);
        memset(p + size, 0xAB, 16);
        image_info_t more;
        if (image_probe(p, size + 16, &more) != 0 || more.type != info.type || more.width != info.width ||
            more.height != info.height)
            fail("trailing bytes changed the verdict", size, &info);
    } else if (rc != MKD_EINVAL) {
        fail("unexpected return code", size, &info);
    } else if (info.why == NULL || info.why[0] == '\0') {
        fail("refused without a reason", size, &info);
    }
    free(p);
    return 0;
}
