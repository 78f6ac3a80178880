/*  common/bf_yaml.c - builds the small position-aware YAML tree of bf_yaml.h
    from libyaml's event stream and offers the typed, bounds-checked readers
    that every configuration file (job, fleet, scene.yaml) goes through.

    Input is bounded (1 MiB, nesting depth 64) and anchors, aliases, tags and
    multi-document streams are refused, so that every value in a tree stands
    at exactly one place in the file and every error can name it as
    file:line:column. */

#include "bf_yaml.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

#define YAML_MAX_BYTES (1u << 20)
#define YAML_MAX_DEPTH 64

/* ---- tree construction -------------------------------------------------- */

static bf_yaml_node_t *node_new(bf_yaml_kind_t kind, const char *file, const yaml_mark_t *mark)
{
    bf_yaml_node_t *n = calloc(1, sizeof *n);
    if (!n)
        return NULL;
    n->kind = kind;
    n->file = file;
    n->line = (int)mark->line + 1;
    n->column = (int)mark->column + 1;
    return n;
}

static void node_free(bf_yaml_node_t *n)
{
    if (!n)
        return;
    for (size_t i = 0; i < n->count; i++)
        node_free(n->items[i]);
    if (n->keys) {
        /* A MAP may hold one key more than count while its value is being
           built; keys past count are freed by the builder. */
        for (size_t i = 0; i < n->count; i++)
            free(n->keys[i]);
    }
    free(n->keys);
    free(n->key_lines);
    free(n->key_columns);
    free(n->items);
    free(n->value);
    free(n);
}

void bf_yaml_destroy(bf_yaml_node_t **root)
{
    if (!root || !*root)
        return;
    char *file = (char *)(*root)->file;
    node_free(*root);
    free(file);
    *root = NULL;
}

/* One open collection on the builder's stack; for a MAP, pending_key holds
   the key whose value comes next. */
typedef struct {
    bf_yaml_node_t *node;
    size_t cap;
    char *pending_key;
    int key_line, key_column;
} frame_t;

typedef struct {
    const char *file;
    const char *text;
    size_t len;
    frame_t stack[YAML_MAX_DEPTH + 1];
    int depth;
    bf_yaml_node_t *root;
    int documents;
    bool quiet; /* bf_yaml_parse_quiet: no text of the document in messages */
} builder_t;

/* What a message may quote of a document's text: all of it, or for a quiet
   document only a short plain word (a typo like 'tr38091' stays visible; a
   line of some other file that a symlink or hard link smuggled in does not). */
