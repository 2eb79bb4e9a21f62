/* nowait.read_file in C: the same four system calls without ctypes and without Python between
 * them. nowait.py says why they never wait for a disk, and falls back to ctypes when this module
 * was not built; the tests run both. On a 40 KB message it takes the user time of a read on the
 * loop from about 10 to under 2 microseconds (bench/results/optimizations.md).
 *
 * read_cached(path, limit) -> bytes | None
 *   The whole regular file at path if it is at most limit octets and the kernel has every part
 *   of it at hand (its path in the dentry cache, its pages in the page cache), else None.
 * open_cached(path, flags) -> int | None
 *   A descriptor for path opened with flags (plus O_CLOEXEC, and O_NONBLOCK unless O_PATH) if
 *   its path is in the dentry cache, else None. No O_CREAT: creating may wait for the disk.
 * probe() -> bool
 *   Whether this kernel has openat2 with RESOLVE_CACHED (Linux 5.12) and lets us call it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#ifndef SYS_openat2 /* C libraries older than the call */
#ifdef __alpha__
#define SYS_openat2 547
#else
#define SYS_openat2 437
#endif
#endif

/* struct open_how of <linux/openat2.h>, which older kernel headers lack; its layout is ABI. */
struct how {
    uint64_t flags, mode, resolve;
};

#define RESOLVE_CACHED_ 0x20

static int
openat2_cached(const char *path, int flags)
{
    /* O_NONBLOCK: a FIFO someone put in a Maildir would otherwise block the open itself.
     * openat2 refuses it with O_PATH, which opens nothing to block on. */
    if (!(flags & O_PATH))
        flags |= O_NONBLOCK;
    struct how how = {(uint64_t)(flags | O_CLOEXEC), 0, RESOLVE_CACHED_};
    return (int)syscall(SYS_openat2, AT_FDCWD, path, &how, sizeof how);
}

/* openat2_cached on a path from PyUnicode_FSConverter, which it releases. */
static int
open_converted(PyObject *path, int flags)
{
    int fd = openat2_cached(PyBytes_AS_STRING(path), flags);
    Py_DECREF(path);
    return fd;
}

static PyObject *
read_cached(PyObject *module, PyObject *args)
{
    PyObject *path;
    Py_ssize_t limit;
    if (!PyArg_ParseTuple(args, "O&n:read_cached", PyUnicode_FSConverter, &path, &limit))
        return NULL;
    int fd = open_converted(path, O_RDONLY);
    if (fd < 0)
        Py_RETURN_NONE;
    PyObject *data = NULL;
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size <= limit) {
        data = PyBytes_FromStringAndSize(NULL, st.st_size);
        if (data != NULL) {
            /* One octet more than the size: a file that grew is not taken for complete, and a
             * short count is all the page cache had, not the end of the file. */
            char more;
            struct iovec iov[2] = {{PyBytes_AS_STRING(data), st.st_size}, {&more, 1}};
            if (preadv2(fd, iov, 2, 0, RWF_NOWAIT) != st.st_size)
                Py_CLEAR(data);
        }
    }
    close(fd);
    if (data == NULL && !PyErr_Occurred())
        Py_RETURN_NONE;
    return data;
}

static PyObject *
open_cached(PyObject *module, PyObject *args)
{
    PyObject *path;
    int flags;
    if (!PyArg_ParseTuple(args, "O&i:open_cached", PyUnicode_FSConverter, &path, &flags))
        return NULL;
    if (flags & (O_CREAT | O_TRUNC)) {
        Py_DECREF(path);
        PyErr_SetString(PyExc_ValueError, "open_cached cannot create or truncate");
        return NULL;
    }
    int fd = open_converted(path, flags);
    if (fd < 0)
        Py_RETURN_NONE;
    PyObject *result = PyLong_FromLong(fd);
    if (result == NULL)
        close(fd);
    return result;
}

static PyObject *
probe(PyObject *module, PyObject *unused)
{
    int fd = openat2_cached("/", O_RDONLY);
    if (fd >= 0) {
        close(fd);
        Py_RETURN_TRUE;
    }
    /* EAGAIN: the call works, "/" was just not cached. ENOSYS, EINVAL, EPERM: it does not. */
    return PyBool_FromLong(errno == EAGAIN);
}

static PyMethodDef methods[] = {
    {"read_cached", read_cached, METH_VARARGS, "read_cached(path, limit) -> bytes | None"},
    {"open_cached", open_cached, METH_VARARGS, "open_cached(path, flags) -> int | None"},
    {"probe", probe, METH_NOARGS, "probe() -> bool"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "pop3d.store._nowait", NULL, 0, methods,
};

PyMODINIT_FUNC
PyInit__nowait(void)
{
    return PyModuleDef_Init(&module);
}
