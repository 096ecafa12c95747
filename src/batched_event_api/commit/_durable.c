/* write_and_sync(writes, fds, directory_fd) -> None: the C twin of LocalDisk.write_and_sync
   (commit/disk.py), a commit round's writes and syncs with the GIL released once: each Python
   syscall releases and retakes it, and retaking waits for the event loop's turn.
   writes: sequence of (fd, offset, chunks), chunks any buffers; fds: files to fdatasync once
   every write is done, side by side; directory_fd: -1, or a directory to fsync with them. The
   first error stops the writes (no sync then); of the syncs, each is done and the first error in
   the given order raised, as OSError; EINTR is retried, as Python's own calls do (PEP 475). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/uio.h>
#include <unistd.h>

#define MAX_IOV 1024

typedef struct {
    int fd;
    off_t offset;
    Py_ssize_t first, count; /* its chunks in the flat arrays */
} Write;

static int write_all(int fd, off_t offset, struct iovec *iov, Py_ssize_t count) {
    while (count > 0) {
        int n = count > MAX_IOV ? MAX_IOV : (int)count;
        ssize_t done = pwritev(fd, iov, n, offset);
        if (done < 0) {
            if (errno == EINTR) continue;
            return errno;
        }
        offset += done;
        while (count > 0 && (size_t)done >= iov->iov_len) {
            done -= (ssize_t)iov->iov_len;
            iov++;
            count--;
        }
        if (count > 0 && done > 0) {
            iov->iov_base = (char *)iov->iov_base + done;
            iov->iov_len -= (size_t)done;
        }
    }
    return 0;
}

static int as_fd(PyObject *obj, int *fd) {
    long value = PyLong_AsLong(obj);
    if (value == -1 && PyErr_Occurred()) return -1;
    if (value < INT_MIN || value > INT_MAX) {
        PyErr_SetString(PyExc_OverflowError, "file descriptor out of range");
        return -1;
    }
    *fd = (int)value;
    return 0;
}

static int sync_one(int fd, int whole) {
    int rc;
    do rc = whole ? fsync(fd) : fdatasync(fd);
    while (rc != 0 && errno == EINTR);
    return rc == 0 ? 0 : errno;
}

/* The syncs of a round side by side: the filesystem folds concurrent syncs into one journal
   commit, where one after another each small append's fdatasync waits for a commit of its own.
   At most MAX_SYNC_THREADS threads (a round may name hundreds of files): the calling thread and
   each started one take every k-th file. A thread that cannot be started: its files are synced
   here, after the others. */
#define MAX_SYNC_THREADS 32

typedef struct {
    int fd, whole, err;
} Sync;

typedef struct {
    Sync *syncs;
    Py_ssize_t n, first, step;
    pthread_t thread;
    int started;
} Share;

static void *sync_share(void *arg) {
    Share *share = arg;
    for (Py_ssize_t i = share->first; i < share->n; i += share->step)
        share->syncs[i].err = sync_one(share->syncs[i].fd, share->syncs[i].whole);
    return NULL;
}

static int sync_all(Sync *syncs, Py_ssize_t n) {
    Py_ssize_t step = n < MAX_SYNC_THREADS ? n : MAX_SYNC_THREADS;
    Share shares[MAX_SYNC_THREADS];
    for (Py_ssize_t t = 0; t < step; t++) {
        shares[t] = (Share){.syncs = syncs, .n = n, .first = t, .step = step, .started = 0};
        if (t > 0) shares[t].started = pthread_create(&shares[t].thread, NULL, sync_share, &shares[t]) == 0;
    }
    if (step > 0) sync_share(&shares[0]);
    for (Py_ssize_t t = 1; t < step; t++) {
        if (shares[t].started) pthread_join(shares[t].thread, NULL);
        else sync_share(&shares[t]);
    }
    for (Py_ssize_t i = 0; i < n; i++)
        if (syncs[i].err) return syncs[i].err;
    return 0;
}

