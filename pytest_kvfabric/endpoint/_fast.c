/* Native per-write bookkeeping for the endpoint agents (optional; endpoint/slotbook.py and
 * endpoint/pattern.py hold the Python equivalents, and tests run both on the same inputs).
 *
 * Why native: at 64 KiB the prefill agent is CPU-bound, and ~9 us of its ~40 us per write
 * was the Python slot rule, key stamping and completion bookkeeping; on the decode side
 * three ctypes memcmp calls per page cost ~3 us of call overhead. This module does the
 * same work with the same rules and no I/O: SlotBook (prefill) and PageCheck (decode).
 *
 * Memory safety: every offset is validated against the buffers once, in the constructor;
 * row indices coming from Python are range-checked on every call. Buffers are held through
 * the buffer protocol for the object's lifetime, so numpy cannot free them under us.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "XFER/COMPLETION rows are little-endian; this module writes them in host order"
#endif

#define HEADER_BYTES 16
#define TRAILER_BYTES 8
#define KEY_BYTES 24
#define XFER_ITEM 40       /* XFER_DTYPE: xfer u8, src_off u8, dst_off u8, nbytes u8, notify i8 */
#define COMPLETION_ITEM 16 /* COMPLETION_DTYPE: xfer u8, t_ns u8 */

/* ---- in-flight byte ranges, bucketed by slot (the _Busy of prefill.py) ---------------- */

typedef struct { int64_t row, a, b; } Ent;
typedef struct { Ent *v; int32_t n, cap; } Bucket;
typedef struct { Bucket *b; int64_t nslots, slot; } Map;

static int map_init(Map *m, int64_t region, int64_t slot) {
    m->slot = slot > 0 ? slot : 1;
    m->nslots = region / m->slot + 2;
    m->b = PyMem_Calloc((size_t)m->nslots, sizeof(Bucket));
    return m->b ? 0 : -1;
}

static void map_free(Map *m) {
    if (!m->b) return;
    for (int64_t s = 0; s < m->nslots; s++) PyMem_Free(m->b[s].v);
    PyMem_Free(m->b);
    m->b = NULL;
}

/* An empty write still claims its first byte (as in prefill._Busy). */
static inline void span(const Map *m, int64_t a, int64_t *b, int64_t *s, int64_t *e) {
    if (*b <= a) *b = a + 1;
    *s = a / m->slot;
    *e = (*b - 1) / m->slot;
}

static int map_conflicts(const Map *m, int64_t a, int64_t b) {
    int64_t s, e;
    span(m, a, &b, &s, &e);
    for (; s <= e; s++) {
        const Bucket *bk = &m->b[s];
        for (int32_t k = 0; k < bk->n; k++)
            if (bk->v[k].a < b && a < bk->v[k].b) return 1;
    }
    return 0;
}

static void map_remove(Map *m, int64_t row, int64_t a, int64_t b);

static int map_add(Map *m, int64_t row, int64_t a, int64_t b) {
    int64_t s, e, a0 = a, b0 = b;
    span(m, a, &b, &s, &e);
    for (; s <= e; s++) {
        Bucket *bk = &m->b[s];
        if (bk->n == bk->cap) {
            int32_t cap = bk->cap ? bk->cap * 2 : 4;
            Ent *v = PyMem_Realloc(bk->v, (size_t)cap * sizeof(Ent));
            if (!v) { map_remove(m, row, a0, b0); PyErr_NoMemory(); return -1; } /* undo the buckets before */
            bk->v = v;
            bk->cap = cap;
        }
        bk->v[bk->n++] = (Ent){row, a, b};
    }
    return 0;
}

static void map_remove(Map *m, int64_t row, int64_t a, int64_t b) {
    int64_t s, e;
    span(m, a, &b, &s, &e);
    for (; s <= e; s++) {
        Bucket *bk = &m->b[s];
        for (int32_t k = 0; k < bk->n; k++)
            if (bk->v[k].row == row) { bk->v[k] = bk->v[--bk->n]; break; }
    }
}

static void map_clear_rows(Map *m, const int64_t *rows, Py_ssize_t nrows,
                           const int64_t *off, const int64_t *nb) {
    for (Py_ssize_t k = 0; k < nrows; k++)
        map_remove(m, rows[k], off[rows[k]], off[rows[k]] + nb[rows[k]]);
}

/* ---- buffer helpers ------------------------------------------------------------------ */

/* An int argument; -1 with the exception set on a conversion error (checked one by one, so
 * no conversion runs with an exception pending). */
