/*  collector/collector_html.h - report.html (DESIGN section 3): one
    self-contained page per job (inline CSS and SVG, PNG thumbnails as data:
    URIs, no script, no network) with the notebook's plots - the CDF of the
    zone power initial vs optimized, the histogram of the per-scene
    improvement, the mean time per GPU - and a per-scene table with the
    initial and optimized radio-map thumbnails that boresight results carry
    (the "thumbnails" field of the RESULT document, docs/protocol.md). The
    thumbnails are also written as PNG files to <dir>/thumbnails/. Every
    string that comes from a result is escaped: results are untrusted. */

#ifndef COLLECTOR_HTML_H_INCLUDED
#define COLLECTOR_HTML_H_INCLUDED

#include "../common/bf.h"
#include <jansson.h>

/* The largest thumbnail accepted per axis, in cells (workers send at most
   64; anything larger or inconsistent is shown as "—"). */
#define COLLECTOR_HTML_MAX_THUMB 256
/* The largest image collector_png_encode accepts per axis, in pixels. */
#define COLLECTOR_PNG_MAX_SIDE 16384

/* Writes dir/report.html atomically from summary (the document of
   collector_report_summary; may be NULL: no job header, no time-per-GPU
   plot) and results (a JSON array of result documents, or an object
   {scene: result}; elements that are not objects are skipped). Scenes are
   listed sorted by name. For each result with valid thumbnails it also
   writes dir/thumbnails/<scene>_initial.png and <scene>_optimized.png (one
   pixel per block, north up) atomically, leaving a file that already holds
   the same bytes alone (skipped, with a warning, for a scene name that fails
   bf_safe_name or would make a file name over 255 bytes). Missing fields are
   shown as "—", so exec results work too. A thumbnail file that cannot be
   written does not stop the page: report.html is still written and the
   first such error returned. Errors: BF_ENOMEM, BF_ENOSPC, BF_EIO, BF_EPERM
   (from the writes), with a one-line detail in err. */
bf_err_t collector_html_write(const char *dir, const json_t *summary, const json_t *results,
                              char *err) BF_MUST_CHECK;

/* Encodes width x height 8-bit pixels (channels 3 = RGB or 4 = RGBA, rows
   top to bottom, no padding) as a PNG in memory with libpng. On success
   *out (malloc'ed, the caller frees it) holds *len bytes. BF_EINVAL for a
   NULL pointer, channels other than 3 or 4, or a side of 0 or over
   COLLECTOR_PNG_MAX_SIDE; BF_ENOMEM; BF_EIO when libpng fails (err holds its
   message). *out is NULL on failure. */
bf_err_t collector_png_encode(const unsigned char *pixels, unsigned width, unsigned height,
                              unsigned channels, unsigned char **out, size_t *len,
                              char *err) BF_MUST_CHECK;

/* The colormap of the thumbnails (viridis): t in [0, 1] (clamped; NaN gives
   the colour of an empty cell, light grey 200, 200, 200) to RGB. */
void collector_html_colormap(double t, unsigned char rgb[3]);

/* Renders map ("initial" or "optimized") of a thumbnails object {nx, ny, x0,
   y0, dx, dy, initial, optimized} as RGB pixels with the colormap over
   [lo, hi] dBm, y increasing upwards (the last row of the map is the top
   row of the image), each cell scale x scale pixels (scale 1..16). On
   success *rgb (malloc'ed) holds *w x *h x 3 bytes. BF_EINVAL (err says
   which field) when the object is malformed: nx or ny not an integer in
   1..COLLECTOR_HTML_MAX_THUMB, the map not an array of nx*ny numbers or
   nulls, lo >= hi or not finite; BF_ENOMEM. */
bf_err_t collector_html_thumbnail(const json_t *thumbnails, const char *map, double lo, double hi,
                                  unsigned scale, unsigned char **rgb, unsigned *w, unsigned *h,
                                  char *err) BF_MUST_CHECK;

/* s with & < > " ' replaced by entities, safe in HTML text and in quoted
   attributes (also inside inline SVG); NULL gives "". malloc'ed; NULL on
   allocation failure. */
char *collector_html_escape(const char *s);

/* The range of powers every report writer trusts (here and in
   collector_report.c, which builds on this file), in dBm: anything a radio
   map can hold (the solver's floor for cells no ray reached is -300 dBm; a
   transmitter of 100 dBm = 10 MW is beyond any base station). A power
   outside it (a dark zone written as -1e300, 1e16, 2^63) is clipped to the
   nearest edge in plots and statistics and counted as clipped; it is never
   used to size a loop. Improvements (dB) are clipped to the span of the
   range, times (s) to [0, COLLECTOR_TIME_MAX_S]. */
#define COLLECTOR_DBM_MIN    (-400.0)
#define COLLECTOR_DBM_MAX    100.0
#define COLLECTOR_DB_SPAN    (COLLECTOR_DBM_MAX - COLLECTOR_DBM_MIN)
#define COLLECTOR_TIME_MAX_S 1e7 /* 116 days */

/* x clipped to [lo, hi]; *clipped (may be NULL) is set when x was outside.
   x must be finite (JSON carries nothing else). */
double collector_clip(double x, double lo, double hi, bool *clipped);

#endif
