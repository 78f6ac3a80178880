/*  collector/collector_html.c - report.html: the notebook's end-of-run
    figures as one self-contained page. The plots are inline SVG drawn here
    (no script: nothing to fail in the browser, nothing to inject into), the
    radio-map thumbnails are PNGs encoded with libpng into memory and
    embedded as base64 data: URIs, and a Content-Security-Policy meta tag
    forbids every network fetch, so the page opens the same from a laptop, a
    mail attachment or an air-gapped cluster. Results are untrusted: every
    string from them goes through put_esc, and numbers are printed only when
    they are finite JSON numbers. */

#include "collector_html.h"

#include <math.h>
#include <png.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

double collector_clip(double x, double lo, double hi, bool *clipped)
{
    bool out = !(x >= lo && x <= hi); /* NaN too, though JSON cannot carry it */
    if (clipped && out)
        *clipped = true;
    return !out ? x : x > hi ? hi : lo;
}

#define DASH       "\xe2\x80\x94" /* "—", the mark of a missing field */
#define ELLIPSIS   "\xe2\x80\xa6"
#define CDF_POINTS 400  /* points per CDF curve, whatever the cell count */
#define TABLE_MAX  5000 /* scenes in the table; the plots use every result */
#define REASON_MAX 200  /* bytes of a reason shown in the table (all in the tooltip) */
#define LABEL_MAX  28   /* bytes of a GPU label in the bar chart */
#define THUMB_SIDE 128  /* CSS pixels a thumbnail's longer side is shown at (about) */
#define TICKS_MAX  24   /* ticks per axis, whatever the data say */

/* The plot colours (matplotlib's first ones): the e2e test looks for them
   in a screenshot, so each belongs to one plot only. */
#define C_INITIAL   "#1f77b4"
#define C_OPTIMIZED "#ff7f0e"
#define C_HIST      "#2ca02c"
#define C_GPU       "#9467bd"

/* The first n bytes of s (at most), escaped. HTML's five special characters
   become entities; so that text stays text in every context this page uses
   (element content, quoted attributes, SVG <text> and <title>). */
static void put_esc_n(bf_buf_t *b, const char *s, size_t n)
{
    if (!s)
        return;
    for (size_t i = 0; i < n && s[i]; i++) {
        switch (s[i]) {
        case '&':
            bf_buf_puts(b, "&amp;");
            break;
        case '<':
            bf_buf_puts(b, "&lt;");
            break;
        case '>':
            bf_buf_puts(b, "&gt;");
            break;
        case '"':
            bf_buf_puts(b, "&quot;");
            break;
        case '\'':
            bf_buf_puts(b, "&#39;");
            break;
        default:
            bf_buf_put(b, &s[i], 1);
        }
    }
}

static void put_esc(bf_buf_t *b, const char *s)
{
    put_esc_n(b, s, SIZE_MAX);
}

/* s cut to at most max bytes on a UTF-8 character boundary, escaped, with
   "…" when something was cut. */
static void put_esc_cut(bf_buf_t *b, const char *s, size_t max)
{
    size_t n = s ? strlen(s) : 0;
    if (n <= max) {
        put_esc(b, s);
        return;
    }
    while (max > 0 && ((unsigned char)s[max] & 0xC0) == 0x80)
        max--;
    put_esc_n(b, s, max);
    bf_buf_puts(b, ELLIPSIS);
}

char *collector_html_escape(const char *s)
{
    bf_buf_t b = {0};
    bf_buf_put(&b, "", 0);
    put_esc(&b, s ? s : "");
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    return b.p;
}

static void put_base64(bf_buf_t *b, const unsigned char *d, size_t n)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char q[4];
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)d[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)d[i + 1] << 8;
        if (i + 2 < n)
            v |= d[i + 2];
        q[0] = tab[(v >> 18) & 63];
        q[1] = tab[(v >> 12) & 63];
        q[2] = i + 1 < n ? tab[(v >> 6) & 63] : '=';
        q[3] = i + 2 < n ? tab[v & 63] : '=';
        bf_buf_put(b, q, 4);
    }
}

/* A finite JSON number, or NaN. */
static double numv(const json_t *v)
{
    if (!json_is_number(v))
        return NAN;
    double x = json_number_value(v);
    return isfinite(x) ? x : NAN;
}

/* fmt (one double conversion) of v, or "—". */
static void put_num(bf_buf_t *b, const json_t *v, const char *fmt)
{
    double x = numv(v);
    if (isnan(x))
        bf_buf_puts(b, DASH);
    else
        bf_buf_printf(b, fmt, x);
}

static const json_t *get2(const json_t *o, const char *a, const char *k)
{
    return json_object_get(json_object_get(o, a), k);
}

/* ---- PNG ------------------------------------------------------------------------ */

typedef struct {
    unsigned char *p;
    size_t len, cap;
    bool oom;
    char msg[200];
} png_mem_t;

static void png_mem_write(png_structp png, png_bytep data, size_t n)
{
    png_mem_t *m = png_get_io_ptr(png);
    if (n > SIZE_MAX - m->len || !bf_grow(&m->p, &m->cap, m->len + n, 1, 8192)) {
        m->oom = true;
        png_error(png, "out of memory");
    }
    memcpy(m->p + m->len, data, n);
    m->len += n;
}

static void png_mem_flush(png_structp png)
{
    (void)png;
}

/* libpng's errors end in a longjmp back to collector_png_encode; keep the
   message instead of printing it. */
static void png_on_error(png_structp png, png_const_charp msg)
{
    png_mem_t *m = png_get_error_ptr(png);
    bf_strlcpy(m->msg, msg ? msg : "unknown error", sizeof m->msg);
    png_longjmp(png, 1);
}

static void png_on_warning(png_structp png, png_const_charp msg)
{
    (void)png;
    bf_debug("libpng: %s", msg ? msg : "");
}