static inline int as_ll(PyObject *o, long long *out) {
    *out = PyLong_AsLongLong(o);
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

/* A plan row index from Python: converted and range-checked against the n rows (-1 with
 * the exception set otherwise). Every method that takes a row goes through here. */
static int row_arg(PyObject *o, Py_ssize_t n, long long *i) {
    if (as_ll(o, i) < 0) return -1;
    if (*i < 0 || *i >= n) {
        PyErr_Format(PyExc_IndexError, "row %lld outside the plan's %zd rows", *i, n);
        return -1;
    }
    return 0;
}

/* [off, off + n) lies inside [0, len), written so that no sum can overflow. */
static inline int inside(int64_t off, int64_t n, int64_t len) {
    return off >= 0 && n >= 0 && off <= len && n <= len - off;
}

static int get_i64(PyObject *o, Py_buffer *v, const char *name, Py_ssize_t n) {
    if (PyObject_GetBuffer(o, v, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return -1;
    const char *f = v->format ? v->format + (v->format[0] == '<' || v->format[0] == '=' || v->format[0] == '@') : "";
    if (v->itemsize != 8 || !(f[0] == 'q' || f[0] == 'l') || f[1] != '\0') {
        PyErr_Format(PyExc_TypeError, "%s: expected a contiguous int64 array", name);
        PyBuffer_Release(v);
        return -1;
    }
    if (n >= 0 && v->len / 8 != n) {
        PyErr_Format(PyExc_ValueError, "%s: %zd entries, expected %zd", name, v->len / 8, n);
        PyBuffer_Release(v);
        return -1;
    }
    return 0;
}

/* ---- SlotBook ------------------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    Py_ssize_t n, nreq;
    Py_buffer src_off_v, dst_off_v, nb_v, notify_v, req_v, left_v, src_v, keys_v;
    int held;  /* how many of the buffers above are held (released in reverse order) */
    const int64_t *src_off, *dst_off, *nb, *notify, *req;
    int64_t *left;
    uint8_t *src;
    const uint8_t *keys;
    Map srcm, dstm, bsrc, bdst; /* in flight; blocked (select() scratch, allocated on first use) */
    int64_t src_len, dst_len, src_slot, dst_slot;
    int64_t *blocked;           /* rows added to bsrc/bdst during one select() */
    Py_ssize_t blocked_cap;
} SlotBook;

static void book_release(SlotBook *s) {
    Py_buffer *v[] = {&s->src_off_v, &s->dst_off_v, &s->nb_v, &s->notify_v, &s->req_v,
                      &s->left_v, &s->src_v, &s->keys_v};
    while (s->held > 0) PyBuffer_Release(v[--s->held]);
    map_free(&s->srcm); map_free(&s->dstm); map_free(&s->bsrc); map_free(&s->bdst);
    PyMem_Free(s->blocked);
    s->blocked = NULL;
}

static void book_dealloc(SlotBook *s) {
    book_release(s);
    Py_TYPE(s)->tp_free((PyObject *)s);
}

static int book_init(SlotBook *s, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"src_off", "dst_off", "nbytes", "notify", "request", "req_left",
                             "src", "keys", "src_slot", "dst_slot", "dst_region", NULL};
    PyObject *o[8];
    long long src_slot, dst_slot, dst_region;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOOOOOOLLL", kwlist, &o[0], &o[1], &o[2], &o[3],
                                     &o[4], &o[5], &o[6], &o[7], &src_slot, &dst_slot, &dst_region))
        return -1;
    book_release(s);
    s->n = s->nreq = 0; /* no row is usable until every check below has passed */
    if (get_i64(o[0], &s->src_off_v, "src_off", -1) < 0) return -1;
    s->held = 1;
    Py_ssize_t n = s->src_off_v.len / 8;
    if (get_i64(o[1], &s->dst_off_v, "dst_off", n) < 0) return -1;
    s->held = 2;
    if (get_i64(o[2], &s->nb_v, "nbytes", n) < 0) return -1;
    s->held = 3;
    if (get_i64(o[3], &s->notify_v, "notify", n) < 0) return -1;
    s->held = 4;
    if (get_i64(o[4], &s->req_v, "request", n) < 0) return -1;
    s->held = 5;
    if (get_i64(o[5], &s->left_v, "req_left", -1) < 0) return -1;
    s->held = 6;
    if (s->left_v.readonly) { PyErr_SetString(PyExc_ValueError, "req_left: must be writable"); return -1; }
    if (PyObject_GetBuffer(o[6], &s->src_v, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) return -1;
    s->held = 7;
    if (PyObject_GetBuffer(o[7], &s->keys_v, PyBUF_C_CONTIGUOUS) < 0) return -1;
    s->held = 8;
    Py_ssize_t nreq = s->left_v.len / 8;
    s->src_off = s->src_off_v.buf; s->dst_off = s->dst_off_v.buf; s->nb = s->nb_v.buf;
    s->notify = s->notify_v.buf; s->req = s->req_v.buf; s->left = s->left_v.buf;
    s->src = s->src_v.buf; s->keys = s->keys_v.buf;
    if (s->keys_v.len / KEY_BYTES < n) {
        PyErr_Format(PyExc_ValueError, "keys: %zd bytes for %zd rows (24 each)", s->keys_v.len, n);
        return -1;
    }
    /* Every row must lie inside both regions: the stamp writes only inside the source
     * buffer, and the slot maps index only their own buckets. */
    for (Py_ssize_t i = 0; i < n; i++) {
        int64_t a = s->src_off[i], c = s->dst_off[i], nb = s->nb[i];
        if (!inside(a, nb, s->src_v.len) || !inside(c, nb, dst_region) || s->req[i] < 0 || s->req[i] >= nreq) {
            PyErr_Format(PyExc_ValueError,
                         "row %zd: src [%lld, +%lld) / dst [%lld, +%lld) outside the regions "
                         "(%zd / %lld bytes) or request %lld out of range",
                         (Py_ssize_t)i, (long long)a, (long long)nb, (long long)c, (long long)nb,
                         s->src_v.len, dst_region, (long long)s->req[i]);
            return -1;
        }
    }
    if (map_init(&s->srcm, s->src_v.len, src_slot) < 0 || map_init(&s->dstm, dst_region, dst_slot) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    s->src_len = s->src_v.len;
    s->dst_len = dst_region;
    s->src_slot = src_slot;
    s->dst_slot = dst_slot;
    s->n = n;
    s->nreq = nreq;
    return 0;
}

static inline int busy(SlotBook *s, int64_t i) {
    int64_t a = s->src_off[i], c = s->dst_off[i], nb = s->nb[i];
    return map_conflicts(&s->srcm, a, a + nb) || map_conflicts(&s->dstm, c, c + nb);
}

static inline void stamp(SlotBook *s, int64_t i) {
    uint8_t *p = s->src + s->src_off[i];
    const uint8_t *k = s->keys + (size_t)i * KEY_BYTES;
    int64_t nb = s->nb[i];
    if (nb < KEY_BYTES) {
        memcpy(p, k, (size_t)nb);
        return;
    }
    memcpy(p, k, HEADER_BYTES);
    memcpy(p + nb - TRAILER_BYTES, k + HEADER_BYTES, TRAILER_BYTES);
}

static int take(SlotBook *s, int64_t i) {
    int64_t a = s->src_off[i], c = s->dst_off[i], nb = s->nb[i];
    if (map_add(&s->srcm, i, a, a + nb) < 0) return -1;
    if (map_add(&s->dstm, i, c, c + nb) < 0) { map_remove(&s->srcm, i, a, a + nb); return -1; }
    stamp(s, i);
    return 0;
}

static inline void release_row(SlotBook *s, int64_t i) {
    int64_t a = s->src_off[i], c = s->dst_off[i], nb = s->nb[i];
    map_remove(&s->srcm, i, a, a + nb);
    map_remove(&s->dstm, i, c, c + nb);
}

static PyObject *book_claim(SlotBook *s, PyObject *arg) {
    long long i;
    if (row_arg(arg, s->n, &i) < 0) return NULL;
    if (busy(s, i)) Py_RETURN_FALSE;
    if (take(s, i) < 0) return NULL;
    Py_RETURN_TRUE;
}

static PyObject *book_release_m(SlotBook *s, PyObject *arg) {
    long long i;
    if (row_arg(arg, s->n, &i) < 0) return NULL;
    release_row(s, i);
    Py_RETURN_NONE;
}

static PyObject *book_busy(SlotBook *s, PyObject *arg) {
    long long i;
    if (row_arg(arg, s->n, &i) < 0) return NULL;
    return PyBool_FromLong(busy(s, i));
}

static void put_xfer(SlotBook *s, uint8_t *dst, int64_t i) {
    uint64_t w[5] = {(uint64_t)i, (uint64_t)s->src_off[i], (uint64_t)s->dst_off[i],
                     (uint64_t)s->nb[i], (uint64_t)s->notify[i]};
    memcpy(dst, w, sizeof w);
}

/* fill(batch, rows): write the post batch (XFER_DTYPE) for rows, in order. */
static PyObject *book_fill(SlotBook *s, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) { PyErr_SetString(PyExc_TypeError, "fill(batch, rows)"); return NULL; }
    Py_buffer bv;
    if (PyObject_GetBuffer(args[0], &bv, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) return NULL;
    PyObject *seq = PySequence_Fast(args[1], "fill: rows must be a sequence");
    if (!seq) { PyBuffer_Release(&bv); return NULL; }
    Py_ssize_t m = PySequence_Fast_GET_SIZE(seq);
    PyObject *ret = NULL;
    if (m * XFER_ITEM > bv.len) {
        PyErr_Format(PyExc_ValueError, "fill: %zd rows do not fit a batch of %zd", m, bv.len / XFER_ITEM);
        goto out;
    }
    PyObject **items = PySequence_Fast_ITEMS(seq);
    for (Py_ssize_t k = 0; k < m; k++) {
        long long i;
        if (row_arg(items[k], s->n, &i) < 0) goto out;
        put_xfer(s, (uint8_t *)bv.buf + k * XFER_ITEM, i);
    }
    ret = Py_None;
    Py_INCREF(ret);
out:
    Py_DECREF(seq);
    PyBuffer_Release(&bv);
    return ret;
}

/* select(ready, batch, count, max_count, nbytes, max_nbytes) -> (k, keep, nbytes)
 *
 * The pacing loop's ready path: in order, take each ready row that the windows allow and
 * whose source and destination ranges are free, claim and stamp it and write it into
 * batch[k]. A row that conflicts is kept and blocks later rows touching the same ranges
 * (pages of one slot go in plan order). `count` writes and `nbytes` bytes are in flight
 * (or staged) already; the byte window lets a lone write through whatever its size. */
static PyObject *book_select(SlotBook *s, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "select(ready, batch, count, max_count, nbytes, max_nbytes)");
        return NULL;
    }
    long long count, max_count, nbytes, max_nbytes;
    if (as_ll(args[2], &count) < 0 || as_ll(args[3], &max_count) < 0 || as_ll(args[4], &nbytes) < 0 ||
        as_ll(args[5], &max_nbytes) < 0)
        return NULL;
    if (!PyList_Check(args[0])) { PyErr_SetString(PyExc_TypeError, "select: ready must be a list"); return NULL; }
    Py_buffer bv;
    if (PyObject_GetBuffer(args[1], &bv, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) return NULL;
    PyObject *ready = args[0];
    Py_ssize_t m = PyList_GET_SIZE(ready), cap = bv.len / XFER_ITEM, nblocked = 0;
    long long k = 0;
    PyObject *keep = PyList_New(0);
    PyObject *ret = NULL;
    if (!keep) goto out;
    for (Py_ssize_t pos = 0; pos < m; pos++) {
        PyObject *item = PyList_GET_ITEM(ready, pos);
        long long i;
        if (row_arg(item, s->n, &i) < 0) goto out;
        int64_t nb = s->nb[i];
        if (count + k >= max_count || (count + k > 0 && nbytes + nb > max_nbytes) || k >= cap) {
            PyObject *rest = PyList_GetSlice(ready, pos, m);
            if (!rest) goto out;
            int rc = PyList_SetSlice(keep, PY_SSIZE_T_MAX, PY_SSIZE_T_MAX, rest);
            Py_DECREF(rest);
            if (rc < 0) goto out;
            break;
        }
        int64_t a = s->src_off[i], c = s->dst_off[i];
        if (busy(s, i) || (nblocked && (map_conflicts(&s->bsrc, a, a + nb) || map_conflicts(&s->bdst, c, c + nb)))) {
            if (PyList_Append(keep, item) < 0) goto out;
            if (nblocked == s->blocked_cap) {
                Py_ssize_t nc = s->blocked_cap ? 2 * s->blocked_cap : 64;
                int64_t *b = PyMem_Realloc(s->blocked, (size_t)nc * sizeof(int64_t));
                if (!b) { PyErr_NoMemory(); goto out; }
                s->blocked = b;
                s->blocked_cap = nc;
            }
            if (!s->bsrc.b && (map_init(&s->bsrc, s->src_len, s->src_slot) < 0 ||
                               map_init(&s->bdst, s->dst_len, s->dst_slot) < 0)) {
                PyErr_NoMemory();
                goto out;
            }
            s->blocked[nblocked++] = i;
            if (map_add(&s->bsrc, i, a, a + nb) < 0 || map_add(&s->bdst, i, c, c + nb) < 0) goto out;
            continue;
        }
        if (take(s, i) < 0) goto out;
        put_xfer(s, (uint8_t *)bv.buf + k * XFER_ITEM, i);
        nbytes += nb;
        k++;
    }
    ret = Py_BuildValue("(LOL)", k, keep, nbytes);
out:
    if (nblocked) {
        map_clear_rows(&s->bsrc, s->blocked, nblocked, s->src_off, s->nb);
        map_clear_rows(&s->bdst, s->blocked, nblocked, s->dst_off, s->nb);
    }
    Py_XDECREF(keep);
    PyBuffer_Release(&bv);
    return ret;
}