static PyObject *write_and_sync(PyObject *self, PyObject *args) {
    PyObject *writes_obj, *fds_obj;
    int directory;
    if (!PyArg_ParseTuple(args, "OOi", &writes_obj, &fds_obj, &directory)) return NULL;
    PyObject *writes = PySequence_Fast(writes_obj, "writes must be a sequence");
    if (writes == NULL) return NULL;
    PyObject *fds = PySequence_Fast(fds_obj, "fds must be a sequence");
    if (fds == NULL) { Py_DECREF(writes); return NULL; }
    Py_ssize_t nw = PySequence_Fast_GET_SIZE(writes), nf = PySequence_Fast_GET_SIZE(fds), total = 0, held = 0;
    PyObject *result = NULL;
    Write *ws = PyMem_Calloc(nw ? nw : 1, sizeof *ws);
    Sync *syncs = PyMem_Calloc(nf + 1, sizeof *syncs);
    Py_buffer *bufs = NULL;
    struct iovec *iov = NULL;
    PyObject **chunk_lists = PyMem_Calloc(nw ? nw : 1, sizeof *chunk_lists);
    if (ws == NULL || syncs == NULL || chunk_lists == NULL) { PyErr_NoMemory(); goto done; }
    for (Py_ssize_t i = 0; i < nw; i++) {
        PyObject *item = PySequence_Tuple(PySequence_Fast_GET_ITEM(writes, i)), *chunks;
        long long offset;
        if (item == NULL) goto done;
        int parsed = PyArg_ParseTuple(item, "iLO", &ws[i].fd, &offset, &chunks);
        if (parsed) Py_INCREF(chunks);
        Py_DECREF(item);
        if (!parsed) goto done;
        ws[i].offset = (off_t)offset;
        chunk_lists[i] = PySequence_Fast(chunks, "chunks must be a sequence");
        Py_DECREF(chunks);
        if (chunk_lists[i] == NULL) goto done;
        ws[i].first = total;
        ws[i].count = PySequence_Fast_GET_SIZE(chunk_lists[i]);
        total += ws[i].count;
    }
    for (Py_ssize_t i = 0; i < nf; i++) {
        if (as_fd(PySequence_Fast_GET_ITEM(fds, i), &syncs[i].fd) < 0) goto done;
    }
    bufs = PyMem_Calloc(total ? total : 1, sizeof *bufs);
    iov = PyMem_Calloc(total ? total : 1, sizeof *iov);
    if (bufs == NULL || iov == NULL) { PyErr_NoMemory(); goto done; }
    for (Py_ssize_t i = 0; i < nw; i++) {
        for (Py_ssize_t k = 0; k < ws[i].count; k++) {
            Py_ssize_t j = ws[i].first + k;
            if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(chunk_lists[i], k), &bufs[j], PyBUF_SIMPLE) < 0) goto done;
            held = j + 1;
            iov[j].iov_base = bufs[j].buf;
            iov[j].iov_len = (size_t)bufs[j].len;
        }
    }
    int err = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < nw && !err; i++) err = write_all(ws[i].fd, ws[i].offset, iov + ws[i].first, ws[i].count);
    Py_ssize_t ns = nf;
    if (directory >= 0) {
        syncs[ns].fd = directory;
        syncs[ns++].whole = 1;
    }
    if (!err) err = sync_all(syncs, ns);
    Py_END_ALLOW_THREADS
    if (err) {
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
    } else {
        result = Py_None;
        Py_INCREF(result);
    }
done:
    for (Py_ssize_t j = 0; j < held; j++) PyBuffer_Release(&bufs[j]);
    if (chunk_lists) for (Py_ssize_t i = 0; i < nw; i++) Py_XDECREF(chunk_lists[i]);
    PyMem_Free(bufs);
    PyMem_Free(iov);
    PyMem_Free(ws);
    PyMem_Free(syncs);
    PyMem_Free(chunk_lists);
    Py_DECREF(writes);
    Py_DECREF(fds);
    return result;
}

static PyMethodDef methods[] = {
    {"write_and_sync", write_and_sync, METH_VARARGS, "write_and_sync(writes, fds, directory_fd)"},
    {NULL, NULL, 0, NULL},
};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, .m_name = "_durable", .m_size = -1, .m_methods = methods};
PyMODINIT_FUNC PyInit__durable(void) { return PyModule_Create(&module); }