bf_err_t collector_png_encode(const unsigned char *pixels, unsigned width, unsigned height,
                              unsigned channels, unsigned char **out, size_t *len, char *err)
{
    if (out)
        *out = NULL;
    if (len)
        *len = 0;
    if (!pixels || !out || !len || (channels != 3 && channels != 4) || width == 0 || height == 0 ||
        width > COLLECTOR_PNG_MAX_SIDE || height > COLLECTOR_PNG_MAX_SIDE)
        return bf_fail(err, BF_EINVAL, "png: bad image (%u x %u, %u channels)", width, height,
                       channels);
    /* On the heap: what libpng's longjmp may leave half-updated is read
       through pointers that do not change after setjmp. */
    png_mem_t *m = calloc(1, sizeof *m);
    png_bytep *rows = malloc(height * sizeof *rows);
    if (!m || !rows) {
        free(m);
        free(rows);
        return bf_fail(err, BF_ENOMEM, "png: out of memory");
    }
    for (unsigned y = 0; y < height; y++)
        rows[y] = (png_bytep)(uintptr_t)(pixels + (size_t)y * width * channels);
    png_structp png =
        png_create_write_struct(PNG_LIBPNG_VER_STRING, m, png_on_error, png_on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info) {
        png_destroy_write_struct(png ? &png : NULL, NULL);
        free(m);
        free(rows);
        return bf_fail(err, BF_ENOMEM, "png: out of memory");
    }
    if (setjmp(png_jmpbuf(png))) {
        bf_err_t rc = m->oom ? bf_fail(err, BF_ENOMEM, "png: out of memory")
                             : bf_fail(err, BF_EIO, "png: libpng: %s", m->msg);
        png_destroy_write_struct(&png, &info);
        free(m->p);
        free(m);
        free(rows);
        return rc;
    }
    png_set_write_fn(png, m, png_mem_write, png_mem_flush);
    png_set_IHDR(png, info, width, height, 8,
                 channels == 4 ? PNG_COLOR_TYPE_RGBA : PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_set_compression_level(png, 6); /* 9 is 5x slower on maps with large empty areas, for 1 % */
    png_write_info(png, info);
    png_write_image(png, rows);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    *out = m->p;
    *len = m->len;
    free(m);
    free(rows);
    return BF_OK;
}

/* ---- thumbnails ------------------------------------------------------------------ */

/* matplotlib's viridis at t = 0, 0.1, ..., 1 */
static const unsigned char viridis[11][3] = {
    {68, 1, 84},    {72, 36, 117},  {65, 68, 135},  {53, 95, 141},  {42, 120, 142}, {33, 145, 140},
    {34, 168, 132}, {68, 191, 112}, {122, 209, 81}, {189, 223, 38}, {253, 231, 37}};

void collector_html_colormap(double t, unsigned char rgb[3])
{
    if (isnan(t)) {
        rgb[0] = rgb[1] = rgb[2] = 200;
        return;
    }
    t = t < 0 ? 0 : (t > 1 ? 1 : t);
    double pos = t * 10.0;
    int i = (int)pos;
    if (i >= 10)
        i = 9;
    double f = pos - i;
    for (int c = 0; c < 3; c++)
        rgb[c] = (unsigned char)lround(viridis[i][c] + (viridis[i + 1][c] - viridis[i][c]) * f);
}

/* Checks the shape of a thumbnails object; 0 with nx, ny set, or an error. */
static bf_err_t thumb_shape(const json_t *th, const char *map, unsigned *nx, unsigned *ny,
                            char *err)
{
    const json_t *jx = json_object_get(th, "nx"), *jy = json_object_get(th, "ny");
    if (!json_is_object(th))
        return bf_fail(err, BF_EINVAL, "thumbnails: not an object");
    if (!json_is_integer(jx) || json_integer_value(jx) < 1 ||
        json_integer_value(jx) > COLLECTOR_HTML_MAX_THUMB)
        return bf_fail(err, BF_EINVAL, "thumbnails.nx: not an integer in 1..%d",
                       COLLECTOR_HTML_MAX_THUMB);
    if (!json_is_integer(jy) || json_integer_value(jy) < 1 ||
        json_integer_value(jy) > COLLECTOR_HTML_MAX_THUMB)
        return bf_fail(err, BF_EINVAL, "thumbnails.ny: not an integer in 1..%d",
                       COLLECTOR_HTML_MAX_THUMB);
    *nx = (unsigned)json_integer_value(jx);
    *ny = (unsigned)json_integer_value(jy);
    const json_t *a = json_object_get(th, map ? map : "");
    if (!json_is_array(a) || json_array_size(a) != (size_t)*nx * *ny)
        return bf_fail(err, BF_EINVAL, "thumbnails.%s: not an array of nx*ny = %u values",
                       map ? map : "?", *nx * *ny);
    for (size_t i = 0; i < json_array_size(a); i++) {
        const json_t *v = json_array_get(a, i);
        if (!json_is_null(v) && isnan(numv(v)))
            return bf_fail(err, BF_EINVAL, "thumbnails.%s[%zu]: not a number or null",
                           map ? map : "?", i);
    }
    return BF_OK;
}

bf_err_t collector_html_thumbnail(const json_t *thumbnails, const char *map, double lo, double hi,
                                  unsigned scale, unsigned char **rgb, unsigned *w, unsigned *h,
                                  char *err)
{
    *rgb = NULL;
    *w = *h = 0;
    unsigned nx, ny;
    bf_err_t rc = thumb_shape(thumbnails, map, &nx, &ny, err);
    if (rc != BF_OK)
        return rc;
    if (!isfinite(lo) || !isfinite(hi) || !(lo < hi) || scale < 1 || scale > 16)
        return bf_fail(err, BF_EINVAL, "thumbnail: bad range %g..%g or scale %u", lo, hi, scale);
    const json_t *a = json_object_get(thumbnails, map);
    unsigned W = nx * scale, H = ny * scale;
    unsigned char *px = malloc((size_t)W * H * 3);
    if (!px)
        return bf_fail(err, BF_ENOMEM, "thumbnail: out of memory");
    for (unsigned r = 0; r < H; r++) {
        unsigned iy = ny - 1 - r / scale; /* north up: the last map row on top */
        for (unsigned c = 0; c < W; c++) {
            double v = numv(json_array_get(a, (size_t)iy * nx + c / scale));
            collector_html_colormap(isnan(v) ? NAN : (v - lo) / (hi - lo),
                                    &px[((size_t)r * W + c) * 3]);
        }
    }
    *rgb = px;
    *w = W;
    *h = H;
    return BF_OK;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The common colour range of both maps: their 2nd to 98th percentile, so one
   hot cell beside the transmitter does not wash the rest out. false when
   neither map has a value. */
static bool thumb_range(const json_t *th, double *lo, double *hi)
{
    const char *maps[2] = {"initial", "optimized"};
    size_t n = 0, cap = json_array_size(json_object_get(th, maps[0])) +
                        json_array_size(json_object_get(th, maps[1]));
    double *v = malloc((cap ? cap : 1) * sizeof *v);
    if (!v)
        return false;
    for (int m = 0; m < 2; m++) {
        const json_t *a = json_object_get(th, maps[m]);
        for (size_t i = 0; i < json_array_size(a) && n < cap; i++) {
            double x = numv(json_array_get(a, i));
            if (!isnan(x))
                v[n++] = collector_clip(x, COLLECTOR_DBM_MIN, COLLECTOR_DBM_MAX, NULL);
        }
    }
    if (n == 0) {
        free(v);
        return false;
    }
    qsort(v, n, sizeof *v, cmp_double);
    *lo = bf_percentile(v, n, 2);
    *hi = bf_percentile(v, n, 98);
    free(v);
    if (!(*hi - *lo >= 0.1)) {
        double mid = (*lo + *hi) / 2;
        *lo = mid - 1;
        *hi = mid + 1;
    }
    return true;
}

/* One scene's two thumbnails as PNGs, or none (false) when the result has
   no usable thumbnails. */
typedef struct {
    unsigned char *png[2];
    size_t len[2];
    unsigned w, h;   /* of the PNGs: one pixel per block */
    unsigned dw, dh; /* shown at, in CSS pixels (scaled up, pixelated) */
    double lo, hi;
} thumbs_t;

static void thumbs_clear(thumbs_t *t)
{
    free(t->png[0]);
    free(t->png[1]);
    memset(t, 0, sizeof *t);
}

static bf_err_t thumbs_make(const json_t *result, const char *scene, thumbs_t *t, char *err)
{
    static const char *const maps[2] = {"initial", "optimized"};
    memset(t, 0, sizeof *t);
    const json_t *th = json_object_get(result, "thumbnails");
    if (!th)
        return BF_ENOENT;
    unsigned nx, ny;
    char why[BF_ERRLEN];
    for (int m = 0; m < 2; m++) {
        if (thumb_shape(th, maps[m], &nx, &ny, why) != BF_OK) {
            bf_warn("report.html: scene %s: %s", scene, why);
            return BF_ENOENT;
        }
    }
    if (!thumb_range(th, &t->lo, &t->hi))
        return BF_ENOENT; /* nothing but empty cells: nothing to show */
    /* One pixel per block: the browser scales it up (pixelated), and zlib
       is 20 times faster on the small image than on a scaled-up one. */
    unsigned side = nx > ny ? nx : ny;
    unsigned scale = THUMB_SIDE / side;
    scale = scale < 1 ? 1 : (scale > 8 ? 8 : scale);
    t->dw = nx * scale;
    t->dh = ny * scale;
    for (int m = 0; m < 2; m++) {
        unsigned char *rgb = NULL;
        bf_err_t rc =
            collector_html_thumbnail(th, maps[m], t->lo, t->hi, 1, &rgb, &t->w, &t->h, err);
        if (rc == BF_OK)
            rc = collector_png_encode(rgb, t->w, t->h, 3, &t->png[m], &t->len[m], err);
        free(rgb);
        if (rc != BF_OK) {
            thumbs_clear(t);
            return rc;
        }
    }
    return BF_OK;
}

/* Writes dir/thumbnails/<scene>_<map>.png unless it already holds exactly
   these bytes (a report written again costs no fsync per scene). */
static bf_err_t thumb_file(const char *tdir, const char *scene, const char *map,
                           const unsigned char *png, size_t len, char *err)
{
    if (!*scene)
        return BF_OK;
    char *name = bf_asprintf("%s_%s.png", scene, map);
    if (!name)
        return bf_fail(err, BF_ENOMEM, "out of memory");
    if (!bf_safe_name(name)) {
        bf_warn("report.html: scene %s: no thumbnail file (not a safe file name)", scene);
        free(name);
        return BF_OK;
    }
    char *path = bf_asprintf("%s/%s", tdir, name);
    free(name);
    if (!path)
        return bf_fail(err, BF_ENOMEM, "out of memory");
    char *old = NULL, ignored[BF_ERRLEN];
    size_t oldlen = 0;
    bf_err_t rc = BF_OK;
    if (bf_read_file(path, len + 1, &old, &oldlen, ignored) != BF_OK || oldlen != len ||
        memcmp(old, png, len) != 0)
        rc = bf_write_atomic(path, png, len, err);
    free(old);
    free(path);
    return rc;
}

/* ---- plots (inline SVG) ------------------------------------------------------- */

typedef struct {
    double x0, x1, y0, y1; /* data range */
    double w, h;           /* the viewBox */
    double ml, mr, mt, mb; /* margins */
} frame_t;

static double px_x(const frame_t *f, double x)
{
    return f->ml + (x - f->x0) / (f->x1 - f->x0) * (f->w - f->ml - f->mr);
}

static double px_y(const frame_t *f, double y)
{
    return f->h - f->mb - (y - f->y0) / (f->y1 - f->y0) * (f->h - f->mt - f->mb);
}

/* A "nice" tick step (1, 2 or 5 times a power of ten) for about n ticks;
   0 when [lo, hi] is empty, not finite, or too narrow for its magnitude
   (t + step == t), so there is nothing to tick. */
static double tick_step(double lo, double hi, int n)
{
    double raw = (hi - lo) / n;
    if (!(raw > 0) || !isfinite(raw) || !isfinite(lo) || !isfinite(hi))
        return 0;
    double p = pow(10, floor(log10(raw))), m = raw / p;
    double step = p * (m < 1.5 ? 1 : m < 3.5 ? 2 : m < 7.5 ? 5 : 10);
    if (!(step > 0) || !isfinite(step) || lo + step == lo || hi + step == hi)
        return 0;
    return step;
}

/* The ticks of [lo, hi] at multiples of step: at most TICKS_MAX, counted by
   index (t = first + i * step), so no range, however large in magnitude or
   narrow, can make the loop run long. Returns how many; 0 without step. */
static int ticks(double lo, double hi, double step, double *t)
{
    if (!(step > 0))
        return 0;
    double first = ceil(lo / step) * step;
    int n = 0;
    for (int i = 0; i < TICKS_MAX; i++) {
        double x = first + (double)i * step;
        if (!(x <= hi + step * 1e-9))
            break;
        t[n++] = x;
    }
    return n;
}

static void svg_open(bf_buf_t *b, const char *id, const frame_t *f, const char *title)
{
    bf_buf_printf(b,
                  "<svg id=\"%s\" class=\"plot\" viewBox=\"0 0 %.0f %.0f\" "
                  "xmlns=\"http://www.w3.org/2000/svg\" role=\"img\" aria-label=\"",
                  id, f->w, f->h);
    put_esc(b, title);
    bf_buf_puts(b, "\">\n");
}

/* Axes, ticks, grid lines and labels of f; yfmt NULL for no y ticks. */
static void svg_axes(bf_buf_t *b, const frame_t *f, const char *xlabel, const char *ylabel,
                     const char *yfmt)
{
    double step = tick_step(f->x0, f->x1, 5), tv[TICKS_MAX];
    int nt = ticks(f->x0, f->x1, step, tv);
    for (int i = 0; i < nt; i++) {
        double t = tv[i], x = px_x(f, t);
        bf_buf_printf(b, "<line class=\"grid\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>",
                      x, f->mt, x, f->h - f->mb);
        bf_buf_printf(
            b, "<text class=\"tick\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%.*f</text>\n", x,
            f->h - f->mb + 14, step < 1 ? (step < 0.1 ? 2 : 1) : 0,
            fabs(t) < step * 1e-9 ? 0.0 : t);
    }
    if (yfmt) {
        step = tick_step(f->y0, f->y1, 4);
        if (!strcmp(yfmt, "%.0f") && step > 0 && step < 1)
            step = 1; /* counts */
        nt = ticks(f->y0, f->y1, step, tv);
        for (int i = 0; i < nt; i++) {
            double t = tv[i], y = px_y(f, t);
            bf_buf_printf(b,
                          "<line class=\"grid\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>",
                          f->ml, y, f->w - f->mr, y);
            bf_buf_printf(b, "<text class=\"tick\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">",
                          f->ml - 4, y + 4);
            bf_buf_printf(b, yfmt, t);
            bf_buf_puts(b, "</text>\n");
        }
    }
    bf_buf_printf(b,
                  "<rect class=\"frame\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\"/>\n",
                  f->ml, f->mt, f->w - f->ml - f->mr, f->h - f->mt - f->mb);
    bf_buf_printf(b,
                  "<text class=\"label\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n",
                  (f->ml + f->w - f->mr) / 2, f->h - 6, xlabel);
    if (ylabel)
        bf_buf_printf(b,
                      "<text class=\"label\" transform=\"translate(12 %.1f) rotate(-90)\" "
                      "text-anchor=\"middle\">%s</text>\n",
                      (f->mt + f->h - f->mb) / 2, ylabel);
}

static void svg_nodata(bf_buf_t *b, const frame_t *f, const char *what)
{
    bf_buf_printf(
        b,
        "<text class=\"nodata\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">no data: %s</text>\n",
        f->w / 2, f->h / 2, what);
}

typedef struct {
    double *v;
    size_t n, cap;
    bool oom;
} vec_t;

static void vec_push(vec_t *a, double x)
{
    if (a->oom)
        return;
    if (!bf_grow(&a->v, &a->cap, a->n + 1, sizeof *a->v, 1024)) {
        a->oom = true;
        return;
    }
    a->v[a->n++] = x;
}

static bool is_success(const json_t *res)
{
    const char *st = json_string_value(json_object_get(res, "status"));
    return st && !strcmp(st, "success");
}

static void cdf_curve(bf_buf_t *b, const frame_t *f, const vec_t *a, const char *cls,
                      const char *colour)
{
    bf_buf_printf(b,
                  "<polyline class=\"%s\" fill=\"none\" stroke=\"%s\" stroke-width=\"3\" points=\"",
                  cls, colour);
    size_t k = a->n - 1 < CDF_POINTS ? a->n - 1 : CDF_POINTS;
    for (size_t i = 0; i <= k; i++) {
        size_t idx = k ? (size_t)llround((double)i * (double)(a->n - 1) / (double)k) : 0;
        double x = a->v[idx] < f->x0 ? f->x0 : a->v[idx];
        bf_buf_printf(b, "%s%.1f,%.1f", i ? " " : "", px_x(f, x),
                      px_y(f, (double)(idx + 1) / (double)a->n));
    }
    bf_buf_puts(b, "\"/>\n");
}

static double vmean(const vec_t *a)
{
    double s = 0;
    for (size_t i = 0; i < a->n; i++)
        s += a->v[i];
    return a->n ? s / (double)a->n : NAN;
}

/* What a CDF plot draws: zone power (dBm) or, for results with several
   transmitters or a SINR objective, SINR (dB). */
typedef struct {
    const char *keys[2]; /* the result's initial and optimized arrays */
    const char *id, *desc, *title, *axis, *unit;
} cdf_kind_t;

static const cdf_kind_t cdf_power = {{"zone_power_initial", "zone_power_optimized"},
                                     "plot-cdf",
                                     "CDF of zone power, initial vs optimized",
                                     "Zone power CDF",
                                     "zone power (dBm)",
                                     "dBm"};
static const cdf_kind_t cdf_sinr = {{"sinr_initial", "sinr_optimized"},
                                    "plot-sinr-cdf",
                                    "CDF of zone SINR, initial vs optimized",
                                    "Zone SINR CDF",
                                    "SINR (dB)",
                                    "dB"};

/* The CDF of every zone cell of the successes, initial vs optimized. */
static void plot_cdf(bf_buf_t *b, const json_t *const *res, size_t n, const cdf_kind_t *kind,
                     bool *oom)
{
    vec_t a[2] = {{0}, {0}};
    size_t nclipped = 0;
    const char *const *keys = kind->keys;
    for (size_t i = 0; i < n; i++) {
        if (!is_success(res[i]))
            continue;
        for (int m = 0; m < 2; m++) {
            const json_t *arr = json_object_get(res[i], keys[m]);
            for (size_t k = 0; k < json_array_size(arr); k++) {
                double x = numv(json_array_get(arr, k));
                bool out = false;
                if (isnan(x))
                    continue;
                vec_push(&a[m], collector_clip(x, COLLECTOR_DBM_MIN, COLLECTOR_DBM_MAX, &out));
                nclipped += out;
            }
        }
    }
    frame_t f = {0, 1, 0, 1, 400, 300, 46, 12, 30, 38};
    svg_open(b, kind->id, &f, kind->desc);
    bf_buf_printf(b,
                  "<text class=\"title\" x=\"%.1f\" y=\"18\" text-anchor=\"middle\">"
                  "%s</text>\n",
                  f.w / 2, kind->title);
    if (a[0].oom || a[1].oom) {
        *oom = true;
    } else if (a[0].n == 0 || a[1].n == 0) {
        svg_axes(b, &f, kind->unit, "CDF", "%.1f");
        svg_nodata(b, &f,
                   kind == &cdf_sinr ? "no SINR of a successful scene"
                                     : "no zone power of a successful scene");
    } else {
        double mean[2];
        for (int m = 0; m < 2; m++) {
            mean[m] = vmean(&a[m]);
            if (a[m].n)
                qsort(a[m].v, a[m].n, sizeof *a[m].v, cmp_double);
        }
        /* Cells no ray reached all sit at the solver's floor_dbm, far
           below the rest: when they are more than 1 % of the cells the axis
           starts above them (the curve starts at their share), and from the
           1st percentile of the others either way. */
        double vmin = fmin(a[0].v[0], a[1].v[0]);
        size_t at_min[2] = {0, 0};
        for (int m = 0; m < 2; m++)
            while (at_min[m] < a[m].n && a[m].v[at_min[m]] == vmin)
                at_min[m]++;
        bool has_floor = at_min[0] + at_min[1] > (a[0].n + a[1].n) / 100 && at_min[0] < a[0].n &&
                         at_min[1] < a[1].n;
        size_t s0 = has_floor ? at_min[0] : 0, s1 = has_floor ? at_min[1] : 0;
        f.x0 = fmin(bf_percentile(a[0].v + s0, a[0].n - s0, 1),
                    bf_percentile(a[1].v + s1, a[1].n - s1, 1));
        f.x1 = fmax(a[0].v[a[0].n - 1], a[1].v[a[1].n - 1]);
        if (!(f.x1 - f.x0 > 1e-9)) {
            f.x0 -= 1;
            f.x1 += 1;
        }
        svg_axes(b, &f, kind->axis, "CDF", "%.1f");
        cdf_curve(b, &f, &a[0], "cdf-initial", C_INITIAL);
        cdf_curve(b, &f, &a[1], "cdf-optimized", C_OPTIMIZED);
        const char *names[2] = {"initial", "optimized"}, *colours[2] = {C_INITIAL, C_OPTIMIZED};
        for (int m = 0; m < 2; m++) {
            double y = f.mt + 12 + 16 * m;
            bf_buf_printf(
                b,
                "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
                "stroke-width=\"3\"/><text class=\"legend\" x=\"%.1f\" y=\"%.1f\">%s (mean "
                "%.1f %s)</text>\n",
                f.ml + 8, y, f.ml + 22, y, colours[m], f.ml + 26, y + 4, names[m], mean[m],
                kind->unit);
        }
        bf_buf_printf(b, "<text class=\"note\" x=\"%.1f\" y=\"%.1f\">%zu cells", f.ml + 8,
                      f.mt + 48, a[0].n);
        if (has_floor)
            bf_buf_printf(b, "; %.0f %% / %.0f %% at %.0f %s (no ray) off the axis",
                          100.0 * (double)at_min[0] / (double)a[0].n,
                          100.0 * (double)at_min[1] / (double)a[1].n, vmin, kind->unit);
        bf_buf_puts(b, "</text>\n");
        if (nclipped)
            bf_buf_printf(b,
                          "<text class=\"note clipped\" x=\"%.1f\" y=\"%.1f\">%zu value(s) "
                          "outside %.0f..%.0f %s drawn at the edge</text>\n",
                          f.ml + 8, f.mt + 64, nclipped, COLLECTOR_DBM_MIN, COLLECTOR_DBM_MAX,
                          kind->unit);
    }
    bf_buf_puts(b, "</svg>\n");
    free(a[0].v);
    free(a[1].v);
}

/* The histogram of stats.improvement_mean over the successes. */
static void plot_hist(bf_buf_t *b, const json_t *const *res, size_t n, bool *oom)
{
    vec_t a = {0};
    size_t nclipped = 0;
    for (size_t i = 0; i < n; i++) {
        double x = numv(get2(res[i], "stats", "improvement_mean"));
        bool out = false;
        if (!is_success(res[i]) || isnan(x))
            continue;
        vec_push(&a, collector_clip(x, -COLLECTOR_DB_SPAN, COLLECTOR_DB_SPAN, &out));
        nclipped += out;
    }
    frame_t f = {0, 1, 0, 1, 400, 300, 46, 12, 30, 38};
    svg_open(b, "plot-hist", &f, "Histogram of the mean improvement per scene");
    bf_buf_printf(b,
                  "<text class=\"title\" x=\"%.1f\" y=\"18\" text-anchor=\"middle\">"
                  "Improvement per scene</text>\n",
                  f.w / 2);
    if (a.oom) {
        *oom = true;
    } else if (a.n == 0) {
        svg_axes(b, &f, "dB", "scenes", "%.0f");
        svg_nodata(b, &f, "no improvement_mean of a successful scene");
    } else {
        qsort(a.v, a.n, sizeof *a.v, cmp_double);
        double lo = a.v[0], hi = a.v[a.n - 1];
        if (!(hi - lo > 1e-9)) {
            lo -= 0.5;
            hi += 0.5;
        }
        size_t nb = (size_t)ceil(sqrt((double)a.n)) + 2;
        nb = nb > 30 ? 30 : nb;
        size_t counts[30] = {0}, top = 1;
        for (size_t i = 0; i < a.n; i++) {
            double pos = (a.v[i] - lo) / (hi - lo) * (double)nb; /* in [0, nb]: clipped data */
            size_t k = pos > 0 ? (size_t)fmin(pos, (double)(nb - 1)) : 0;
            counts[k]++;
        }
        for (size_t k = 0; k < nb; k++)
            top = counts[k] > top ? counts[k] : top;
        f.x0 = lo;
        f.x1 = hi;
        f.y1 = (double)top * 1.1;
        svg_axes(b, &f, "mean improvement (dB)", "scenes", "%.0f");
        for (size_t k = 0; k < nb; k++) {
            if (!counts[k])
                continue;
            double x0 = px_x(&f, lo + (hi - lo) * (double)k / (double)nb);
            double x1 = px_x(&f, lo + (hi - lo) * (double)(k + 1) / (double)nb);
            double y = px_y(&f, (double)counts[k]);
            bf_buf_printf(
                b,
                "<rect class=\"bar\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" "
                "fill=\"" C_HIST "\"><title>%zu scene(s), %.2f to %.2f dB</title></rect>\n",
                x0 + 0.5, y, fmax(x1 - x0 - 1, 1), px_y(&f, 0) - y, counts[k],
                lo + (hi - lo) * (double)k / (double)nb,
                lo + (hi - lo) * (double)(k + 1) / (double)nb);
        }
        double m = vmean(&a), xm = px_x(&f, m);
        bf_buf_printf(
            b,
            "<line class=\"mean\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>"
            "<text class=\"legend\" x=\"%.1f\" y=\"%.1f\">mean %.2f dB, %zu scenes</text>\n",
            xm, f.mt, xm, f.h - f.mb, f.ml + 6, f.mt + 14, m, a.n);
        if (nclipped)
            bf_buf_printf(b,
                          "<text class=\"note clipped\" x=\"%.1f\" y=\"%.1f\">%zu value(s) "
                          "outside &#177;%.0f dB drawn at the edge</text>\n",
                          f.ml + 6, f.mt + 30, nclipped, COLLECTOR_DB_SPAN);
    }
    bf_buf_puts(b, "</svg>\n");
    free(a.v);
}

/* Mean elapsed time per "host/gpu_id" from the summary's time_per_gpu. */
static void plot_gpu(bf_buf_t *b, const json_t *summary)
{
    const json_t *tpg = json_object_get(summary, "time_per_gpu");
    size_t n = 0;
    double top = 0;
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)tpg, key, v)
    {
        double x = numv(v);
        if (!isnan(x)) {
            n++;
            x = collector_clip(x, 0, COLLECTOR_TIME_MAX_S, NULL);
            top = x > top ? x : top;
        }
    }
    frame_t f = {0, 1, 0, 1, 400, 300, 150, 16, 30, 38};
    if (n > 9)
        f.h = f.mt + f.mb + 24.0 * (double)n;
    svg_open(b, "plot-gpu", &f, "Mean time per GPU");
    bf_buf_printf(b,
                  "<text class=\"title\" x=\"%.1f\" y=\"18\" text-anchor=\"middle\">"
                  "Mean time per GPU</text>\n",
                  f.w / 2);
    if (n == 0) {
        svg_axes(b, &f, "seconds", NULL, NULL);
        svg_nodata(b, &f, "no timed success");
        bf_buf_puts(b, "</svg>\n");
        return;
    }
    f.x1 = top > 0 ? top * 1.15 : 1;
    svg_axes(b, &f, "mean time per scene (s)", NULL, NULL);
    double row = (f.h - f.mt - f.mb) / (double)n;
    size_t i = 0;
    json_object_foreach((json_t *)tpg, key, v)
    {
        double x = numv(v);
        if (isnan(x))
            continue;
        x = collector_clip(x, 0, COLLECTOR_TIME_MAX_S, NULL); /* the title says so */
        double y = f.mt + row * (double)i++;
        double bh = fmin(row * 0.7, 40);
        double yb = y + (row - bh) / 2;
        /* "host/-1" is a CPU worker's key in summary.json: say so */
        char label[300];
        size_t kl = strlen(key);
        if (kl >= 3 && !strcmp(key + kl - 3, "/-1"))
            snprintf(label, sizeof label, "%.*s/cpu", (int)(kl - 3 > 250 ? 250 : kl - 3), key);
        else
            snprintf(label, sizeof label, "%.290s", key);
        bf_buf_printf(b, "<g class=\"gpu\"><title>");
        put_esc(b, label);
        bf_buf_printf(b,
                      ": %.3f s</title><rect class=\"bar\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" "
                      "height=\"%.1f\" fill=\"" C_GPU "\"/>",
                      x, f.ml, yb, fmax(px_x(&f, x) - f.ml, 1), bh);
        bf_buf_printf(b, "<text class=\"tick\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">",
                      f.ml - 4, y + row / 2 + 4);
        put_esc_cut(b, label, LABEL_MAX);
        bf_buf_printf(b, "</text><text class=\"tick\" x=\"%.1f\" y=\"%.1f\">%.2f s</text></g>\n",
                      px_x(&f, x) + 3, y + row / 2 + 4, x);
    }
    bf_buf_puts(b, "</svg>\n");
}