/* complete(comp, done_ns) -> (rows, nbytes, [(request, t_ns), ...])
 *
 * Completions (COMPLETION_DTYPE): record each row's completion time, free its ranges,
 * count it against its request; returns the requests whose last row completed, in order. */
static PyObject *book_complete(SlotBook *s, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) { PyErr_SetString(PyExc_TypeError, "complete(comp, done_ns)"); return NULL; }
    Py_buffer cv, dv;
    if (PyObject_GetBuffer(args[0], &cv, PyBUF_C_CONTIGUOUS) < 0) return NULL;
    if (get_i64(args[1], &dv, "done_ns", s->n) < 0) { PyBuffer_Release(&cv); return NULL; }
    PyObject *done = NULL, *ret = NULL;
    if (dv.readonly) { PyErr_SetString(PyExc_ValueError, "done_ns: must be writable"); goto out; }
    if (cv.itemsize != COMPLETION_ITEM || cv.len % COMPLETION_ITEM) {
        PyErr_SetString(PyExc_ValueError, "complete: expected COMPLETION_DTYPE rows (xfer u8, t_ns u8)");
        goto out;
    }
    done = PyList_New(0);
    if (!done) goto out;
    Py_ssize_t m = cv.len / COMPLETION_ITEM;
    long long bytes = 0;
    int64_t *dn = dv.buf;
    for (Py_ssize_t k = 0; k < m; k++) {
        uint64_t w[2];
        memcpy(w, (uint8_t *)cv.buf + k * COMPLETION_ITEM, sizeof w);
        if (w[0] >= (uint64_t)s->n) {
            PyErr_Format(PyExc_IndexError, "completion for row %llu outside the plan's %zd rows",
                         (unsigned long long)w[0], s->n);
            goto out;
        }
        int64_t x = (int64_t)w[0];
        dn[x] = (int64_t)w[1];
        bytes += s->nb[x];
        release_row(s, x);
        int64_t r = s->req[x];
        if (--s->left[r] == 0) {
            PyObject *t = Py_BuildValue("(LL)", (long long)r, (long long)w[1]);
            if (!t || PyList_Append(done, t) < 0) { Py_XDECREF(t); goto out; }
            Py_DECREF(t);
        }
    }
    ret = Py_BuildValue("(nLO)", m, bytes, done);
