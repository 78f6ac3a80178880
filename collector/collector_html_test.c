/*  collector/collector_html_test.c - report.html as the collector writes it:
    the PNG encoder against libpng's own decoder (exact pixels, RGB and
    RGBA), the colormap's ends, a thumbnail's orientation (north up) and its
    empty cells, malformed thumbnails refused field by field, and whole
    reports for synthetic boresight and exec results: the plots present or
    marked "no data", one table row per scene, thumbnails embedded and
    written as files that decode, a second write that leaves identical
    thumbnail files alone, and hostile scene names, reasons, hosts and job
    names that stay text (no element, no attribute, no script gets through). */

#include "collector_html.h"
#include "collector_testkit.h"

#include <dirent.h>
#include <math.h>
#include <png.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../common/bf_check.h"

#define EVIL_SCENE  "<script>alert(1)</script>"
#define EVIL_REASON "<img src=x onerror=alert(2)>\"' & more"
#define EVIL_HOST   "h\"><svg onload=alert(3)>"
#define EVIL_JOB    "</title><script>alert(4)</script>"

/* ---- reading back ------------------------------------------------------------ */

/* Decodes a PNG with libpng into RGB (or RGBA); NULL when it is not one. */
static unsigned char *png_decode(const void *data, size_t len, bool rgba, unsigned *w, unsigned *h)
{
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_memory(&img, data, len))
        return NULL;
    img.format = rgba ? PNG_FORMAT_RGBA : PNG_FORMAT_RGB;
    unsigned char *px = malloc(PNG_IMAGE_SIZE(img));
    if (!px || !png_image_finish_read(&img, NULL, px, 0, NULL)) {
        png_image_free(&img);
        free(px);
        return NULL;
    }
    *w = img.width;
    *h = img.height;
    return px;
}

