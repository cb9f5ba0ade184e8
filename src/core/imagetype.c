/* Image types and header checks (core/imagetype.h).
 *
 * Why parse at all: the magic bytes are three to twelve bytes a client can
 * put in front of anything (an HTML page served from our media origin is a
 * stored-XSS vector for browsers that sniff). A header that parses, with
 * plausible dimensions, is what every decoder checks first; anything else
 * is refused before a byte reaches the disk. */
#include "core/imagetype.h"

#include <string.h>
#include <strings.h>

#include "core/error.h"

static const struct {
    const char *mime;
    const char *ext;
} types[IMAGE_NTYPES] = {{"image/jpeg", "jpg"}, {"image/png", "png"}, {"image/webp", "webp"}};

const char *image_mime(int type)
{
    return type >= 0 && type < IMAGE_NTYPES ? types[type].mime : "application/octet-stream";
}

const char *image_ext(int type)
{
    return type >= 0 && type < IMAGE_NTYPES ? types[type].ext : "bin";
}

int image_type_of_mime(const char *s, size_t n)
{
    if (s == NULL)
        return -1;
    for (int t = 0; t < IMAGE_NTYPES; t++) {
        size_t m = strlen(types[t].mime);
        if (n >= m && strncasecmp(s, types[t].mime, m) == 0 &&
            (n == m || s[m] == ';' || s[m] == ' ' || s[m] == '\t'))
            return t;
    }
    return -1;
}

static uint32_t be16(const unsigned char *p)
{
    return (uint32_t)p[0] << 8 | p[1];
}

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint32_t le24(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16;
}

static uint32_t le32(const unsigned char *p)
{
    return le24(p) | (uint32_t)p[3] << 24;
}

static int refuse(image_info_t *out, const char *why)
{
    out->why = why;
    return MKD_EINVAL;
}

static int sides(image_info_t *out, uint32_t w, uint32_t h)
{
    if (w == 0 || h == 0)
        return refuse(out, "the header gives a zero width or height");
    if (w > IMAGE_SIDE_MAX || h > IMAGE_SIDE_MAX)
        return refuse(out, "the header gives a width or height above 16384 pixels");
    out->width = w;
    out->height = h;
    return 0;
}

/* ---- PNG: the signature, then IHDR (13 bytes and its CRC) ------------------------------------- */

/* CRC-32 of PNG (ISO 3309), bit by bit: it runs over 17 bytes per upload. */
static uint32_t crc32_png(const unsigned char *p, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
    }
    return ~c;
}

static int probe_png(const unsigned char *p, size_t n, image_info_t *out)
{
    if (n < 8 + 8 + 13 + 4)
        return refuse(out, "the PNG header is truncated");
    if (be32(p + 8) != 13 || memcmp(p + 12, "IHDR", 4) != 0)
        return refuse(out, "the PNG does not start with an IHDR chunk");
    if (crc32_png(p + 12, 4 + 13) != be32(p + 29))
        return refuse(out, "the PNG IHDR chunk fails its CRC");
    const unsigned char *h = p + 16;
    unsigned depth = h[8], colour = h[9];
    /* The bit depths each colour type allows (PNG 11.2.2). */
    static const char *const depths[7] = {"\1\2\4\10\20", NULL, "\10\20", "\1\2\4\10",
                                          "\10\20",       NULL, "\10\20"};
    if (colour > 6 || depths[colour] == NULL || depth == 0 || strchr(depths[colour], (int)depth) == NULL)
        return refuse(out, "the PNG IHDR gives an invalid colour type or bit depth");
    if (h[10] != 0 || h[11] != 0 || h[12] > 1)
        return refuse(out, "the PNG IHDR gives an unknown compression, filter or interlace method");
    return sides(out, be32(h), be32(h + 4));
}

/* ---- JPEG: segments up to the first frame header (SOFn) ---------------------------------------- */

static int is_sof(unsigned m)
{
    /* C4 (DHT), C8 (JPG) and CC (DAC) share the range but are not frames. */
    return m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC;
}