/* ---- the page ----------------------------------------------------------------- */

static const char *const css =
    "body{font:14px/1.4 system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;color:#222;"
    "background:#fafafa}\n"
    "main{max-width:1260px;margin:0 auto;padding:10px}\n"
    "h1{font-size:20px;margin:4px 0 8px}h2{font-size:16px;margin:16px 0 6px}\n"
    ".facts{display:flex;flex-wrap:wrap;gap:6px 18px;margin:0 0 8px}\n"
    ".facts div{white-space:nowrap}.facts b{font-weight:600}\n"
    ".plots{display:grid;grid-template-columns:repeat(3,minmax(0,1fr));gap:10px}\n"
    "@media (max-width:900px){.plots{grid-template-columns:1fr}}\n"
    ".plot{width:100%;height:auto;background:#fff;border:1px solid #ddd;border-radius:4px}\n"
    ".plot .grid{stroke:#eee}.plot .frame{fill:none;stroke:#888}\n"
    ".plot text{font-size:11px;fill:#333}.plot .title{font-size:13px;font-weight:600}\n"
    ".plot .label{font-size:12px}.plot .nodata{fill:#999;font-size:13px}\n"
    ".plot .mean{stroke:#555;stroke-dasharray:4 3}.plot .note{fill:#777}\n"
    ".tablewrap{overflow-x:auto}\n"
    "table{border-collapse:collapse;background:#fff;font-size:13px}\n"
    "th,td{border:1px solid #ddd;padding:3px 6px;vertical-align:middle;text-align:right}\n"
    "th{background:#f0f0f0;position:sticky;top:0}\n"
    "td.s{text-align:left;min-width:5em;max-width:200px;overflow-wrap:anywhere}\n"
    "td.st{white-space:nowrap}\n"
    "td.reason{text-align:left;max-width:220px;white-space:pre-wrap;overflow-wrap:anywhere;"
    "color:#555}\n"
    ".status-success{color:#1a7f37}.status-failed{color:#b35900}"
    ".status-error,.status-cancelled,.status-other{color:#c62828}\n"
    "td.map{text-align:center}td.map img{image-rendering:pixelated;display:block;margin:auto}\n"
    ".range{font-size:11px;color:#666}"
    ".bound{font-size:11px;color:#b35900;border:1px solid #b35900;border-radius:3px;"
    "padding:0 3px}\n"
    ".cbar{display:inline-block;width:120px;height:10px;vertical-align:middle;"
    "background:linear-gradient(to right,#440154,#482475,#414487,#355f8d,#2a788e,#21918c,"
    "#22a884,#44bf70,#7ad151,#bddf26,#fde725)}\n"
    ".empty{display:inline-block;width:10px;height:10px;background:#c8c8c8;"
    "vertical-align:middle}\n";

