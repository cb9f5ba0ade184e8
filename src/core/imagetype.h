#ifndef MARKETD_CORE_IMAGETYPE_H
#define MARKETD_CORE_IMAGETYPE_H
/*
 * The image types product uploads accept (api.md "Products", S13) and a
 * parser of just enough of each header to tell a real image from bytes that
 * merely start with the right magic: PNG's IHDR chunk (with its CRC), the
 * first JPEG frame header (SOFn) after the segments before it, and the first
 * chunk of a WebP file (VP8, VP8L or VP8X). The pixels are never decoded.
 *
 * Pure functions over {ptr, len}: no allocation, no NUL terminator needed,
 * nothing read past n (tests/unit/test_imagetype.c, tests/fuzz/fuzz_image.c).
 */
#include <stddef.h>
#include <stdint.h>

typedef enum { IMAGE_JPEG, IMAGE_PNG, IMAGE_WEBP, IMAGE_NTYPES } image_type_t;

/* Largest width or height accepted: above any camera and below WebP's own
 * 16383; a header claiming more is a forgery or a decompression bomb. */
#define IMAGE_SIDE_MAX 16384

typedef struct image_info {
    int type;        /* image_type_t the magic bytes announce, or -1 for none of ours */
    uint32_t width;  /* pixels, when image_probe returned 0 */
    uint32_t height; /* pixels, when image_probe returned 0 */
    const char *why; /* when image_probe failed: a static English reason */
} image_info_t;

/* The MIME type ("image/jpeg") and file extension ("jpg") of a type. */
const char *image_mime(int type);
const char *image_ext(int type);

/* The type a Content-Type value names (case-insensitive, parameters after
 * ';' ignored), or -1. */
int image_type_of_mime(const char *s, size_t n);

/* Reads the header of p[0..n). Returns 0 with out->type, width and height
 * set when it is a complete header of one of our types whose dimensions are
 * 1..IMAGE_SIDE_MAX; otherwise MKD_EINVAL, with out->type the type of the
 * magic bytes (-1 if none) and out->why saying what is wrong. */
int image_probe(const unsigned char *p, size_t n, image_info_t *out);

#endif