out:
    Py_XDECREF(done);
    PyBuffer_Release(&dv);
    PyBuffer_Release(&cv);
    return ret;
}

static PyMethodDef book_methods[] = {
    {"claim", (PyCFunction)book_claim, METH_O, "claim(row) -> bool: take the row's ranges and stamp it, if free"},
    {"release", (PyCFunction)book_release_m, METH_O, "release(row): free the row's ranges"},
    {"busy", (PyCFunction)book_busy, METH_O, "busy(row) -> bool: a range of the row is taken"},
    {"fill", (PyCFunction)(void (*)(void))book_fill, METH_FASTCALL, "fill(batch, rows)"},
    {"select", (PyCFunction)(void (*)(void))book_select, METH_FASTCALL,
     "select(ready, batch, count, max_count, nbytes, max_nbytes) -> (k, keep, nbytes)"},
    {"complete", (PyCFunction)(void (*)(void))book_complete, METH_FASTCALL,
     "complete(comp, done_ns) -> (rows, nbytes, [(request, t_ns)])"},
    {NULL}};

static PyTypeObject SlotBookType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pytest_kvfabric.endpoint._fast.SlotBook",
    .tp_basicsize = sizeof(SlotBook),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Prefill slot rule, key stamping and completion bookkeeping (see slotbook.py).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)book_init,
    .tp_dealloc = (destructor)book_dealloc,
    .tp_methods = book_methods,
};