static void fact(bf_buf_t *b, const char *name, const json_t *v, const char *fmt)
{
    bf_buf_printf(b, "<div>%s: <b>", name);
    if (json_is_string(v))
        put_esc(b, json_string_value(v));
    else if (json_is_integer(v))
        bf_buf_printf(b, "%lld", (long long)json_integer_value(v));
    else
        put_num(b, v, fmt);
    bf_buf_puts(b, "</b></div>\n");
}

static void header(bf_buf_t *b, const json_t *summary, size_t nres)
{
    const json_t *job = json_object_get(summary, "job");
    const char *name = json_string_value(json_object_get(job, "name"));
    bf_buf_puts(b, "<h1>Beamfleet report");
    if (name) {
        bf_buf_puts(b, ": ");
        put_esc(b, name);
    }
    bf_buf_puts(b, "</h1>\n<div class=\"facts\">\n");
    fact(b, "job", json_object_get(job, "id"), "%g");
    fact(b, "task", json_object_get(job, "task"), "%g");
    fact(b, "state", json_object_get(job, "state"), "%g");
    const json_t *c = json_object_get(summary, "counts");
    bf_buf_printf(b, "<div>scenes: <b>%zu</b></div>\n", nres);
    fact(b, "success", json_object_get(c, "success"), "%g");
    fact(b, "failed", json_object_get(c, "failed"), "%g");
    fact(b, "error", json_object_get(c, "error"), "%g");
    fact(b, "cancelled", json_object_get(c, "cancelled"), "%g");
    fact(b, "total time (s)", json_object_get(summary, "total_time_s"), "%.1f");
    fact(b, "mean improvement (dB)", get2(summary, "improvement", "mean"), "%.2f");
    fact(b, "median improvement (dB)", get2(summary, "improvement", "median"), "%.2f");
    const json_t *ag = json_object_get(summary, "aggregate");
    fact(b, "zone mean initial (dBm)", get2(ag, "initial", "mean"), "%.2f");
    fact(b, "zone mean optimized (dBm)", get2(ag, "optimized", "mean"), "%.2f");
    fact(b, "zone p10 initial (dBm)", get2(ag, "initial", "p10"), "%.2f");
    fact(b, "zone p10 optimized (dBm)", get2(ag, "optimized", "p10"), "%.2f");
    fact(b, "zone cells", json_object_get(summary, "zone_cells"), "%g");
    char now[32];
    bf_iso8601(bf_wall_ms(), now);
    bf_buf_printf(b, "<div>written: <b>%s</b></div>\n</div>\n", now);
}