static const char *visible(bool quiet, const char *text)
{
    size_t n = text ? strlen(text) : 0;
    if (!quiet)
        return text ? text : "";
    if (n >= 1 && n <= 24 &&
        strspn(text, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.+-") == n)
        return text;
    return "(not shown)";
}

static bf_err_t fail_mark(char *err, const char *file, const yaml_mark_t *m, const char *fmt,
                          const char *arg)
{
    char what[BF_ERRLEN];
    snprintf(what, sizeof what, fmt, arg);
    return bf_fail(err, BF_EINVAL, "%s:%d:%d: %s", file, (int)m->line + 1, (int)m->column + 1,
                   what);
}

static bf_err_t grow(frame_t *f)
{
    bf_yaml_node_t *n = f->node;
    if (n->count < f->cap)
        return BF_OK;
    /* a map's items, keys and key positions share one capacity */
    size_t cap = bf_grow_cap(f->cap, n->count + 1, 4);
    if (!cap || !bf_resize(&n->items, cap, sizeof *n->items))
        return BF_ENOMEM;
    if (n->kind == BF_YAML_MAP && (!bf_resize(&n->keys, cap, sizeof *n->keys) ||
                                   !bf_resize(&n->key_lines, cap, sizeof *n->key_lines) ||
                                   !bf_resize(&n->key_columns, cap, sizeof *n->key_columns)))
        return BF_ENOMEM;
    f->cap = cap;
    return BF_OK;
}

/* Hands node to the collection on top of the stack (or makes it the root).
   Takes ownership of node in every case. */
static bf_err_t attach(builder_t *b, bf_yaml_node_t *node, const yaml_mark_t *mark, char *err)
{
    if (b->depth == 0) {
        b->root = node;
        return BF_OK;
    }
    frame_t *f = &b->stack[b->depth - 1];
    bf_yaml_node_t *parent = f->node;
    if (parent->kind == BF_YAML_MAP && !f->pending_key) {
        if (node->kind != BF_YAML_SCALAR) {
            node_free(node);
            return fail_mark(err, b->file, mark, "%smapping keys must be plain scalars", "");
        }
        f->pending_key = node->value;
        f->key_line = node->line;
        f->key_column = node->column;
        node->value = NULL;
        node_free(node);
        return BF_OK;
    }
    if (grow(f) != BF_OK) {
        node_free(node);
        return BF_ENOMEM;
    }
    if (parent->kind == BF_YAML_MAP) {
        parent->keys[parent->count] = f->pending_key;
        parent->key_lines[parent->count] = f->key_line;
        parent->key_columns[parent->count] = f->key_column;
        f->pending_key = NULL;
    }
    parent->items[parent->count++] = node;
    return BF_OK;
}

static bf_err_t check_props(builder_t *b, const yaml_event_t *ev, const yaml_char_t *anchor,
                            const yaml_char_t *tag, char *err)
{
    if (anchor)
        return fail_mark(err, b->file, &ev->start_mark, "anchors are not supported (anchor '&%s')",
                         visible(b->quiet, (const char *)anchor));
    if (tag)
        return fail_mark(err, b->file, &ev->start_mark, "tags are not supported (tag '%s')",
                         visible(b->quiet, (const char *)tag));
    return BF_OK;
}

static bf_err_t on_event(builder_t *b, const yaml_event_t *ev, char *err)
{
    switch (ev->type) {
    case YAML_DOCUMENT_START_EVENT:
        if (++b->documents > 1)
            return fail_mark(err, b->file, &ev->start_mark,
                             "%sonly one YAML document per file is supported", "");
        return BF_OK;
    case YAML_ALIAS_EVENT:
        return fail_mark(err, b->file, &ev->start_mark, "aliases are not supported (alias '*%s')",
                         (const char *)ev->data.alias.anchor);
    case YAML_SCALAR_EVENT: {
        bf_err_t rc = check_props(b, ev, ev->data.scalar.anchor, ev->data.scalar.tag, err);
        if (rc != BF_OK)
            return rc;
        if (memchr(ev->data.scalar.value, '\0', ev->data.scalar.length))
            return fail_mark(err, b->file, &ev->start_mark, "%sNUL character in a scalar", "");
        bf_yaml_node_t *n = node_new(BF_YAML_SCALAR, b->file, &ev->start_mark);
        if (!n)
            return BF_ENOMEM;
        n->value = strndup((const char *)ev->data.scalar.value, ev->data.scalar.length);
        n->quoted = ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE;
        if (!n->value) {
            node_free(n);
            return BF_ENOMEM;
        }
        return attach(b, n, &ev->start_mark, err);
    }
    case YAML_SEQUENCE_START_EVENT:
    case YAML_MAPPING_START_EVENT: {
        bool map = ev->type == YAML_MAPPING_START_EVENT;
        bf_err_t rc =
            check_props(b, ev, map ? ev->data.mapping_start.anchor : ev->data.sequence_start.anchor,
                        map ? ev->data.mapping_start.tag : ev->data.sequence_start.tag, err);
        if (rc != BF_OK)
            return rc;
        if (b->depth >= YAML_MAX_DEPTH)
            return fail_mark(err, b->file, &ev->start_mark, "nesting deeper than %s levels", "64");
        if (b->depth > 0 && b->stack[b->depth - 1].node->kind == BF_YAML_MAP &&
            !b->stack[b->depth - 1].pending_key)
            return fail_mark(err, b->file, &ev->start_mark, "%smapping keys must be plain scalars",
                             "");
        bf_yaml_node_t *n = node_new(map ? BF_YAML_MAP : BF_YAML_SEQ, b->file, &ev->start_mark);
        if (!n)
            return BF_ENOMEM;
        b->stack[b->depth++] = (frame_t){.node = n};
        return BF_OK;
    }
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT: {
        frame_t f = b->stack[--b->depth];
        free(f.pending_key); /* libyaml always closes a key with a value */
        return attach(b, f.node, &ev->start_mark, err);
    }
    default:
        return BF_OK;
    }
}

/* Line and column (1-based) of byte offset in text, for reader errors that
   libyaml reports by offset only. */
static void offset_position(const char *text, size_t len, size_t offset, int *line, int *col)
{
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < offset && i < len; i++) {
        if (text[i] == '\n') {
            ++*line;
            *col = 1;
        } else {
            ++*col;
        }
    }
}

static void mark_quiet(bf_yaml_node_t *n)
{
    /* depth is bounded by YAML_MAX_DEPTH */
    if (!n)
        return;
    n->quiet = true;
    for (size_t i = 0; n->kind != BF_YAML_SCALAR && i < n->count; i++)
        mark_quiet(n->items[i]);
}

static bf_err_t parse(const char *text, size_t len, const char *name, bool quiet,
                      bf_yaml_node_t **root, char *err)
{
    *root = NULL;
    if (!name)
        name = "<yaml>";
    if (len > YAML_MAX_BYTES)
        return bf_fail(err, BF_EINVAL, "%s:1:1: document too large (%zu bytes, limit %u)", name,
                       len, YAML_MAX_BYTES);
    char *file = bf_strdup(name);
    if (!file)
        return BF_ENOMEM;
    builder_t b = {.file = file, .text = text, .len = len, .quiet = quiet};
    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser)) {
        free(file);
        return BF_ENOMEM;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    bf_err_t rc = BF_OK;
    bool done = false;
    while (!done) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&parser, &ev)) {
            if (parser.error == YAML_MEMORY_ERROR) {
                rc = bf_fail(err, BF_ENOMEM, "%s: out of memory while parsing", file);
                break;
            }
            int line = (int)parser.problem_mark.line + 1, col = (int)parser.problem_mark.column + 1;
            if (parser.error == YAML_READER_ERROR)
                offset_position(text, len, parser.problem_offset, &line, &col);
            const char *problem = parser.problem ? parser.problem : "syntax error";
            if (parser.context)
                rc = bf_fail(err, BF_EINVAL, "%s:%d:%d: %s (%s at line %d)", file, line, col,
                             problem, parser.context, (int)parser.context_mark.line + 1);
            else
                rc = bf_fail(err, BF_EINVAL, "%s:%d:%d: %s", file, line, col, problem);
            break;
        }
        done = ev.type == YAML_STREAM_END_EVENT;
        rc = on_event(&b, &ev, err);
        yaml_event_delete(&ev);
        if (rc != BF_OK)
            break;
    }
    yaml_parser_delete(&parser);
    while (b.depth > 0) {
        frame_t *f = &b.stack[--b.depth];
        free(f->pending_key);
        node_free(f->node);
    }
    if (rc != BF_OK) {
        node_free(b.root);
        free(file);
        return rc;
    }
    /* An empty document ("" or "---" alone) reads as an empty mapping. */
    if (b.root && b.root->kind == BF_YAML_SCALAR && !b.root->quoted &&
        (!b.root->value[0] || !strcmp(b.root->value, "~") || !strcmp(b.root->value, "null"))) {
        bf_yaml_node_t *empty = calloc(1, sizeof *empty);
        if (!empty) {
            node_free(b.root);
            free(file);
            return BF_ENOMEM;
        }
        *empty = (bf_yaml_node_t){
            .kind = BF_YAML_MAP, .file = file, .line = b.root->line, .column = b.root->column};
        node_free(b.root);
        b.root = empty;
    }
    if (!b.root) {
        b.root = calloc(1, sizeof *b.root);
        if (!b.root) {
            free(file);
            return BF_ENOMEM;
        }
        *b.root = (bf_yaml_node_t){.kind = BF_YAML_MAP, .file = file, .line = 1, .column = 1};
    }
    *root = b.root;
    return BF_OK;
}

