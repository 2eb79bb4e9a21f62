/* The inner loop of dotstuff.MessageEncoder in C: stored message bytes to a POP3 multi-line body.
 *
 * dotstuff.py is the reference and is used when this module cannot be built; the tests run both
 * on the same inputs. Python's own bytes methods need two passes over a message and a Python-level
 * loop over its dots; here one memchr per line does the line ends and the dots together, about
 * four times faster on mail-sized messages (bench/results/optimizations.md).
 *
 * encode(prefix, chunk, held_cr, at_line_start, final) -> (out, held_cr, at_line_start)
 *   out is prefix, then chunk with every LF not preceded by CR turned into CRLF and a "." doubled
 *   where it begins a line. A CR ending a chunk is held back (held_cr) until the next chunk shows
 *   whether an LF follows it. With final set the body ends: a held CR ends a line, an unfinished
 *   line gets CRLF, and the terminator ".\r\n" follows.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

/* Below this an allocation comes from malloc's heap, where allocating the most a chunk can grow
 * to and shrinking the result afterwards costs nothing. Above it malloc maps fresh pages, and a
 * size that varies from call to call keeps it doing so (a page fault per 4 KB): there the size
 * is counted first and allocated exactly. 128 KiB is glibc's default mmap threshold. */
#define HEAP_ALLOCATION (128 * 1024)

typedef struct {
    int held_cr, line_start;
} State;

/* The encoding of [s, end) after what `state` says came before, written to o; with o NULL only
 * its length is counted. Returns the length; `state` becomes the state after it. */
static Py_ssize_t
encode_into(char *o, const char *s, const char *end, State *state, int final)
{
    const char *begin = s;
    Py_ssize_t n = 0;
#define PUT(c) (o ? (void)(o[n] = (c)) : (void)0, n++)
    if (state->held_cr && (s < end || final)) {
        /* The CR held from the last chunk: a line end if an LF (or the end) follows, else text. */
        PUT('\r');
        state->held_cr = 0;
        if (s < end && *s != '\n') {
            state->line_start = 0;
        } else {
            if (s < end)
                s++;
            PUT('\n');
            state->line_start = 1;
        }
    }
    if (s < end && end[-1] == '\r' && !final) {
        end--;
        state->held_cr = 1;
    }
    while (s < end) {
        const char *lf = memchr(s, '\n', end - s);
        Py_ssize_t len = (lf ? lf : end) - s;
        if (state->line_start && *s == '.')
            PUT('.');
        if (o)
            memcpy(o + n, s, len);
        n += len;
        if (lf == NULL) {
            state->line_start = 0;
            break;
        }
        if (len == 0 || lf[-1] != '\r')
            PUT('\r');
        PUT('\n');
        state->line_start = 1;
        s = lf + 1;
    }
    if (final) {
        if (!state->line_start) {
            /* After a CR that ended the input (it is the last octet out) only its LF is missing. */
            if (end == begin || end[-1] != '\r')
                PUT('\r');
            PUT('\n');
            state->line_start = 1;
        }
        PUT('.');
        PUT('\r');
        PUT('\n');
    }
#undef PUT
    return n;
}

static PyObject *
encode(PyObject *module, PyObject *args)
{
    Py_buffer prefix, chunk;
    State state;
    int final;
    if (!PyArg_ParseTuple(args, "y*y*ppp:encode", &prefix, &chunk, &state.held_cr,
                          &state.line_start, &final))
        return NULL;
    PyObject *result = NULL;
    const char *s = chunk.buf, *end = s + chunk.len;
    if (chunk.len > (PY_SSIZE_T_MAX - prefix.len - 8) / 2) {
        PyErr_NoMemory();
        goto done;
    }
    /* Every octet becomes at most two (LF to CRLF, a line's first dot doubled), plus a held CR
     * and the line end and terminator of `final`. */
    Py_ssize_t size = 2 * chunk.len + 6;
    if (prefix.len + size > HEAP_ALLOCATION) {
        State counted = state;
        size = encode_into(NULL, s, end, &counted, final);
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, prefix.len + size);
    if (out == NULL)
        goto done;
    char *o = PyBytes_AS_STRING(out);
    memcpy(o, prefix.buf, prefix.len);
    Py_ssize_t n = encode_into(o + prefix.len, s, end, &state, final);
    if (n != size && _PyBytes_Resize(&out, prefix.len + n) < 0)
        goto done;
    result = Py_BuildValue("(NNN)", out, PyBool_FromLong(state.held_cr),
                           PyBool_FromLong(state.line_start));
done:
    PyBuffer_Release(&prefix);
    PyBuffer_Release(&chunk);
    return result;
}

static PyMethodDef methods[] = {
    {"encode", encode, METH_VARARGS,
     "encode(prefix, chunk, held_cr, at_line_start, final) -> (out, held_cr, at_line_start)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "pop3d.protocol._stuffing", NULL, 0, methods,
};

PyMODINIT_FUNC
PyInit__stuffing(void)
{
    return PyModuleDef_Init(&module);
}
