/*
 * src/core/imagetype.c: the types of api.md's image uploads and the header
 * checks beyond the magic bytes (issue 10). Every input is copied into an
 * exactly-sized heap block so ASan catches a read past n.
 */
#include "unit.h"

#include <stdio.h>
#include <stdlib.h>

#include "core/error.h"
#include "core/imagetype.h"

typedef struct bytes {
    unsigned char b[256];
    size_t n;
} bytes_t;

static void put(bytes_t *x, const void *p, size_t n)
{
    memcpy(x->b + x->n, p, n);
    x->n += n;
}

#define PUT_LIT(x, lit) put((x), (lit), sizeof(lit) - 1)

static void put_be(bytes_t *x, uint32_t v, int width)
{
    for (int i = width - 1; i >= 0; i--)
        x->b[x->n++] = (unsigned char)(v >> (8 * i));
}

static void put_le(bytes_t *x, uint32_t v, int width)
{
    for (int i = 0; i < width; i++)
        x->b[x->n++] = (unsigned char)(v >> (8 * i));
}

static uint32_t crc32_ref(const unsigned char *p, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ 0xEDB88320u : c >> 1;
    }
    return ~c;
}

static bytes_t png(uint32_t w, uint32_t h, unsigned depth, unsigned colour)
{
    bytes_t x = {.n = 0};
    put(&x, "\x89PNG\r\n\x1a\n", 8);
    put_be(&x, 13, 4);
    size_t start = x.n;
    put(&x, "IHDR", 4);
    put_be(&x, w, 4);
    put_be(&x, h, 4);
    unsigned char rest[5] = {(unsigned char)depth, (unsigned char)colour, 0, 0, 0};
    put(&x, rest, 5);
    put_be(&x, crc32_ref(x.b + start, 17), 4);
    put(&x, "IDAT....", 8);
    return x;
}

/* SOI, APP0, then a frame header of `marker` with `ncomp` components. */
static bytes_t jpeg(unsigned marker, uint32_t w, uint32_t h, unsigned ncomp)
{
    bytes_t x = {.n = 0};
    put(&x, "\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00", 20);
    put(&x, "\xff", 1);
    put_be(&x, marker, 1);
    put_be(&x, 8 + 3 * ncomp, 2);
    put_be(&x, 8, 1);
    put_be(&x, h, 2);
    put_be(&x, w, 2);
    put_be(&x, ncomp, 1);
    for (unsigned i = 0; i < ncomp; i++)
        put(&x, "\x01\x11\x00", 3);
    put(&x, "\xff\xda\x00\x02", 4);
    return x;
}

/* RIFF/WEBP and one chunk of fourcc with payload p[0..n). */
static bytes_t webp(const char *fourcc, const void *p, size_t n)
{
    bytes_t x = {.n = 0};
    put(&x, "RIFF", 4);
    put_le(&x, (uint32_t)(4 + 8 + n), 4);
    put(&x, "WEBP", 4);
    put(&x, fourcc, 4);
    put_le(&x, (uint32_t)n, 4);
    put(&x, p, n);
    return x;
}

static int probe(const bytes_t *x, size_t n, image_info_t *info)
{
    unsigned char *heap = malloc(n ? n : 1);
    memcpy(heap, x->b, n);
    int rc = image_probe(heap, n, info);
    free(heap);
    return rc;
}

static void expect_ok(const char *what, const bytes_t *x, int type, uint32_t w, uint32_t h)
{
    image_info_t info;
    int rc = probe(x, x->n, &info);
    if (rc != 0)
        fail_msg("%s: image_probe = %d (%s), expected 0", what, rc, info.why ? info.why : "no reason");
    if (info.type != type || info.width != w || info.height != h)
        fail_msg("%s: type %d %ux%u, expected type %d %ux%u", what, info.type, info.width, info.height, type,
                 w, h);
}

static void expect_bad(const char *what, const bytes_t *x, size_t n, int type)
{
    image_info_t info;
    int rc = probe(x, n, &info);
    if (rc != MKD_EINVAL)
        fail_msg("%s: image_probe = %d (%ux%u), expected MKD_EINVAL", what, rc, info.width, info.height);
    if (info.type != type)
        fail_msg("%s: type %d, expected %d", what, info.type, type);
    if (info.why == NULL || info.why[0] == '\0')
        fail_msg("%s: no reason given", what);
}