/* ---- PageCheck ----------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    Py_ssize_t n;
    Py_buffer dst_v, base_v, keys_v, dst_off_v, src_off_v, nb_v;
    int held;
} PageCheck;

static void check_release(PageCheck *c) {
    Py_buffer *v[] = {&c->dst_v, &c->base_v, &c->keys_v, &c->dst_off_v, &c->src_off_v, &c->nb_v};
    while (c->held > 0) PyBuffer_Release(v[--c->held]);
}

static void check_dealloc(PageCheck *c) {
    check_release(c);
    Py_TYPE(c)->tp_free((PyObject *)c);
}

static int check_init(PageCheck *c, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"dst", "base", "keys", "dst_off", "src_off", "nbytes", NULL};
    PyObject *o[6];
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOOOO", kwlist, &o[0], &o[1], &o[2], &o[3], &o[4], &o[5]))
        return -1;
    check_release(c);
    c->n = 0;
    if (PyObject_GetBuffer(o[0], &c->dst_v, PyBUF_C_CONTIGUOUS) < 0) return -1;
    c->held = 1;
    if (PyObject_GetBuffer(o[1], &c->base_v, PyBUF_C_CONTIGUOUS) < 0) return -1;
    c->held = 2;
    if (PyObject_GetBuffer(o[2], &c->keys_v, PyBUF_C_CONTIGUOUS) < 0) return -1;
    c->held = 3;
    if (get_i64(o[3], &c->dst_off_v, "dst_off", -1) < 0) return -1;
    c->held = 4;
    Py_ssize_t n = c->dst_off_v.len / 8;
    if (get_i64(o[4], &c->src_off_v, "src_off", n) < 0) return -1;
    c->held = 5;
    if (get_i64(o[5], &c->nb_v, "nbytes", n) < 0) return -1;
    c->held = 6;
    if (c->keys_v.len / KEY_BYTES < n) {
        PyErr_Format(PyExc_ValueError, "keys: %zd bytes for %zd rows (24 each)", c->keys_v.len, n);
        return -1;
    }
    c->n = n;
    return 0;
}

/* The bytes at the row's dst_off are exactly its page (header key, base body, trailer
 * key; a short row is its key prefix). A page that does not fit the buffers is not ok:
 * the Python path then names the reason. The caller range-checks the row. */
static int page_ok(PageCheck *c, Py_ssize_t i) {
    int64_t d = ((int64_t *)c->dst_off_v.buf)[i], s = ((int64_t *)c->src_off_v.buf)[i];
    int64_t n = ((int64_t *)c->nb_v.buf)[i];
    if (!inside(d, n, c->dst_v.len) || !inside(s, n, c->base_v.len)) return 0;
    const uint8_t *dp = (const uint8_t *)c->dst_v.buf + d;
    const uint8_t *kp = (const uint8_t *)c->keys_v.buf + (size_t)i * KEY_BYTES;
    int ok;
    if (n < KEY_BYTES)
        ok = memcmp(dp, kp, (size_t)n) == 0;
    else
        ok = memcmp(dp, kp, HEADER_BYTES) == 0 &&
             memcmp(dp + n - TRAILER_BYTES, kp + HEADER_BYTES, TRAILER_BYTES) == 0 &&
             memcmp(dp + HEADER_BYTES, (const uint8_t *)c->base_v.buf + s + HEADER_BYTES,
                    (size_t)(n - KEY_BYTES)) == 0;
    return ok;
}

/* ok(row) -> bool: page_ok() for Python. */
static PyObject *check_ok(PageCheck *c, PyObject *arg) {
    long long i;
    if (row_arg(arg, c->n, &i) < 0) return NULL;
    return PyBool_FromLong(page_ok(c, i));
}

static PyMethodDef check_methods[] = {
    {"ok", (PyCFunction)check_ok, METH_O, "ok(row) -> bool: the row's page is intact at its dst_off"},
    {NULL}};

static PyTypeObject PageCheckType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pytest_kvfabric.endpoint._fast.PageCheck",
    .tp_basicsize = sizeof(PageCheck),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Decode-side page comparison (see pattern.PageLedger).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)check_init,
    .tp_dealloc = (destructor)check_dealloc,
    .tp_methods = check_methods,
};

/* ---- LedgerFast ---------------------------------------------------------------------- */

/* The common case of pattern.PageLedger.place()/guard()/verify_some(), run in C over the
 * ledger's own Python containers (the same lists and dicts, so there is one state and the
 * Python methods stay the reference). Anything off the common case (an early attribution
 * to absorb, a header that is not the next expected page at its offset, a pending page to
 * verify before an overwrite, a page that fails verification) is handed to the Python
 * method before anything is changed, so the reasons and the error messages stay there. */

enum { L_KID, L_PLACED, L_NB, L_NEXT, L_REQ, L_GOT, L_NEED, L_QUEUE, L_DONE, L_VERIFIED, L_DSTOFF, NLISTS };
enum { D_EXPECT, D_LAST, D_ABSORB, D_PENDING, NDICTS };

typedef struct {
    PyObject_HEAD
    PyObject *lists[NLISTS];
    PyObject *dicts[NDICTS];
    PyObject *check;      /* PageCheck of the same rows */
    PyObject *place_slow; /* the Python methods that handle everything else */
    PyObject *guard_slow;
    Py_buffer dst_v;
    int have_dst, verify, kid0;
    int64_t slot;
    Py_ssize_t n;
} LedgerFast;

static int ledger_traverse(LedgerFast *L, visitproc visit, void *arg) {
    for (int k = 0; k < NLISTS; k++) Py_VISIT(L->lists[k]);
    for (int k = 0; k < NDICTS; k++) Py_VISIT(L->dicts[k]);
    Py_VISIT(L->check);
    Py_VISIT(L->place_slow);
    Py_VISIT(L->guard_slow);
    return 0;
}

static int ledger_clear(LedgerFast *L) {
    for (int k = 0; k < NLISTS; k++) Py_CLEAR(L->lists[k]);
    for (int k = 0; k < NDICTS; k++) Py_CLEAR(L->dicts[k]);
    Py_CLEAR(L->check);
    Py_CLEAR(L->place_slow);
    Py_CLEAR(L->guard_slow);
    return 0;
}