static size_t count_of(const char *hay, const char *needle)
{
    size_t n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

static bool contains_ci(const char *hay, const char *needle)
{
    size_t n = strlen(needle);
    for (const char *p = hay; *p; p++)
        if (!strncasecmp(p, needle, n))
            return true;
    return false;
}

static int b64val(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    return c == '+' ? 62 : c == '/' ? 63 : -1;
}

/* Decodes the base64 text at s up to the first character outside the
   alphabet (and '='); malloc'ed, length in *len. */
static unsigned char *b64decode(const char *s, size_t *len)
{
    size_t n = 0;
    while (b64val(s[n]) >= 0 || s[n] == '=')
        n++;
    unsigned char *out = malloc(n / 4 * 3 + 3);
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; out && i < n && s[i] != '='; i++) {
        acc = (acc << 6) | (uint32_t)b64val(s[i]);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    *len = o;
    return out;
}

/* ---- synthetic results -------------------------------------------------------- */

/* A thumbnails object nx x ny whose value at (ix, iy) is base + ix + 10 iy
   dBm, with cell (0, ny-1) empty. */
static json_t *thumbs(int nx, int ny, double base)
{
    json_t *a = json_array(), *b = json_array();
    for (int iy = 0; iy < ny; iy++)
        for (int ix = 0; ix < nx; ix++) {
            bool empty = ix == 0 && iy == ny - 1;
            json_array_append_new(a, empty ? json_null() : json_real(base + ix + 10 * iy));
            json_array_append_new(b, empty ? json_null() : json_real(base + 5 + ix + 10 * iy));
        }
    return json_pack("{s:i, s:i, s:f, s:f, s:f, s:f, s:o, s:o}", "nx", nx, "ny", ny, "x0", -50.0,
                     "y0", 0.0, "dx", 10.0, "dy", 10.0, "initial", a, "optimized", b);
}

static json_t *boresight_result(const char *scene, const char *status, const char *reason,
                                const char *host, int gpu, double shift)
{
    json_t *z0 = json_array(), *z1 = json_array();
    for (int i = 0; i < 50; i++) {
        json_array_append_new(z0, json_real(-120 + i + shift));
        json_array_append_new(z1, json_real(-115 + i + shift));
    }
    return json_pack("{s:s, s:s, s:s, s:s, s:i, s:i, s:f, s:o, s:o, "
                     "s:{s:i, s:f, s:f, s:f}, s:{s:f, s:f}, s:{s:f, s:f}, s:o, s:s}",
                     "scene", scene, "status", status, "reason", reason, "host", host, "gpu_id",
                     gpu, "attempt", 1, "elapsed_time", 2.5 + shift, "zone_power_initial", z0,
                     "zone_power_optimized", z1, "stats", "zone_cells", 50, "initial_mean",
                     -95.5 + shift, "optimized_mean", -90.5 + shift, "improvement_mean",
                     5.0 + shift, "boresight_initial", "azimuth_deg", 0.0, "tilt_deg", 0.0,
                     "boresight_optimized", "azimuth_deg", 135.0, "tilt_deg", 7.5, "thumbnails",
                     thumbs(12, 8, -110 + shift), "task_id", scene);
}

static json_t *summary_of(const char *job_name, const char *gpu_key)
{
    return json_pack("{s:{s:s, s:s, s:s, s:s}, s:{s:i, s:i, s:i, s:i, s:i}, s:f, "
                     "s:{s:f, s:f}, s:{s:f, s:f}, s:i}",
                     "job", "name", job_name, "id", "0123456789ab", "task", "boresight", "state",
                     "done", "counts", "success", 3, "failed", 1, "error", 1, "cancelled", 0,
                     "total", 5, "total_time_s", 12.5, "improvement", "mean", 6.0, "median", 6.0,
                     "time_per_gpu", "node1/0", 3.5, gpu_key, 4.5, "zone_cells", 150);
}

/* ---- the tests ---------------------------------------------------------------- */

static void test_png(void)
{
    unsigned char rgb[5 * 3 * 3], rgba[2 * 2 * 4];
    for (size_t i = 0; i < sizeof rgb; i++)
        rgb[i] = (unsigned char)(i * 17 + 3);
    for (size_t i = 0; i < sizeof rgba; i++)
        rgba[i] = (unsigned char)(255 - i * 11);
    unsigned char *png = NULL;
    size_t len = 0;
    char err[BF_ERRLEN] = "";
    CHECK(collector_png_encode(rgb, 5, 3, 3, &png, &len, err) == BF_OK);
    CHECK(png && len > 8 && !memcmp(png, "\x89PNG\r\n\x1a\n", 8));
    unsigned w = 0, h = 0;
    unsigned char *back = png ? png_decode(png, len, false, &w, &h) : NULL;
    CHECK(back && w == 5 && h == 3 && !memcmp(back, rgb, sizeof rgb));
    free(back);
    free(png);
    CHECK(collector_png_encode(rgba, 2, 2, 4, &png, &len, err) == BF_OK);
    back = png ? png_decode(png, len, true, &w, &h) : NULL;
    CHECK(back && w == 2 && h == 2 && !memcmp(back, rgba, sizeof rgba));
    free(back);
    free(png);
    /* bad arguments: the exact error, nothing allocated */
    png = (unsigned char *)1;
    CHECK(collector_png_encode(rgb, 0, 3, 3, &png, &len, err) == BF_EINVAL && png == NULL);
    CHECK(collector_png_encode(rgb, 5, 3, 2, &png, &len, err) == BF_EINVAL && strstr(err, "png"));
    CHECK(collector_png_encode(rgb, COLLECTOR_PNG_MAX_SIDE + 1, 1, 3, &png, &len, err) ==
          BF_EINVAL);
    CHECK(collector_png_encode(NULL, 1, 1, 3, &png, &len, err) == BF_EINVAL);
}

static void test_colormap_and_thumbnail(void)
{
    unsigned char c[3];
    collector_html_colormap(0, c);
    CHECK(c[0] == 68 && c[1] == 1 && c[2] == 84);
    collector_html_colormap(1, c);
    CHECK(c[0] == 253 && c[1] == 231 && c[2] == 37);
    collector_html_colormap(7, c); /* clamped */
    CHECK(c[0] == 253 && c[1] == 231 && c[2] == 37);
    collector_html_colormap(NAN, c);
    CHECK(c[0] == 200 && c[1] == 200 && c[2] == 200);

    /* 3 x 2 cells, scale 2: values ix + 10 iy over [0, 12]; cell (0, 1) empty */
    json_t *th = thumbs(3, 2, 0);
    unsigned char *px = NULL;
    unsigned w = 0, h = 0;
    char err[BF_ERRLEN] = "";
    CHECK(collector_html_thumbnail(th, "initial", 0, 12, 2, &px, &w, &h, err) == BF_OK);
    CHECK(px && w == 6 && h == 4);
    if (px && w == 6 && h == 4) {
        /* the top image rows are the last map row (y increasing upwards) */
        unsigned char want[3];
        const unsigned char *p = &px[(0 * 6 + 0) * 3]; /* top-left: cell (0, 1), empty */
        CHECK(p[0] == 200 && p[1] == 200 && p[2] == 200);
        collector_html_colormap(12.0 / 12.0, want); /* top-right: cell (2, 1) = 12 */
        p = &px[(1 * 6 + 5) * 3];
        CHECK(!memcmp(p, want, 3));
        collector_html_colormap(0.0, want); /* bottom-left: cell (0, 0) = 0 */
        p = &px[(3 * 6 + 1) * 3];
        CHECK(!memcmp(p, want, 3));
        collector_html_colormap(2.0 / 12.0, want); /* bottom-right: cell (2, 0) = 2 */
        p = &px[(2 * 6 + 4) * 3];
        CHECK(!memcmp(p, want, 3));
    }
    free(px);
    /* malformed: each refused with the field named */
    CHECK(collector_html_thumbnail(th, "nope", 0, 12, 2, &px, &w, &h, err) == BF_EINVAL &&
          strstr(err, "thumbnails.nope") && px == NULL);
    CHECK(collector_html_thumbnail(th, "initial", 5, 5, 2, &px, &w, &h, err) == BF_EINVAL);
    CHECK(collector_html_thumbnail(th, "initial", 0, 12, 0, &px, &w, &h, err) == BF_EINVAL);
    json_object_set_new(th, "nx", json_integer(COLLECTOR_HTML_MAX_THUMB + 1));
    CHECK(collector_html_thumbnail(th, "initial", 0, 12, 1, &px, &w, &h, err) == BF_EINVAL &&
          strstr(err, "thumbnails.nx"));
    json_object_set_new(th, "nx", json_integer(4)); /* 4 x 2 != 6 values */
    CHECK(collector_html_thumbnail(th, "initial", 0, 12, 1, &px, &w, &h, err) == BF_EINVAL &&
          strstr(err, "thumbnails.initial"));
    json_object_set_new(th, "nx", json_integer(3));
    json_array_set_new(json_object_get(th, "initial"), 2, json_string("-80"));
    CHECK(collector_html_thumbnail(th, "initial", 0, 12, 1, &px, &w, &h, err) == BF_EINVAL &&
          strstr(err, "thumbnails.initial[2]"));
    json_t *str = json_string("x");
    CHECK(collector_html_thumbnail(str, "initial", 0, 12, 1, &px, &w, &h, err) == BF_EINVAL);
    json_decref(str);
    json_decref(th);
}

static void test_escape(void)
{
    char *s = collector_html_escape("<a href='x'>&\"ok\xc3\xa9");
    CHECK(s && !strcmp(s, "&lt;a href=&#39;x&#39;&gt;&amp;&quot;ok\xc3\xa9"));
    free(s);
    s = collector_html_escape(NULL);
    CHECK(s && !strcmp(s, ""));
    free(s);
}

/* The checks every report must pass whatever its results. */
static void check_page(const char *html)
{
    CHECK(!strncmp(html, "<!DOCTYPE html>", 15));
    CHECK(strstr(html, "</html>\n"));
    CHECK(!contains_ci(html, "<script")); /* the page has no script of its own */
    /* every element that could carry a handler is one of ours */
    CHECK(count_of(html, "<img ") == count_of(html, "<img src=\"data:image/png;base64,"));
    CHECK(count_of(html, "<svg ") == count_of(html, "<svg id=\"plot-"));
    /* self-contained: the only URL is the SVG namespace */
    CHECKF(count_of(html, "http") == count_of(html, "xmlns=\"http://www.w3.org/2000/svg\"") +
                                         count_of(html, "http-equiv"),
           "a URL in the page");
    CHECK(strstr(html, "default-src 'none'"));
}

/* Results with SINR (several transmitters) add its CDF after the power's. */
static void test_sinr_report(const char *dir)
{
    json_t *results = json_array();
    json_t *a = boresight_result("sectors", "success", "", "node1", 0, 2.0);
    json_object_set_new(a, "sinr_initial", json_pack("[f, f, f]", -3.0, 1.0, 4.0));
    json_object_set_new(a, "sinr_optimized", json_pack("[f, f, f]", 10.0, 12.0, 20.0));
    json_array_append_new(results, a);
    json_t *summary = summary_of("sinr", "1/1");
    char err[BF_ERRLEN] = "";
    CHECKF(collector_html_write(dir, summary, results, err) == BF_OK, "%s", err);
    char *html = slurp(dir, "report.html");
    CHECK(html);
    if (html) {
        check_page(html);
        CHECK(strstr(html, "<svg id=\"plot-cdf\"") && strstr(html, "<svg id=\"plot-sinr-cdf\""));
        CHECK(strstr(html, "Zone SINR CDF") && strstr(html, "optimized (mean 14.0 dB)") &&
              strstr(html, "initial (mean 0.7 dB)"));
        CHECK(count_of(html, "class=\"cdf-optimized\"") == 2);
    }
    free(html);
    json_decref(summary);
    json_decref(results);
}

static void test_boresight_report(const char *dir)
{
    json_t *results = json_array();
    json_t *alpha = boresight_result("alpha", "success", "", "node1", 0, 0.0);
    for (size_t i = 0; i < 10; i++) /* cells no ray reached: at floor_dbm */
        json_array_set_new(json_object_get(alpha, "zone_power_initial"), i, json_real(-300));
    json_array_append_new(results, alpha);
    json_t *bravo = boresight_result("bravo", "success", "", EVIL_HOST, 1, 2.0);
    /* an optimum on the search bound is marked in the table */
    json_object_set_new(bravo, "optimum_on_bound", json_pack("[s]", "tilt_max"));
    json_array_append_new(results, bravo);
    json_array_append_new(results, boresight_result(EVIL_SCENE, "success", "", "node1", 0, 4.0));
    json_array_append_new(results,
                          boresight_result("delta", "failed", EVIL_REASON, "node1", 0, 1.0));
    /* an error result (no stats, no maps) and a result with broken thumbnails */
    json_array_append_new(results, json_pack("{s:s, s:s, s:s, s:i}", "scene", "echo", "status",
                                             "error", "reason", "failed 3 times", "attempt", 3));
    json_t *broken = boresight_result("foxtrot", "success", "", "node1", 0, 3.0);
    json_object_set_new(json_object_get(broken, "thumbnails"), "ny", json_string("8"));
    json_array_append_new(results, broken);
    json_array_append_new(results, json_string("not a result")); /* skipped */
    json_t *summary = summary_of(EVIL_JOB, "<b>evil</b>/3");

    char err[BF_ERRLEN] = "";
    CHECKF(collector_html_write(dir, summary, results, err) == BF_OK, "%s", err);
    char *html = slurp(dir, "report.html");
    CHECK(html);
    if (!html)
        goto done;
    check_page(html);
    /* plots */
    CHECK(strstr(html, "<svg id=\"plot-cdf\""));
    CHECK(count_of(html, "class=\"cdf-initial\"") == 1 &&
          count_of(html, "class=\"cdf-optimized\"") == 1);
    CHECK(strstr(html, "<svg id=\"plot-hist\"") && strstr(html, "<svg id=\"plot-gpu\""));
    CHECK(count_of(html, "<g class=\"gpu\">") == 2);
    CHECK(count_of(html, "no data:") == 0);
    /* the improvements 5, 7, 9, 8 of the four successes: the mean line */
    CHECK(strstr(html, "mean 7.25 dB, 4 scenes"));
    /* the CDF: 4 successes x 50 cells */
    CHECK(strstr(html, ">200 cells; 5 % / 0 % at -300 dBm (no ray) off the axis<"));
    CHECK(!strstr(html, "plot-sinr-cdf")); /* no result carries SINR */
    /* the table: six rows, sorted by scene ("<" sorts first) */
    CHECK(count_of(html, "<tr class=\"scene\">") == 6);
    CHECK(count_of(html, "<span class=\"bound\" title=\"the optimum sits on the search bound: "
                         "tilt_max\">on bound</span>") == 1);
    char *a = strstr(html, "&lt;script&gt;alert(1)&lt;/script&gt;");
    char *b = strstr(html, ">alpha<");
    CHECK(a && b && a < b);
    CHECK(strstr(html, "&lt;img src=x onerror=alert(2)&gt;&quot;&#39; &amp; more"));
    CHECK(strstr(html, "h&quot;&gt;&lt;svg onload=alert(3)&gt;"));
    CHECK(strstr(html, "&lt;/title&gt;&lt;script&gt;alert(4)&lt;/script&gt;"));
    CHECK(strstr(html, "&lt;b&gt;evil&lt;/b&gt;/3"));
    CHECK(!strstr(html, "<b>evil"));
    CHECK(!strstr(html, EVIL_SCENE) && !strstr(html, EVIL_REASON) && !strstr(html, EVIL_HOST) &&
          !strstr(html, EVIL_JOB));
    CHECK(strstr(html, ">0.0 / 0.0<") && strstr(html, ">135.0 / 7.5<") && strstr(html, ">-95.50<"));
    CHECK(strstr(html, "node1 / gpu 0"));
    /* thumbnails: 4 scenes with good ones (not echo, not foxtrot) */
    CHECK(count_of(html, "data:image/png;base64,") == 8);
    /* shown at min(128 / 12, 8) = 8 CSS pixels per cell */
    CHECK(count_of(html, "width=\"96\" height=\"64\"") == 8);
    const char *img = strstr(html, "data:image/png;base64,");
    if (img) {
        size_t len = 0;
        unsigned char *png = b64decode(img + strlen("data:image/png;base64,"), &len);
        unsigned w = 0, h = 0;
        unsigned char *px = png ? png_decode(png, len, false, &w, &h) : NULL;
        /* one pixel per cell: 12 x 8 */
        CHECKF(px && w == 12 && h == 8, "%u x %u", w, h);
        if (px) {
            unsigned char c[3];
            collector_html_colormap(NAN, c);
            CHECK(!memcmp(px, c, 3)); /* top-left cell is empty */
        }
        free(px);
        free(png);
    }
    /* missing fields are dashes: the error row */
    CHECK(count_of(html, "\xe2\x80\x94") >= 10);
    free(html);
    /* files: the safe scene names only (EVIL_SCENE holds a '/') */
    char tdir[700];
    snprintf(tdir, sizeof tdir, "%s/thumbnails", dir);
    CHECK(count_files(tdir, "") == 2 + 6); /* ".", ".." and 3 scenes x 2 */
    const char *names[] = {"alpha_initial.png",   "alpha_optimized.png", "bravo_initial.png",
                           "bravo_optimized.png", "delta_initial.png",   "delta_optimized.png"};
    for (size_t i = 0; i < BF_ARRAY_LEN(names); i++) {
        char path[800];
        snprintf(path, sizeof path, "%s/%s", tdir, names[i]);
        char *data = NULL;
        size_t len = 0;
        unsigned w = 0, h = 0;
        unsigned char *px = NULL;
        CHECK(bf_read_file(path, 1 << 20, &data, &len, NULL) == BF_OK &&
              (px = png_decode(data, len, false, &w, &h)) && w == 12 && h == 8);
        free(px);
        free(data);
    }
    /* written again: identical thumbnails are not rewritten (same inode) */
    char path[800];
    snprintf(path, sizeof path, "%s/alpha_initial.png", tdir);
    struct stat st1, st2;
    CHECK(stat(path, &st1) == 0);
    CHECKF(collector_html_write(dir, summary, results, err) == BF_OK, "%s", err);
    CHECK(stat(path, &st2) == 0 && st1.st_ino == st2.st_ino);
done:
    json_decref(results);
    json_decref(summary);
}

/* Exec results as {scene: result}: no maps, no stats, only what is there. */
static void test_exec_report(const char *dir)
{
    json_t *results = json_pack(
        "{s:{s:s, s:s, s:s, s:i, s:i, s:f}, s:{s:s, s:s, s:s, s:i, s:i, s:f}, s:{s:s}}", "s00",
        "scene", "s00", "status", "success", "host", "node2", "gpu_id", -1, "attempt", 1,
        "elapsed_time", 0.25, "s01", "scene", "s01", "status", "success", "host", "node2", "gpu_id",
        -1, "attempt", 2, "elapsed_time", 0.75, "s02", "status", "weird");
    json_t *summary = json_pack("{s:{s:s, s:s}, s:{s:f}}", "job", "name", "execs", "task", "exec",
                                "time_per_gpu", "node2/-1", 0.5);
    char err[BF_ERRLEN] = "";
    CHECKF(collector_html_write(dir, summary, results, err) == BF_OK, "%s", err);
    char *html = slurp(dir, "report.html");
    CHECK(html);
    if (html) {
        check_page(html);
        CHECK(count_of(html, "<tr class=\"scene\">") == 3);
        CHECK(count_of(html, "no data:") == 2); /* the CDF and the histogram */
        CHECK(count_of(html, "<g class=\"gpu\">") == 1 && strstr(html, "node2/cpu: 0.500 s"));
        CHECK(!strstr(html, "data:image/png"));
        CHECK(strstr(html, "node2 / cpu") && strstr(html, ">0.75<"));
        CHECK(strstr(html, "status-other\">weird<"));
        free(html);
    }
    CHECK(count_files(dir, "thumbnails") == 0);
    /* no summary and no results at all: still a page */
    CHECKF(collector_html_write(dir, NULL, NULL, err) == BF_OK, "%s", err);
    html = slurp(dir, "report.html");
    CHECK(html && count_of(html, "no data:") == 3 && count_of(html, "<tr class=\"scene\">") == 0);
    free(html);
    json_decref(results);
    json_decref(summary);
}

static void test_write_errors(const char *dir)
{
    /* a directory that is a file: the error names the path */
    char path[512];
    snprintf(path, sizeof path, "%s/plain", dir);
    char err[BF_ERRLEN] = "";
    CHECK(bf_write_atomic(path, "x", 1, err) == BF_OK);
    bf_err_t rc = collector_html_write(path, NULL, NULL, err);
    CHECKF(rc != BF_OK && strstr(err, "plain"), "%d %s", rc, err);
    CHECK(collector_html_write(NULL, NULL, NULL, err) == BF_EINVAL);
}

/* ---- hostile numbers ----------------------------------------------- */

/* A success whose zone powers are n copies of init / opt (or the JSON texts
   of zinit / zopt when given), improvement imp and time secs. */
static json_t *odd_result(const char *scene, const char *zinit, const char *zopt, double init,
                          double opt, size_t n, double imp, double secs)
{
    json_t *z0 = zinit ? json_loads(zinit, 0, NULL) : json_array();
    json_t *z1 = zopt ? json_loads(zopt, 0, NULL) : json_array();
    for (size_t i = 0; !zinit && i < n; i++)
        json_array_append_new(z0, json_real(init));
    for (size_t i = 0; !zopt && i < n; i++)
        json_array_append_new(z1, json_real(opt));
    return json_pack("{s:s, s:s, s:s, s:i, s:i, s:f, s:o, s:o, s:{s:f}, s:s}", "scene", scene,
                     "status", "success", "host", "h", "gpu_id", 0, "attempt", 1, "elapsed_time",
                     secs, "zone_power_initial", z0, "zone_power_optimized", z1, "stats",
                     "improvement_mean", imp, "task_id", scene);
}

typedef struct {
    const char *dir;
    json_t *summary, *results;
} html_job_t;

static int write_page(void *arg)
{
    html_job_t *j = arg;
    char err[BF_ERRLEN] = "";
    bf_err_t rc = collector_html_write(j->dir, j->summary, j->results, err);
    if (rc != BF_OK)
        fprintf(stderr, "  collector_html_write: %s\n", err);
    return rc == BF_OK ? 0 : 1;
}

/* Each case alone in its own report: it finishes within the deadline with
   a valid page, and says where it clipped. */
static void hostile_case(const char *dir, const char *name, json_t *results, json_t *summary,
                         const char *expect)
{
    char sub[600];
    snprintf(sub, sizeof sub, "%s/%s", dir, name);
    CHECKF(results && json_array_size(results), "case %s: no results built", name);
    CHECK(bf_mkdir_p(sub, NULL) == BF_OK);
    html_job_t j = {sub, summary, results};
    CHECKF(finishes_within(20, write_page, &j), "case %s", name);
    char *html = slurp(sub, "report.html");
    CHECKF(html, "case %s: no report.html", name);
    if (html) {
        check_page(html);
        CHECKF(!expect || strstr(html, expect), "case %s: no \"%s\"", name, expect);
        CHECKF(!strstr(html, "nan") && !strstr(html, "inf\""), "case %s: a NaN or inf drawn", name);
    }
    free(html);
    json_decref(results);
    json_decref(summary);
}

static void test_hostile_numbers(const char *dir)
{
    /* a dark zone written as -1e300: the axis-tick loop spun forever */
    json_t *r = json_pack("[o]", odd_result("dark", NULL, NULL, -1e300, -90, 50, 1e300, 2));
    hostile_case(dir, "dark", r, NULL, "outside -400..100 dBm drawn at the edge");
    /* huge and narrow: t += step no longer changed t */
    r = json_pack("[o]", odd_result("narrow", "[1e16, 10000000000000002]",
                                    "[1e16, 10000000000000002]", 0, 0, 0, 1e16, 1e16));
    hostile_case(dir, "narrow", r, NULL, "drawn at the edge");
    /* the ends of double, -0.0, 2^63 - 1 and -2^63 as JSON integers */
    r = json_pack("[o, o]",
                  odd_result("ends", "[1e308, -1e308, -0.0, 9223372036854775807]",
                             "[-9223372036854775808, 1.7976931348623157e308, 5e-324]", 0, 0, 0,
                             -1e308, 1e308),
                  odd_result("normal", NULL, NULL, -100, -95, 20, 5, 1));
    json_t *s = json_pack("{s:{s:f, s:f, s:I}}", "time_per_gpu", "h/0", 1e308, "h/1", 1e16, "h/2",
                          (json_int_t)INT64_MAX);
    hostile_case(dir, "ends", r, s, "outside &#177;500 dB drawn at the edge");
    /* strings, objects and nulls where numbers belong */
    r = json_loads("[{\"scene\": \"strings\", \"status\": \"success\", \"zone_power_initial\": "
                   "[\"-80\", {}, null, [], true], \"zone_power_optimized\": \"-70\", \"stats\": "
                   "{\"improvement_mean\": \"5\"}, \"elapsed_time\": \"1\", \"attempt\": \"x\", "
                   "\"gpu_id\": 1e300, \"thumbnails\": {\"nx\": 9223372036854775807, \"ny\": -1, "
                   "\"initial\": \"x\"}}, [1, 2], \"text\", null]",
                   0, NULL);
    s = json_pack("{s:s, s:[i], s:{s:s}}", "job", "not an object", "counts", 1, "time_per_gpu",
                  "h/0", "fast");
    CHECK(r && s);
    hostile_case(dir, "strings", r, s, NULL);
    /* a million cells, all far out of range */
    r = json_pack("[o]", odd_result("million", NULL, NULL, -1e300, 1e16, 1000000, 0, 1));
    hostile_case(dir, "million", r, NULL, "2000000 value(s) outside");
    /* thumbnails that are huge and narrow */
    json_t *res = odd_result("thumbs", NULL, NULL, -100, -90, 10, 3, 1);
    json_t *th = thumbs(4, 4, 1e16);
    json_object_set_new(res, "thumbnails", th);
    r = json_pack("[o]", res);
    hostile_case(dir, "thumbs", r, NULL, "data:image/png");
}

int main(void)
{
    bf_log_set_level(BF_LOG_ERROR);
    char dir[] = "/tmp/collector-html-test-XXXXXX";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    char d1[600], d2[600];
    snprintf(d1, sizeof d1, "%s/boresight", dir);
    snprintf(d2, sizeof d2, "%s/exec", dir);
    if (bf_mkdir_p(d1, NULL) != BF_OK || bf_mkdir_p(d2, NULL) != BF_OK)
        return 1;
    test_png();
    test_colormap_and_thumbnail();
    test_escape();
    test_boresight_report(d1);
    test_exec_report(d2);
    test_sinr_report(d2);
    test_write_errors(dir);
    test_hostile_numbers(dir);
    if (!failures) {
        char cmd[700];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", dir);
    } else {
        fprintf(stderr, "reports kept in %s\n", dir);
    }
    printf("%s: %d failure(s)\n", failures ? "FAIL" : "PASS", failures);
    return failures ? 1 : 0;
}