static void put_img(bf_buf_t *b, const thumbs_t *t, int m, const char *scene)
{
    bf_buf_puts(b, "<img src=\"data:image/png;base64,");
    put_base64(b, t->png[m], t->len[m]);
    bf_buf_printf(b, "\" width=\"%u\" height=\"%u\" alt=\"%s map of ", t->dw, t->dh,
                  m ? "optimized" : "initial");
    put_esc(b, scene);
    bf_buf_puts(b, "\">");
}

/* One scene's row. thumbs may be NULL. */
static void row(bf_buf_t *b, const char *scene, const json_t *res, const thumbs_t *t)
{
    const char *st = json_string_value(json_object_get(res, "status"));
    const char *cls = !st                        ? "status-other"
                      : !strcmp(st, "success")   ? "status-success"
                      : !strcmp(st, "failed")    ? "status-failed"
                      : !strcmp(st, "error")     ? "status-error"
                      : !strcmp(st, "cancelled") ? "status-cancelled"
                                                 : "status-other";
    bf_buf_puts(b, "<tr class=\"scene\"><td class=\"s\">");
    put_esc(b, scene);
    bf_buf_printf(b, "</td><td class=\"s st %s\">", cls);
    if (st)
        put_esc(b, st);
    else
        bf_buf_puts(b, DASH);
    const char *reason = json_string_value(json_object_get(res, "reason"));
    bf_buf_puts(b, "</td><td class=\"reason\"");
    if (reason && strlen(reason) > REASON_MAX) {
        bf_buf_puts(b, " title=\"");
        put_esc(b, reason);
        bf_buf_puts(b, "\"");
    }
    bf_buf_puts(b, ">");
    if (reason && *reason)
        put_esc_cut(b, reason, REASON_MAX);
    else
        bf_buf_puts(b, reason ? "" : DASH);
    bf_buf_puts(b, "</td><td class=\"s\">");
    const char *host = json_string_value(json_object_get(res, "host"));
    const json_t *gpu = json_object_get(res, "gpu_id");
    if (host)
        put_esc(b, host);
    else
        bf_buf_puts(b, DASH);
    if (json_is_integer(gpu) && json_integer_value(gpu) >= 0)
        bf_buf_printf(b, " / gpu %lld", (long long)json_integer_value(gpu));
    else if (json_is_integer(gpu))
        bf_buf_puts(b, " / cpu");
    bf_buf_puts(b, "</td><td>");
    const json_t *att = json_object_get(res, "attempt");
    if (json_is_integer(att))
        bf_buf_printf(b, "%lld", (long long)json_integer_value(att));
    else
        bf_buf_puts(b, DASH);
    bf_buf_puts(b, "</td><td>");
    put_num(b, json_object_get(res, "elapsed_time"), "%.2f");
    for (int m = 0; m < 2; m++) { /* azimuth / tilt */
        const char *key = m ? "boresight_optimized" : "boresight_initial";
        bf_buf_puts(b, "</td><td class=\"st\">");
        put_num(b, get2(res, key, "azimuth_deg"), "%.1f");
        bf_buf_puts(b, " / ");
        put_num(b, get2(res, key, "tilt_deg"), "%.1f");
        const json_t *bound = json_object_get(res, "optimum_on_bound");
        if (m == 1 && json_array_size(bound) > 0) {
            /* not an optimum but a limit of the search (docs/protocol.md 13) */
            bf_buf_puts(b, " <span class=\"bound\" title=\"the optimum sits on the search bound: ");
            for (size_t i = 0; i < json_array_size(bound); i++) {
                const char *n = json_string_value(json_array_get(bound, i));
                if (i)
                    bf_buf_puts(b, ", ");
                put_esc(b, n ? n : "?");
            }
            bf_buf_puts(b, "\">on bound</span>");
        }
    }
    static const char *const cols[] = {"initial_mean", "optimized_mean", "improvement_mean"};
    for (size_t k = 0; k < BF_ARRAY_LEN(cols); k++) {
        bf_buf_puts(b, "</td><td>");
        put_num(b, get2(res, "stats", cols[k]), "%.2f");
    }
    for (int m = 0; m < 2; m++) {
        bf_buf_puts(b, "</td><td class=\"map\">");
        if (t) {
            put_img(b, t, m, scene);
            if (m == 1)
                bf_buf_printf(b, "<div class=\"range\">%.1f &#8230; %.1f dBm</div>", t->lo, t->hi);
        } else {
            bf_buf_puts(b, DASH);
        }
    }
    bf_buf_puts(b, "</td></tr>\n");
}