static void ledger_dealloc(LedgerFast *L) {
    PyObject_GC_UnTrack(L);
    ledger_clear(L);
    if (L->have_dst) PyBuffer_Release(&L->dst_v);
    Py_TYPE(L)->tp_free((PyObject *)L);
}

static int ledger_init(LedgerFast *L, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"dst", "kid", "placed", "nbytes", "next_same", "request", "req_got",
                             "req_need", "queue", "completed", "verified", "dst_off", "expect",
                             "last_at", "absorb", "pending", "check", "place_slow", "guard_slow",
                             "verify", "kid0", "slot_bytes", NULL};
    PyObject *dst, *o[NLISTS], *d[NDICTS], *check, *ps, *gs;
    int verify, kid0;
    long long slot;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO!O!O!O!O!O!O!O!O!O!O!O!O!O!O!O!OOppL", kwlist, &dst,
                                     &PyList_Type, &o[L_KID], &PyList_Type, &o[L_PLACED], &PyList_Type, &o[L_NB],
                                     &PyList_Type, &o[L_NEXT], &PyList_Type, &o[L_REQ], &PyList_Type, &o[L_GOT],
                                     &PyList_Type, &o[L_NEED], &PyList_Type, &o[L_QUEUE], &PyList_Type, &o[L_DONE],
                                     &PyList_Type, &o[L_VERIFIED], &PyList_Type, &o[L_DSTOFF],
                                     &PyDict_Type, &d[D_EXPECT], &PyDict_Type, &d[D_LAST], &PyDict_Type, &d[D_ABSORB],
                                     &PyDict_Type, &d[D_PENDING], &PageCheckType, &check, &ps, &gs,
                                     &verify, &kid0, &slot))
        return -1;
    L->n = 0; /* no row is usable until every check below has passed */
    if (L->have_dst) { PyBuffer_Release(&L->dst_v); L->have_dst = 0; }
    if (PyObject_GetBuffer(dst, &L->dst_v, PyBUF_C_CONTIGUOUS) < 0) return -1;
    L->have_dst = 1;
    Py_ssize_t n = PyList_GET_SIZE(o[L_KID]);
    const int per_row[] = {L_KID, L_PLACED, L_NB, L_NEXT, L_REQ, L_VERIFIED, L_DSTOFF};
    for (size_t k = 0; k < sizeof per_row / sizeof *per_row; k++)
        if (PyList_GET_SIZE(o[per_row[k]]) != n) {
            PyErr_SetString(PyExc_ValueError, "LedgerFast: per-row lists of different lengths");
            return -1;
        }
    if (PyList_GET_SIZE(o[L_GOT]) != PyList_GET_SIZE(o[L_NEED])) {
        PyErr_SetString(PyExc_ValueError, "LedgerFast: req_got and req_need differ in length");
        return -1;
    }
    if (((PageCheck *)check)->n != n) {
        PyErr_SetString(PyExc_ValueError, "LedgerFast: the PageCheck covers other rows");
        return -1;
    }
    ledger_clear(L);
    for (int k = 0; k < NLISTS; k++) { Py_INCREF(o[k]); L->lists[k] = o[k]; }
    for (int k = 0; k < NDICTS; k++) { Py_INCREF(d[k]); L->dicts[k] = d[k]; }
    Py_INCREF(check); L->check = check;
    Py_INCREF(ps); L->place_slow = ps;
    Py_INCREF(gs); L->guard_slow = gs;
    L->verify = verify;
    L->kid0 = kid0;
    L->slot = slot > 0 ? slot : 1;
    L->n = n;
    return 0;
}

static int ledger_ready(LedgerFast *L) {
    if (L->lists[0] && L->check && L->place_slow && L->guard_slow && L->have_dst) return 1;
    PyErr_SetString(PyExc_RuntimeError, "LedgerFast is not initialised");
    return 0;
}

/* An int from a list slot; -1 with an exception set on a conversion error (callers check
 * PyErr_Occurred() where -1 is also a valid value). */
static inline long long item_ll(PyObject *list, Py_ssize_t i) {
    return PyLong_AsLongLong(PyList_GET_ITEM(list, i));
}

static inline int set_item(PyObject *list, Py_ssize_t i, PyObject *v) {
    Py_INCREF(v);
    return PyList_SetItem(list, i, v); /* steals v, releases the old item */
}

static int read_kid(LedgerFast *L, long long off, uint64_t *kid) {
    if (!inside(off, 8, L->dst_v.len)) return 0;
    memcpy(kid, (const uint8_t *)L->dst_v.buf + off, 8);
    return 1;
}

static PyObject *slow(PyObject *fn, long long a, long long b) {
    return PyObject_CallFunction(fn, "LL", a, b);
}

