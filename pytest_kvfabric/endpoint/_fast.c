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

static int map_add(Map *m, int64_t row, int64_t a, int64_t b) {
    int64_t s, e;
    span(m, a, &b, &s, &e);
    for (; s <= e; s++) {
        Bucket *bk = &m->b[s];
        if (bk->n == bk->cap) {
            int32_t cap = bk->cap ? bk->cap * 2 : 4;
            Ent *v = PyMem_Realloc(bk->v, (size_t)cap * sizeof(Ent));
            if (!v) { PyErr_NoMemory(); return -1; }
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

static int get_i64(PyObject *o, Py_buffer *v, const char *name, Py_ssize_t n) {
    if (PyObject_GetBuffer(o, v, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return -1;
    if (v->itemsize != 8 || !v->format || !strchr("ql", v->format[v->format[0] == '<' || v->format[0] == '=' ? 1 : 0])) {
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
    Map srcm, dstm, bsrc, bdst; /* in flight; blocked (select() scratch) */
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
    if (get_i64(o[0], &s->src_off_v, "src_off", -1) < 0) return -1;
    s->held = 1;
    s->n = s->src_off_v.len / 8;
    if (get_i64(o[1], &s->dst_off_v, "dst_off", s->n) < 0) return -1;
    s->held = 2;
    if (get_i64(o[2], &s->nb_v, "nbytes", s->n) < 0) return -1;
    s->held = 3;
    if (get_i64(o[3], &s->notify_v, "notify", s->n) < 0) return -1;
    s->held = 4;
    if (get_i64(o[4], &s->req_v, "request", s->n) < 0) return -1;
    s->held = 5;
    if (get_i64(o[5], &s->left_v, "req_left", -1) < 0) return -1;
    s->held = 6;
    if (s->left_v.readonly) { PyErr_SetString(PyExc_ValueError, "req_left: must be writable"); return -1; }
    if (PyObject_GetBuffer(o[6], &s->src_v, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) return -1;
    s->held = 7;
    if (PyObject_GetBuffer(o[7], &s->keys_v, PyBUF_C_CONTIGUOUS) < 0) return -1;
    s->held = 8;
    s->nreq = s->left_v.len / 8;
    s->src_off = s->src_off_v.buf; s->dst_off = s->dst_off_v.buf; s->nb = s->nb_v.buf;
    s->notify = s->notify_v.buf; s->req = s->req_v.buf; s->left = s->left_v.buf;
    s->src = s->src_v.buf; s->keys = s->keys_v.buf;
    if (s->keys_v.len < (Py_ssize_t)s->n * KEY_BYTES) {
        PyErr_Format(PyExc_ValueError, "keys: %zd bytes for %zd rows (24 each)", s->keys_v.len, s->n);
        return -1;
    }
    /* Every row must lie inside both regions: the stamp writes only inside the source
     * buffer, and the slot maps index only their own buckets. */
    for (Py_ssize_t i = 0; i < s->n; i++) {
        int64_t a = s->src_off[i], c = s->dst_off[i], nb = s->nb[i];
        if (a < 0 || c < 0 || nb < 0 || a + nb > s->src_v.len || c + nb > dst_region ||
            s->req[i] < 0 || s->req[i] >= s->nreq) {
            PyErr_Format(PyExc_ValueError,
                         "row %zd: src [%lld, +%lld) / dst [%lld, +%lld) outside the regions "
                         "(%zd / %lld bytes) or request %lld out of range",
                         i, (long long)a, (long long)nb, (long long)c, (long long)nb,
                         s->src_v.len, dst_region, (long long)s->req[i]);
            return -1;
        }
    }
    if (map_init(&s->srcm, s->src_v.len, src_slot) < 0 || map_init(&s->dstm, dst_region, dst_slot) < 0 ||
        map_init(&s->bsrc, s->src_v.len, src_slot) < 0 || map_init(&s->bdst, dst_region, dst_slot) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

static inline int row_ok(SlotBook *s, long long i) {
    if (i < 0 || i >= s->n) {
        PyErr_Format(PyExc_IndexError, "row %lld outside the plan's %zd rows", i, s->n);
        return 0;
    }
    return 1;
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
    long long i = PyLong_AsLongLong(arg);
    if (i == -1 && PyErr_Occurred()) return NULL;
    if (!row_ok(s, i)) return NULL;
    if (busy(s, i)) Py_RETURN_FALSE;
    if (take(s, i) < 0) return NULL;
    Py_RETURN_TRUE;
}

static PyObject *book_release_m(SlotBook *s, PyObject *arg) {
    long long i = PyLong_AsLongLong(arg);
    if (i == -1 && PyErr_Occurred()) return NULL;
    if (!row_ok(s, i)) return NULL;
    release_row(s, i);
    Py_RETURN_NONE;
}

static PyObject *book_busy(SlotBook *s, PyObject *arg) {
    long long i = PyLong_AsLongLong(arg);
    if (i == -1 && PyErr_Occurred()) return NULL;
    if (!row_ok(s, i)) return NULL;
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
        long long i = PyLong_AsLongLong(items[k]);
        if ((i == -1 && PyErr_Occurred()) || !row_ok(s, i)) goto out;
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
    long long count = PyLong_AsLongLong(args[2]), max_count = PyLong_AsLongLong(args[3]);
    long long nbytes = PyLong_AsLongLong(args[4]), max_nbytes = PyLong_AsLongLong(args[5]);
    if (PyErr_Occurred()) return NULL;
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
        long long i = PyLong_AsLongLong(item);
        if ((i == -1 && PyErr_Occurred()) || !row_ok(s, i)) goto out;
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
    if (cv.len % COMPLETION_ITEM) { PyErr_SetString(PyExc_ValueError, "complete: not COMPLETION_DTYPE rows"); goto out; }
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
    if (PyObject_GetBuffer(o[0], &c->dst_v, PyBUF_C_CONTIGUOUS) < 0) return -1;
    c->held = 1;
    if (PyObject_GetBuffer(o[1], &c->base_v, PyBUF_C_CONTIGUOUS) < 0) return -1;
    c->held = 2;
    if (PyObject_GetBuffer(o[2], &c->keys_v, PyBUF_C_CONTIGUOUS) < 0) return -1;
    c->held = 3;
    if (get_i64(o[3], &c->dst_off_v, "dst_off", -1) < 0) return -1;
    c->held = 4;
    c->n = c->dst_off_v.len / 8;
    if (get_i64(o[4], &c->src_off_v, "src_off", c->n) < 0) return -1;
    c->held = 5;
    if (get_i64(o[5], &c->nb_v, "nbytes", c->n) < 0) return -1;
    c->held = 6;
    if (c->keys_v.len < (Py_ssize_t)c->n * KEY_BYTES) {
        PyErr_Format(PyExc_ValueError, "keys: %zd bytes for %zd rows (24 each)", c->keys_v.len, c->n);
        return -1;
    }
    return 0;
}

/* ok(row) -> bool: the bytes at the row's dst_off are exactly its page (header key, base
 * body, trailer key; a short row is its key prefix). A page that does not fit the
 * buffers is not ok: the Python path then names the reason. */
static PyObject *check_ok(PageCheck *c, PyObject *arg) {
    long long i = PyLong_AsLongLong(arg);
    if (i == -1 && PyErr_Occurred()) return NULL;
    if (i < 0 || i >= c->n) {
        PyErr_Format(PyExc_IndexError, "row %lld outside the plan's %zd rows", i, c->n);
        return NULL;
    }
    int64_t d = ((int64_t *)c->dst_off_v.buf)[i], s = ((int64_t *)c->src_off_v.buf)[i];
    int64_t n = ((int64_t *)c->nb_v.buf)[i];
    if (d < 0 || s < 0 || n < 0 || d + n > c->dst_v.len || s + n > c->base_v.len) Py_RETURN_FALSE;
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
    return PyBool_FromLong(ok);
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

static struct PyModuleDef fastmodule = {
    PyModuleDef_HEAD_INIT, "_fast", "Native per-write bookkeeping for the endpoint agents.", -1, NULL};

PyMODINIT_FUNC PyInit__fast(void) {
    if (PyType_Ready(&SlotBookType) < 0 || PyType_Ready(&PageCheckType) < 0) return NULL;
    PyObject *m = PyModule_Create(&fastmodule);
    if (!m) return NULL;
    Py_INCREF(&SlotBookType);
    Py_INCREF(&PageCheckType);
    if (PyModule_AddObject(m, "SlotBook", (PyObject *)&SlotBookType) < 0 ||
        PyModule_AddObject(m, "PageCheck", (PyObject *)&PageCheckType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