typedef struct {
    const char *scene;
    const json_t *res;
} entry_t;

static int cmp_entry(const void *a, const void *b)
{
    return strcmp(((const entry_t *)a)->scene, ((const entry_t *)b)->scene);
}

/* The results as (scene, result) sorted by scene; NULL with *n 0 when none. */
static entry_t *entries_of(const json_t *results, size_t *n, bool *oom)
{
    *n = 0;
    size_t cap = json_is_array(results)    ? json_array_size(results)
                 : json_is_object(results) ? json_object_size(results)
                                           : 0;
    if (cap == 0)
        return NULL;
    entry_t *e = calloc(cap, sizeof *e);
    if (!e) {
        *oom = true;
        return NULL;
    }
    if (json_is_array(results)) {
        size_t i;
        const json_t *v;
        json_array_foreach(results, i, v)
        {
            if (!json_is_object(v))
                continue;
            const char *s = json_string_value(json_object_get(v, "scene"));
            e[(*n)++] = (entry_t){s ? s : "", v};
        }
    } else {
        const char *k;
        const json_t *v;
        json_object_foreach((json_t *)results, k, v)
        {
            if (!json_is_object(v))
                continue;
            const char *s = json_string_value(json_object_get(v, "scene"));
            e[(*n)++] = (entry_t){s ? s : k, v};
        }
    }
    if (*n)
        qsort(e, *n, sizeof *e, cmp_entry);
    return e;
}