static void test_png(void **state)
{
    bytes_t x = png(640, 480, 8, 2);
    expect_ok("RGB 8", &x, IMAGE_PNG, 640, 480);
    x = png(1, IMAGE_SIDE_MAX, 1, 0);
    expect_ok("grey 1-bit at the bound", &x, IMAGE_PNG, 1, IMAGE_SIDE_MAX);
    x = png(16, 16, 4, 3);
    expect_ok("palette 4-bit", &x, IMAGE_PNG, 16, 16);

    x = png(0, 480, 8, 2);
    expect_bad("zero width", &x, x.n, IMAGE_PNG);
    x = png(640, IMAGE_SIDE_MAX + 1, 8, 2);
    expect_bad("too tall", &x, x.n, IMAGE_PNG);
    x = png(0x80000000u, 0x80000000u, 8, 2);
    expect_bad("2^31 sides", &x, x.n, IMAGE_PNG);
    x = png(16, 16, 3, 2);
    expect_bad("3-bit RGB", &x, x.n, IMAGE_PNG);
    x = png(16, 16, 8, 5);
    expect_bad("colour type 5", &x, x.n, IMAGE_PNG);
    x = png(16, 16, 0, 0);
    expect_bad("depth 0", &x, x.n, IMAGE_PNG);
    x = png(640, 480, 8, 2);
    x.b[20] ^= 1; /* the width changes, the CRC does not */
    expect_bad("bad CRC", &x, x.n, IMAGE_PNG);
    x = png(640, 480, 8, 2);
    memcpy(x.b + 12, "IDAT", 4);
    expect_bad("IDAT first", &x, x.n, IMAGE_PNG);
}

static void test_png_truncated_everywhere(void **state)
{
    bytes_t x = png(640, 480, 8, 2);
    for (size_t n = 8; n < 33; n++) {
        char what[48];
        snprintf(what, sizeof(what), "PNG cut at %zu", n);
        expect_bad(what, &x, n, IMAGE_PNG);
    }
    expect_bad("seven bytes of signature", &x, 7, -1);
}

static void test_jpeg(void **state)
{
    bytes_t x = jpeg(0xC0, 640, 480, 3);
    expect_ok("baseline", &x, IMAGE_JPEG, 640, 480);
    x = jpeg(0xC2, 1, 1, 1);
    expect_ok("progressive grey 1x1", &x, IMAGE_JPEG, 1, 1);
    x = jpeg(0xC0, 640, 0, 3);
    expect_bad("zero height (DNL)", &x, x.n, IMAGE_JPEG);
    x = jpeg(0xC0, 65535, 65535, 3);
    expect_bad("65535 square", &x, x.n, IMAGE_JPEG);
    x = jpeg(0xC0, 640, 480, 0);
    expect_bad("no components", &x, x.n, IMAGE_JPEG);
    /* DHT shares the SOF range: skipped, then the scan comes without a frame. */
    x = jpeg(0xC4, 640, 480, 3);
    expect_bad("DHT, then SOS", &x, x.n, IMAGE_JPEG);

    bytes_t html = {.n = 0};
    PUT_LIT(&html, "\xff\xd8\xff<html><script>alert(1)</script></html>");
    expect_bad("JPEG magic, then HTML", &html, html.n, IMAGE_JPEG);
    bytes_t app = {.n = 0};
    PUT_LIT(&app, "\xff\xd8\xff\xe0\x00\x04"
                  "ab<html>");
    expect_bad("APP0, then HTML", &app, app.n, IMAGE_JPEG);
    bytes_t eoi = {.n = 0};
    PUT_LIT(&eoi, "\xff\xd8\xff\xd9");
    expect_bad("SOI EOI", &eoi, eoi.n, IMAGE_JPEG);
    bytes_t fill = {.n = 0};
    PUT_LIT(&fill, "\xff\xd8\xff\xff\xff\xd0\xff\xc0\x00\x0b\x08\x00\x10\x00\x20\x01\x01\x11\x00");
    expect_ok("fill bytes and RST0 before SOF0", &fill, IMAGE_JPEG, 32, 16);
    bytes_t zero_len = {.n = 0};
    PUT_LIT(&zero_len, "\xff\xd8\xff\xe1\x00\x00");
    expect_bad("segment length 0", &zero_len, zero_len.n, IMAGE_JPEG);
}

static void test_jpeg_truncated_everywhere(void **state)
{
    bytes_t x = jpeg(0xC0, 640, 480, 3);
    size_t sof_end = 20 + 2 + 8 + 9;
    for (size_t n = 3; n < sof_end; n++) {
        char what[48];
        snprintf(what, sizeof(what), "JPEG cut at %zu", n);
        expect_bad(what, &x, n, IMAGE_JPEG);
    }
}