bf_err_t bf_yaml_parse(const char *text, size_t len, const char *name, bf_yaml_node_t **root,
                       char *err)
{
    return parse(text, len, name, false, root, err);
}

bf_err_t bf_yaml_parse_quiet(const char *text, size_t len, const char *name, bf_yaml_node_t **root,
                             char *err)
{
    bf_err_t rc = parse(text, len, name, true, root, err);
    if (rc == BF_OK)
        mark_quiet(*root);
    return rc;
}

bf_err_t bf_yaml_load(const char *path, bf_yaml_node_t **root, char *err)
{
    *root = NULL;
    char *text = NULL;
    size_t len = 0;
    bf_err_t rc = bf_read_file(path, YAML_MAX_BYTES, &text, &len, err);
    if (rc != BF_OK)
        return rc;
    rc = bf_yaml_parse(text, len, path, root, err);
    free(text);
    return rc;
}

/* ---- access ------------------------------------------------------------- */

const bf_yaml_node_t *bf_yaml_get(const bf_yaml_node_t *map, const char *key)
{
    if (!map || map->kind != BF_YAML_MAP || !key)
        return NULL;
    for (size_t i = 0; i < map->count; i++) {
        if (!strcmp(map->keys[i], key))
            return map->items[i];
    }
    return NULL;
}