static int probe_jpeg(const unsigned char *p, size_t n, image_info_t *out)
{
    size_t i = 2; /* after SOI */
    for (;;) {
        if (i >= n)
            return refuse(out, "the JPEG ends before its frame header");
        if (p[i] != 0xFF)
            return refuse(out, "the JPEG has bytes where a segment marker should be");
        while (i < n && p[i] == 0xFF) /* fill bytes */
            i++;
        if (i >= n)
            return refuse(out, "the JPEG ends before its frame header");
        unsigned m = p[i++];
        if ((m >= 0xD0 && m <= 0xD7) || m == 0x01)
            continue; /* RSTn, TEM: no length */
        if (m == 0x00 || m == 0xD8 || m == 0xD9 || m == 0xDA)
            return refuse(out, "the JPEG has no frame header before its image data");
        if (n - i < 2)
            return refuse(out, "the JPEG ends inside a segment header");
        size_t len = be16(p + i);
        if (len < 2)
            return refuse(out, "the JPEG has a segment of impossible length");
        if (n - i < len)
            return refuse(out, "the JPEG ends inside a segment");
        if (is_sof(m)) {
            /* length, precision, height, width, components, 3 bytes each */
            if (len < 8 || p[i + 7] == 0 || p[i + 7] > 4 || len < 8 + 3 * (size_t)p[i + 7])
                return refuse(out, "the JPEG frame header is malformed");
            return sides(out, be16(p + i + 5), be16(p + i + 3));
        }
        i += len;
    }
}

/* ---- WebP: RIFF, then the first chunk (VP8, VP8L or VP8X) ---------------------------------------- */

static int probe_webp(const unsigned char *p, size_t n, image_info_t *out)
{
    if (n < 20)
        return refuse(out, "the WebP header is truncated");
    const unsigned char *c = p + 12, *d = p + 20;
    uint32_t size = le32(c + 4), need;
    if (memcmp(c, "VP8 ", 4) == 0)
        need = 10;
    else if (memcmp(c, "VP8L", 4) == 0)
        need = 5;
    else if (memcmp(c, "VP8X", 4) == 0)
        need = 10;
    else
        return refuse(out, "the WebP does not start with a VP8, VP8L or VP8X chunk");
    if (size < need || le32(p + 4) < 4 + 8 + need)
        return refuse(out, "the WebP header gives impossible sizes");
    if (n - 20 < need)
        return refuse(out, "the WebP header is truncated");
    if (c[3] == ' ') {
        /* A key frame (bit 0 clear) with the start code; 14-bit sides. */
        if ((d[0] & 1) != 0 || d[3] != 0x9D || d[4] != 0x01 || d[5] != 0x2A)
            return refuse(out, "the WebP VP8 frame header is malformed");
        return sides(out, (d[6] | (uint32_t)d[7] << 8) & 0x3FFF, (d[8] | (uint32_t)d[9] << 8) & 0x3FFF);
    }
    if (c[3] == 'L') {
        uint32_t bits = le32(d + 1);
        if (d[0] != 0x2F || bits >> 29 != 0)
            return refuse(out, "the WebP VP8L header is malformed");
        return sides(out, (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1);
    }
    return sides(out, le24(d + 4) + 1, le24(d + 7) + 1);
}

int image_probe(const unsigned char *p, size_t n, image_info_t *out)
{
    memset(out, 0, sizeof(*out));
    out->type = -1;
    if (p == NULL)
        n = 0;
    if (n >= 3 && p[0] == 0xFF && p[1] == 0xD8 && p[2] == 0xFF)
        out->type = IMAGE_JPEG;
    else if (n >= 8 && memcmp(p, "\x89PNG\r\n\x1a\n", 8) == 0)
        out->type = IMAGE_PNG;
    else if (n >= 12 && memcmp(p, "RIFF", 4) == 0 && memcmp(p + 8, "WEBP", 4) == 0)
        out->type = IMAGE_WEBP;
    switch (out->type) {
    case IMAGE_JPEG:
        return probe_jpeg(p, n, out);
    case IMAGE_PNG:
        return probe_png(p, n, out);
    case IMAGE_WEBP:
        return probe_webp(p, n, out);
    default:
        return refuse(out, "the body is not a JPEG, PNG or WebP image");
    }
}