static void test_webp(void **state)
{
    bytes_t x = webp("VP8 ", "\x10\x02\x00\x9d\x01\x2a\x80\x02\xe0\x01", 10);
    expect_ok("lossy", &x, IMAGE_WEBP, 640, 480);
    /* Scale bits (the top two) are not part of the size. */
    x = webp("VP8 ", "\x10\x02\x00\x9d\x01\x2a\x80\xc2\xe0\x41", 10);
    expect_ok("lossy with scale bits", &x, IMAGE_WEBP, 640, 480);
    x = webp("VP8 ", "\x11\x02\x00\x9d\x01\x2a\x80\x02\xe0\x01", 10);
    expect_bad("lossy inter frame", &x, x.n, IMAGE_WEBP);
    x = webp("VP8 ", "\x10\x02\x00\x9d\x01\x2b\x80\x02\xe0\x01", 10);
    expect_bad("lossy bad start code", &x, x.n, IMAGE_WEBP);
    x = webp("VP8 ", "\x10\x02\x00\x9d\x01\x2a\x00\x00\xe0\x01", 10);
    expect_bad("lossy zero width", &x, x.n, IMAGE_WEBP);

    /* VP8L: 14 bits width-1, 14 bits height-1, alpha, 3 bits version. */
    uint32_t bits = (640 - 1) | (uint32_t)(480 - 1) << 14;
    unsigned char l[5] = {0x2F, (unsigned char)bits, (unsigned char)(bits >> 8), (unsigned char)(bits >> 16),
                          (unsigned char)(bits >> 24)};
    x = webp("VP8L", l, 5);
    expect_ok("lossless", &x, IMAGE_WEBP, 640, 480);
    l[4] |= 0x20; /* version 1 */
    x = webp("VP8L", l, 5);
    expect_bad("lossless version 1", &x, x.n, IMAGE_WEBP);
    l[4] &= (unsigned char)~0x20;
    l[0] = 0x2E;
    x = webp("VP8L", l, 5);
    expect_bad("lossless bad signature", &x, x.n, IMAGE_WEBP);

    x = webp("VP8X", "\x10\x00\x00\x00\x7f\x02\x00\xdf\x01\x00", 10);
    expect_ok("extended", &x, IMAGE_WEBP, 640, 480);
    x = webp("VP8X", "\x10\x00\x00\x00\xff\xff\xff\xff\xff\xff", 10);
    expect_bad("extended 2^24 sides", &x, x.n, IMAGE_WEBP);
    x = webp("ALPH", "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00", 10);
    expect_bad("unknown first chunk", &x, x.n, IMAGE_WEBP);
    x = webp("VP8 ", "\x10\x02\x00\x9d\x01\x2a\x80\x02\xe0\x01", 10);
    x.b[16] = 4; /* the chunk claims 4 bytes */
    expect_bad("chunk too short", &x, x.n, IMAGE_WEBP);
    for (size_t n = 12; n < x.n; n++) {
        bytes_t y = webp("VP8 ", "\x10\x02\x00\x9d\x01\x2a\x80\x02\xe0\x01", 10);
        char what[48];
        snprintf(what, sizeof(what), "WebP cut at %zu", n);
        expect_bad(what, &y, n, IMAGE_WEBP);
    }
}

static void test_not_ours(void **state)
{
    bytes_t x = {.n = 0};
    PUT_LIT(&x, "GIF89a\x01\x00\x01\x00");
    expect_bad("GIF", &x, x.n, -1);
    expect_bad("empty", &x, 0, -1);
    bytes_t riff = {.n = 0};
    PUT_LIT(&riff, "RIFF\0\0\0\0WAVEfmt ");
    expect_bad("WAVE", &riff, riff.n, -1);
    image_info_t info;
    assert_i64_eq(image_probe(NULL, 10, &info), MKD_EINVAL);
    assert_i64_eq(info.type, -1);
}

static void test_mime(void **state)
{
    assert_i64_eq(image_type_of_mime("image/jpeg", 10), IMAGE_JPEG);
    assert_i64_eq(image_type_of_mime("Image/WebP; q=1", 15), IMAGE_WEBP);
    assert_i64_eq(image_type_of_mime("image/png ", 10), IMAGE_PNG);
    assert_i64_eq(image_type_of_mime("image/pngx", 10), -1);
    assert_i64_eq(image_type_of_mime("image/png", 8), -1); /* respects n */
    assert_i64_eq(image_type_of_mime("image/gif", 9), -1);
    assert_i64_eq(image_type_of_mime(NULL, 0), -1);
    assert_string_equal(image_mime(IMAGE_WEBP), "image/webp");
    assert_string_equal(image_ext(IMAGE_JPEG), "jpg");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_png),  cmocka_unit_test(test_png_truncated_everywhere),
        cmocka_unit_test(test_jpeg), cmocka_unit_test(test_jpeg_truncated_everywhere),
        cmocka_unit_test(test_webp), cmocka_unit_test(test_not_ours),
        cmocka_unit_test(test_mime),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