const char *bf_yaml_quote(const bf_yaml_node_t *n)
{
    return n && n->kind == BF_YAML_SCALAR ? visible(n->quiet, n->value) : "?";
}

bf_err_t bf_yaml_fail(const bf_yaml_node_t *n, char *err, const char *fmt, ...)
{
    if (!err)
        return BF_EINVAL;
    char what[BF_ERRLEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    /* through bf_fail: one line of valid UTF-8, whatever value is echoed */
    return bf_fail(err, BF_EINVAL, "%s:%d:%d: %s", n && n->file ? n->file : "<yaml>",
                   n ? n->line : 0, n ? n->column : 0, what);
}

static const char *kind_name(const bf_yaml_node_t *n)
{
    return n->kind == BF_YAML_MAP ? "a mapping" : n->kind == BF_YAML_SEQ ? "a list" : "a scalar";
}

bf_err_t bf_yaml_check_map(const bf_yaml_node_t *node, const char *what, const char *const *allowed,
                           char *err)
{
    if (!node)
        return bf_fail(err, BF_EINVAL, "%s: missing", what);
    if (node->kind != BF_YAML_MAP) {
        if (node->kind == BF_YAML_SCALAR)
            return bf_yaml_fail(node, err, "field '%s': expected a mapping, got '%.64s'", what,
                                visible(node->quiet, node->value));
        return bf_yaml_fail(node, err, "field '%s': expected a mapping, got %s", what,
                            kind_name(node));
    }
    for (size_t i = 0; i < node->count; i++) {
        const char *key = node->keys[i];
        bool known = false;
        for (size_t a = 0; allowed && allowed[a]; a++) {
            if (!strcmp(allowed[a], key)) {
                known = true;
                break;
            }
        }
        bf_yaml_node_t at = {
            .file = node->file, .line = node->key_lines[i], .column = node->key_columns[i]};
        if (!known) {
            char list[BF_ERRLEN] = "";
            size_t used = 0;
            for (size_t a = 0; allowed && allowed[a] && used < sizeof list; a++) {
                int n =
                    snprintf(list + used, sizeof list - used, "%s%s", a ? ", " : "", allowed[a]);
                if (n < 0)
                    break;
                used += (size_t)n;
            }
            return bf_yaml_fail(&at, err, "unknown key '%.64s' in %s (allowed: %s)",
                                visible(node->quiet, key), what, list);
        }
        for (size_t j = 0; j < i; j++) {
            if (!strcmp(node->keys[j], key))
                return bf_yaml_fail(&at, err, "duplicate key '%.64s' in %s (first at line %d)", key,
                                    what, node->key_lines[j]);
        }
    }
    return BF_OK;
}

/* Formats the interval [min, max] as words for messages. */
static void range_words(char *out, size_t n, const char *noun, double min, double max)
{
    bool lo = isfinite(min), hi = isfinite(max);
    if (lo && hi)
        snprintf(out, n, "%s in [%.15g, %.15g]", noun, min, max);
    else if (lo)
        snprintf(out, n, "%s >= %.15g", noun, min);
    else if (hi)
        snprintf(out, n, "%s <= %.15g", noun, max);
    else
        snprintf(out, n, "%s", noun);
}

/* Strict YAML number syntax: [-+]? (digits [. digits?] | . digits) ([eE] [-+]? digits)?,
   or [-+]? .inf / .nan in YAML's three spellings. Returns false for anything
   else (hex, words, empty, spaces). */
static bool parse_number(const char *s, double *out)
{
    const char *p = s;
    int sign = 1;
    if (*p == '+' || *p == '-')
        sign = *p++ == '-' ? -1 : 1;
    if (!strcmp(p, ".inf") || !strcmp(p, ".Inf") || !strcmp(p, ".INF")) {
        *out = sign * INFINITY;
        return true;
    }
    if (!strcmp(p, ".nan") || !strcmp(p, ".NaN") || !strcmp(p, ".NAN")) {
        *out = NAN;
        return true;
    }
    const char *q = p;
    size_t digits = 0;
    while (*q >= '0' && *q <= '9')
        q++, digits++;
    if (*q == '.') {
        q++;
        while (*q >= '0' && *q <= '9')
            q++, digits++;
    }
    if (digits == 0)
        return false;
    if (*q == 'e' || *q == 'E') {
        q++;
        if (*q == '+' || *q == '-')
            q++;
        if (!(*q >= '0' && *q <= '9'))
            return false;
        while (*q >= '0' && *q <= '9')
            q++;
    }
    if (*q != '\0')
        return false;
    errno = 0;
    char *end = NULL;
    double v = strtod(s, &end);
    if (end != q)
        return false;
    *out = v;
    return true;
}

static bf_err_t expect_scalar(const bf_yaml_node_t *n, const char *what, const char *words,
                              char *err)
{
    if (!n)
        return bf_fail(err, BF_EINVAL, "field '%s': missing", what);
    if (n->kind != BF_YAML_SCALAR)
        return bf_yaml_fail(n, err, "field '%s': expected %s, got %s", what, words, kind_name(n));
    return BF_OK;
}

bf_err_t bf_yaml_double(const bf_yaml_node_t *n, const char *what, double min, double max,
                        double *out, char *err)
{
    char words[128];
    range_words(words, sizeof words, "a number", min, max);
    bf_err_t rc = expect_scalar(n, what, words, err);
    if (rc != BF_OK)
        return rc;
    double v = 0;
    if (n->quoted || !parse_number(n->value, &v) || isnan(v) || v < min || v > max)
        return bf_yaml_fail(n, err, "field '%s': expected %s, got '%.64s'", what, words,
                            visible(n->quiet, n->value));
    *out = v;
    return BF_OK;
}

bf_err_t bf_yaml_uint(const bf_yaml_node_t *n, const char *what, uint64_t min, uint64_t max,
                      uint64_t *out, char *err)
{
    char words[128];
    if (max == UINT64_MAX)
        snprintf(words, sizeof words, "an integer >= %llu", (unsigned long long)min);
    else
        snprintf(words, sizeof words, "an integer in [%llu, %llu]", (unsigned long long)min,
                 (unsigned long long)max);
    bf_err_t rc = expect_scalar(n, what, words, err);
    if (rc != BF_OK)
        return rc;
    const char *s = n->value;
    bool ok = !n->quoted;
    uint64_t v = 0;
    if (ok) {
        const char *p = *s == '+' ? s + 1 : s;
        size_t len = strspn(p, "0123456789");
        if (len > 0 && p[len] == '\0') {
            /* plain digits: exact, with overflow detection */
            for (const char *c = p; *c && ok; c++) {
                uint64_t d = (uint64_t)(*c - '0');
                if (v > (UINT64_MAX - d) / 10)
                    ok = false;
                else
                    v = v * 10 + d;
            }
        } else {
            /* float notation (1e6, 3.5e9) is fine when the value is whole */
            double d = 0;
            ok = parse_number(s, &d) && isfinite(d) && d >= 0 && d == floor(d) &&
                 d < 18446744073709551616.0;
            if (ok)
                v = (uint64_t)d;
        }
    }
    if (!ok || v < min || v > max)
        return bf_yaml_fail(n, err, "field '%s': expected %s, got '%.64s'", what, words,
                            visible(n->quiet, s));
    *out = v;
    return BF_OK;
}

bf_err_t bf_yaml_bool(const bf_yaml_node_t *n, const char *what, bool *out, char *err)
{
    const char *words = "true or false";
    bf_err_t rc = expect_scalar(n, what, words, err);
    if (rc != BF_OK)
        return rc;
    static const char *const yes[] = {"true", "yes", "on"};
    static const char *const no[] = {"false", "no", "off"};
    if (!n->quoted) {
        for (size_t i = 0; i < BF_ARRAY_LEN(yes); i++) {
            if (!strcasecmp(n->value, yes[i])) {
                *out = true;
                return BF_OK;
            }
            if (!strcasecmp(n->value, no[i])) {
                *out = false;
                return BF_OK;
            }
        }
    }
    return bf_yaml_fail(n, err, "field '%s': expected %s, got %s'%.64s'", what, words,
                        n->quoted ? "the string " : "", visible(n->quiet, n->value));
}

bf_err_t bf_yaml_str(const bf_yaml_node_t *n, const char *what, char **out, char *err)
{
    const char *words = "a non-empty string";
    bf_err_t rc = expect_scalar(n, what, words, err);
    if (rc != BF_OK)
        return rc;
    bool null = !n->quoted && (!strcmp(n->value, "~") || !strcmp(n->value, "null"));
    if (!n->value[0] || null)
        return bf_yaml_fail(n, err, "field '%s': expected %s, got '%s'", what, words,
                            visible(n->quiet, n->value));
    char *copy = strdup(n->value);
    if (!copy)
        return BF_ENOMEM;
    *out = copy;
    return BF_OK;
}

bf_err_t bf_yaml_doubles(const bf_yaml_node_t *n, const char *what, size_t count, double *out,
                         char *err)
{
    if (!n)
        return bf_fail(err, BF_EINVAL, "field '%s': missing", what);
    if (n->kind != BF_YAML_SEQ || n->count != count) {
        if (n->kind == BF_YAML_SEQ)
            return bf_yaml_fail(n, err, "field '%s': expected a list of %zu numbers, got %zu items",
                                what, count, n->count);
        if (n->kind == BF_YAML_SCALAR)
            return bf_yaml_fail(n, err, "field '%s': expected a list of %zu numbers, got '%.64s'",
                                what, count, visible(n->quiet, n->value));
        return bf_yaml_fail(n, err, "field '%s': expected a list of %zu numbers, got %s", what,
                            count, kind_name(n));
    }
    for (size_t i = 0; i < count; i++) {
        char item[160];
        snprintf(item, sizeof item, "%.120s[%zu]", what, i);
        bf_err_t rc = bf_yaml_double(n->items[i], item, -INFINITY, INFINITY, &out[i], err);
        if (rc != BF_OK)
            return rc;
    }
    return BF_OK;
}