bf_err_t collector_html_write(const char *dir, const json_t *summary, const json_t *results,
                              char *err)
{
    if (!dir)
        return bf_fail(err, BF_EINVAL, "report.html: no directory");
    bool oom = false;
    size_t n = 0;
    entry_t *e = entries_of(results, &n, &oom);
    const json_t **res = calloc(n ? n : 1, sizeof *res);
    char *tdir = bf_asprintf("%s/thumbnails", dir);
    char *path = bf_asprintf("%s/report.html", dir);
    bf_buf_t b = {0};
    bf_err_t rc = BF_OK, first = BF_OK;
    char ferr[BF_ERRLEN] = "";
    bool tdir_made = false;
    if (oom || !res || !tdir || !path) {
        rc = bf_fail(err, BF_ENOMEM, "report.html: out of memory");
        goto done;
    }
    for (size_t i = 0; i < n; i++)
        res[i] = e[i].res;

    bf_buf_puts(&b, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
                    "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
                    "img-src data:; style-src 'unsafe-inline'\">\n"
                    "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\n"
                    "<meta name=\"generator\" content=\"beamfleet " BF_VERSION "\">\n<title>");
    const char *name = json_string_value(get2(summary, "job", "name"));
    bf_buf_puts(&b, "Beamfleet report");
    if (name) {
        bf_buf_puts(&b, " - ");
        put_esc(&b, name);
    }
    bf_buf_puts(&b, "</title>\n<style>\n");
    bf_buf_puts(&b, css);
    bf_buf_puts(&b, "</style></head>\n<body><main>\n");
    header(&b, summary, n);
    bf_buf_puts(&b, "<section class=\"plots\">\n");
    plot_cdf(&b, res, n, &cdf_power, &oom);
    /* SINR, where results carry it (several transmitters, a SINR objective) */
    for (size_t i = 0; i < n; i++)
        if (is_success(res[i]) && json_array_size(json_object_get(res[i], "sinr_optimized"))) {
            plot_cdf(&b, res, n, &cdf_sinr, &oom);
            break;
        }
    plot_hist(&b, res, n, &oom);
    plot_gpu(&b, summary);
    bf_buf_puts(&b,
                "</section>\n<h2>Scenes</h2>\n"
                "<p class=\"range\">Maps: received power at the measurement height, north up, "
                "colour scale per scene (both maps, 2nd to 98th percentile) "
                "<span class=\"cbar\"></span> low to high, <span class=\"empty\"></span> no "
                "ray.</p>\n"
                "<div class=\"tablewrap\"><table "
                "id=\"scenes\"><thead><tr><th>scene</th><th>status</th><th>reason</th>"
                "<th>host / gpu</th><th>attempt</th><th>elapsed (s)</th>"
                "<th>initial azimuth / tilt (&#176;)</th><th>optimized azimuth / tilt (&#176;)</th>"
                "<th>initial mean (dBm)</th><th>optimized mean (dBm)</th>"
                "<th>improvement (dB)</th><th>initial map</th><th>optimized map</th></tr></thead>"
                "\n<tbody>\n");
    for (size_t i = 0; i < n && !oom && !b.oom; i++) {
        thumbs_t t;
        char terr[BF_ERRLEN] = "";
        bf_err_t trc = thumbs_make(e[i].res, e[i].scene, &t, terr);
        if (trc == BF_ENOMEM) {
            oom = true;
            break;
        }
        if (trc != BF_OK && trc != BF_ENOENT)
            bf_warn("report.html: scene %s: no thumbnails: %s", e[i].scene, terr);
        if (trc == BF_OK) {
            if (!tdir_made) {
                bf_err_t mrc = bf_mkdir_p(tdir, terr);
                if (mrc != BF_OK && first == BF_OK) {
                    first = mrc;
                    bf_strlcpy(ferr, terr, sizeof ferr);
                }
                tdir_made = mrc == BF_OK;
            }
            for (int m = 0; m < 2 && tdir_made; m++) {
                bf_err_t wrc = thumb_file(tdir, e[i].scene, m ? "optimized" : "initial", t.png[m],
                                          t.len[m], terr);
                if (wrc != BF_OK && first == BF_OK) {
                    first = wrc;
                    bf_strlcpy(ferr, terr, sizeof ferr);
                }
            }
        }
        if (i < TABLE_MAX) /* a browser cannot show a million rows; results.csv can */
            row(&b, e[i].scene, e[i].res, trc == BF_OK ? &t : NULL);
        thumbs_clear(&t);
    }
    if (n > TABLE_MAX)
        bf_buf_printf(&b,
                      "<tr><td colspan=\"13\">%zu more scenes (the first %d by name are shown): "
                      "see results.csv and thumbnails/</td></tr>\n",
                      n - TABLE_MAX, TABLE_MAX);
    bf_buf_puts(&b, "</tbody></table></div>\n</main></body></html>\n");
    if (oom || b.oom) {
        rc = bf_fail(err, BF_ENOMEM, "report.html: out of memory");
        goto done;
    }
    rc = bf_write_atomic(path, b.p, b.len, err);
    if (rc == BF_OK && first != BF_OK)
        rc = bf_fail(err, first, "%s", ferr);
done:
    free(b.p);
    free(path);
    free(tdir);
    free(res);
    free(e);
    return rc;
}