/* place(dst_off, nbytes) -> row | None: PageLedger.place(). */
static PyObject *ledger_place(LedgerFast *L, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) { PyErr_SetString(PyExc_TypeError, "place(dst_off, nbytes)"); return NULL; }
    if (!ledger_ready(L)) return NULL;
    long long off, nb;
    if (as_ll(args[0], &off) < 0 || as_ll(args[1], &nb) < 0) return NULL;
    PyObject **ls = L->lists;
    uint64_t kid;
    if (PyDict_GET_SIZE(L->dicts[D_ABSORB]) || nb < 8 || !read_kid(L, off, &kid))
        return slow(L->place_slow, off, nb);
    PyObject *key = PyLong_FromLongLong(off);
    if (!key) return NULL;
    PyObject *rowo = PyDict_GetItemWithError(L->dicts[D_EXPECT], key); /* borrowed */
    long long row = rowo ? PyLong_AsLongLong(rowo) : -1;
    if (PyErr_Occurred()) { Py_DECREF(key); return NULL; }
    if (row < 0 || row >= L->n || PyLong_AsUnsignedLongLong(PyList_GET_ITEM(ls[L_KID], row)) != kid ||
        PyList_GET_ITEM(ls[L_PLACED], row) != Py_False || item_ll(ls[L_NB], row) != nb) {
        Py_DECREF(key);
        if (PyErr_Occurred()) return NULL;
        return slow(L->place_slow, off, nb); /* not the next expected page: the full lookup */
    }
    /* Attribute: the same steps as PageLedger._attribute on its success path. */
    PyObject *rowobj = PyLong_FromLongLong(row);
    if (!rowobj) goto fail;
    if (set_item(ls[L_PLACED], row, Py_True) < 0 || PyDict_SetItem(L->dicts[D_LAST], key, rowobj) < 0) goto fail;
    long long nxt = item_ll(ls[L_NEXT], row);
    while (nxt >= 0 && nxt < L->n && PyList_GET_ITEM(ls[L_PLACED], nxt) == Py_True) nxt = item_ll(ls[L_NEXT], nxt);
    if (PyErr_Occurred()) goto fail;
    if (nxt >= 0) {
        PyObject *v = PyLong_FromLongLong(nxt);
        if (!v || PyDict_SetItem(L->dicts[D_EXPECT], key, v) < 0) { Py_XDECREF(v); goto fail; }
        Py_DECREF(v);
    } else if (PyDict_DelItem(L->dicts[D_EXPECT], key) < 0) goto fail;
    long long req = item_ll(ls[L_REQ], row);
    if (req < 0 || req >= PyList_GET_SIZE(ls[L_GOT])) {
        if (!PyErr_Occurred()) PyErr_Format(PyExc_IndexError, "row %lld: request %lld out of range", row, req);
        goto fail;
    }
    long long got = item_ll(ls[L_GOT], req) + nb;
    long long need = item_ll(ls[L_NEED], req);
    if (PyErr_Occurred()) goto fail;
    PyObject *g = PyLong_FromLongLong(got);
    if (!g || PyList_SetItem(ls[L_GOT], req, g) < 0) goto fail;
    if (got == need) {
        PyObject *r = PyList_GET_ITEM(ls[L_REQ], row);
        if (PyList_Append(ls[L_DONE], r) < 0) goto fail;
    }
    if (L->verify) {
        if (PyList_Append(ls[L_QUEUE], rowobj) < 0) goto fail;
        long long first = off / L->slot, last = (off + (nb ? nb : 1) - 1) / L->slot;
        for (long long s = first; s <= last; s++) {
            PyObject *sk = PyLong_FromLongLong(s);
            if (!sk) goto fail;
            PyObject *lst = PyDict_GetItemWithError(L->dicts[D_PENDING], sk);
            int rc;
            if (lst) rc = PyList_Append(lst, rowobj);
            else if (PyErr_Occurred()) rc = -1;
            else {
                PyObject *nl = PyList_New(1);
                if (!nl) { Py_DECREF(sk); goto fail; }
                Py_INCREF(rowobj);
                PyList_SET_ITEM(nl, 0, rowobj);
                rc = PyDict_SetItem(L->dicts[D_PENDING], sk, nl);
                Py_DECREF(nl);
            }
            Py_DECREF(sk);
            if (rc < 0) goto fail;
        }
    }
    Py_DECREF(key);
    return rowobj;
fail:
    Py_DECREF(key);
    Py_XDECREF(rowobj);
    return NULL;
}

/* guard(dst_off, nbytes): PageLedger.guard() when nothing needs attributing early and no
 * pending page overlaps the range (dropping verified rows from the pending lists as it
 * does); otherwise the Python guard runs, from the start. */
static PyObject *ledger_guard(LedgerFast *L, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) { PyErr_SetString(PyExc_TypeError, "guard(dst_off, nbytes)"); return NULL; }
    if (!ledger_ready(L)) return NULL;
    long long off, nb;
    if (as_ll(args[0], &off) < 0 || as_ll(args[1], &nb) < 0) return NULL;
    if (!L->verify) Py_RETURN_NONE;
    PyObject **ls = L->lists;
    long long end = off + (nb ? nb : 1);
    uint64_t kid;
    if (nb >= 8 && read_kid(L, off, &kid)) {
        PyObject *key = PyLong_FromLongLong(off);
        if (!key) return NULL;
        PyObject *lo = PyDict_GetItemWithError(L->dicts[D_LAST], key);
        Py_DECREF(key);
        if (!lo && PyErr_Occurred()) return NULL;
        long long last = lo ? PyLong_AsLongLong(lo) : -1;
        int known = last >= 0 && last < L->n && PyLong_AsUnsignedLongLong(PyList_GET_ITEM(ls[L_KID], last)) == kid;
        if (PyErr_Occurred()) return NULL;
        if (!known && !(kid == 0 && !L->kid0)) return slow(L->guard_slow, off, nb);
    }
    if (off < 0) return slow(L->guard_slow, off, nb);
    long long first = off / L->slot, lastslot = (end - 1) / L->slot;
    /* Pass 1: any unverified pending page overlapping the range? Then Python verifies it. */
    for (long long s = first; s <= lastslot; s++) {
        PyObject *sk = PyLong_FromLongLong(s);
        if (!sk) return NULL;
        PyObject *lst = PyDict_GetItemWithError(L->dicts[D_PENDING], sk);
        Py_DECREF(sk);
        if (!lst) { if (PyErr_Occurred()) return NULL; continue; }
        if (!PyList_Check(lst)) return slow(L->guard_slow, off, nb);
        for (Py_ssize_t k = 0; k < PyList_GET_SIZE(lst); k++) {
            long long row = PyLong_AsLongLong(PyList_GET_ITEM(lst, k));
            if (row < 0 || row >= L->n) return PyErr_Occurred() ? NULL : slow(L->guard_slow, off, nb);
            if (PyList_GET_ITEM(ls[L_VERIFIED], row) == Py_True) continue;
            long long a = item_ll(ls[L_DSTOFF], row), b = a + item_ll(ls[L_NB], row);
            if (PyErr_Occurred()) return NULL;
            if (a < end && off < b) return slow(L->guard_slow, off, nb);
        }
    }
    /* Pass 2: keep only the unverified rows, as the Python guard does. */
    for (long long s = first; s <= lastslot; s++) {
        PyObject *sk = PyLong_FromLongLong(s);
        if (!sk) return NULL;
        PyObject *lst = PyDict_GetItemWithError(L->dicts[D_PENDING], sk);
        if (!lst) { Py_DECREF(sk); if (PyErr_Occurred()) return NULL; continue; }
        PyObject *keep = PyList_New(0);
        int rc = keep ? 0 : -1;
        for (Py_ssize_t k = 0; rc == 0 && k < PyList_GET_SIZE(lst); k++) {
            PyObject *r = PyList_GET_ITEM(lst, k);
            Py_ssize_t row = PyLong_AsSsize_t(r);
            if (row < 0 || row >= L->n) { /* pass 1 checked these; the list cannot have changed */
                if (!PyErr_Occurred()) PyErr_SetString(PyExc_RuntimeError, "pending row out of range");
                rc = -1;
            } else if (PyList_GET_ITEM(ls[L_VERIFIED], row) != Py_True) rc = PyList_Append(keep, r);
        }
        if (rc == 0) rc = PyList_GET_SIZE(keep) ? PyDict_SetItem(L->dicts[D_PENDING], sk, keep)
                                                : PyDict_DelItem(L->dicts[D_PENDING], sk);
        Py_XDECREF(keep);
        Py_DECREF(sk);
        if (rc < 0) return NULL;
    }
    Py_RETURN_NONE;
}

