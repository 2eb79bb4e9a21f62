/* nowait.read_file in C: the same four system calls without ctypes and without Python between
 * them. nowait.py says why they never wait for a disk, and falls back to ctypes when this module
 * was not built; the tests run both. On a 40 KB message it takes the user time of a read on the
 * loop from about 10 to under 2 microseconds (bench/results/optimizations.md).
 *
 * read_cached(path, limit) -> bytes | None
 *   The whole regular file at path if it is at most limit octets and the kernel has every part
 *   of it at hand (its path in the dentry cache, its pages in the page cache), else None.
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
open_cached(const char *path)
{
    /* O_NONBLOCK: a FIFO someone put in a Maildir would otherwise block the open itself. */
    struct how how = {O_RDONLY | O_CLOEXEC | O_NONBLOCK, 0, RESOLVE_CACHED_};
    return (int)syscall(SYS_openat2, AT_FDCWD, path, &how, sizeof how);
}

static PyObject *
read_cached(PyObject *module, PyObject *args)
{
    PyObject *path;
    Py_ssize_t limit;
    if (!PyArg_ParseTuple(args, "O&n:read_cached", PyUnicode_FSConverter, &path, &limit))
        return NULL;
    int fd = open_cached(PyBytes_AS_STRING(path));
    Py_DECREF(path);
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
probe(PyObject *module, PyObject *unused)
{
    int fd = open_cached("/");
    if (fd >= 0) {
        close(fd);
        Py_RETURN_TRUE;
    }
    /* EAGAIN: the call works, "/" was just not cached. ENOSYS, EINVAL, EPERM: it does not. */
    return PyBool_FromLong(errno == EAGAIN);
}

static PyMethodDef methods[] = {
    {"read_cached", read_cached, METH_VARARGS, "read_cached(path, limit) -> bytes | None"},
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