/* verify_run(qpos, max_pages) -> (qpos, done, failed): PageLedger.verify_some()'s loop:
 * verify up to max_pages unverified rows of the queue from qpos on, marking them verified;
 * the rows whose page is not intact are returned for the Python path to name the reason. */
static PyObject *ledger_verify_run(LedgerFast *L, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) { PyErr_SetString(PyExc_TypeError, "verify_run(qpos, max_pages)"); return NULL; }
    if (!ledger_ready(L)) return NULL;
    long long qpos_ll, maxp_ll;
    if (as_ll(args[0], &qpos_ll) < 0 || as_ll(args[1], &maxp_ll) < 0) return NULL;
    Py_ssize_t qpos = (Py_ssize_t)qpos_ll, maxp = (Py_ssize_t)maxp_ll;
    PyObject *q = L->lists[L_QUEUE], *ver = L->lists[L_VERIFIED];
    PyObject *failed = PyList_New(0);
    if (!failed) return NULL;
    Py_ssize_t done = 0;
    while (qpos >= 0 && qpos < PyList_GET_SIZE(q) && done < maxp) {
        PyObject *r = PyList_GET_ITEM(q, qpos);
        Py_ssize_t row = PyLong_AsSsize_t(r);
        qpos++;
        if (row < 0 || row >= L->n) {
            if (!PyErr_Occurred()) PyErr_Format(PyExc_IndexError, "queued row %zd outside the plan", row);
            Py_DECREF(failed);
            return NULL;
        }
        if (PyList_GET_ITEM(ver, row) == Py_True) continue;
        if (set_item(ver, row, Py_True) < 0) { Py_DECREF(failed); return NULL; }
        done++;
        if (!page_ok((PageCheck *)L->check, row) && PyList_Append(failed, r) < 0) { Py_DECREF(failed); return NULL; }
    }
    PyObject *ret = Py_BuildValue("(nnO)", qpos, done, failed);
    Py_DECREF(failed);
    return ret;
}

static PyMethodDef ledger_methods[] = {
    {"place", (PyCFunction)(void (*)(void))ledger_place, METH_FASTCALL, "place(dst_off, nbytes) -> row | None"},
    {"guard", (PyCFunction)(void (*)(void))ledger_guard, METH_FASTCALL, "guard(dst_off, nbytes)"},
    {"verify_run", (PyCFunction)(void (*)(void))ledger_verify_run, METH_FASTCALL,
     "verify_run(qpos, max_pages) -> (qpos, done, failed_rows)"},
    {NULL}};

static PyTypeObject LedgerFastType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pytest_kvfabric.endpoint._fast.LedgerFast",
    .tp_basicsize = sizeof(LedgerFast),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The common case of PageLedger.place/guard/verify_some over the ledger's own containers.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)ledger_init,
    .tp_dealloc = (destructor)ledger_dealloc,
    .tp_traverse = (traverseproc)ledger_traverse,
    .tp_clear = (inquiry)ledger_clear,
    .tp_methods = ledger_methods,
};

static struct PyModuleDef fastmodule = {
    PyModuleDef_HEAD_INIT, "_fast", "Native per-write bookkeeping for the endpoint agents.", -1, NULL};

PyMODINIT_FUNC PyInit__fast(void) {
    if (PyType_Ready(&SlotBookType) < 0 || PyType_Ready(&PageCheckType) < 0 || PyType_Ready(&LedgerFastType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&fastmodule);
    if (!m) return NULL;
    Py_INCREF(&SlotBookType);
    Py_INCREF(&PageCheckType);
    Py_INCREF(&LedgerFastType);
    if (PyModule_AddObject(m, "SlotBook", (PyObject *)&SlotBookType) < 0 ||
        PyModule_AddObject(m, "PageCheck", (PyObject *)&PageCheckType) < 0 ||
        PyModule_AddObject(m, "LedgerFast", (PyObject *)&LedgerFastType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
