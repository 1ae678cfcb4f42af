/* A C client of Quarry's librbd/librados, linked as QEMU is (librbd.so.1 and librados.so.2):
 * completion lifetimes, callbacks on a library thread, close racing in-flight I/O, the
 * poll-mode events fio uses, and librbd's errors for bad arguments. Prints what fails and
 * exits non-zero. Run by tests/tools.rs against a `quarry up` cluster (CEPH_CONF set).
 * Prototypes are declared here (as in Ceph's public headers) so no -dev package is needed. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/types.h>
#include <unistd.h>

typedef void *rados_t;
typedef void *rados_ioctx_t;
typedef void *rbd_image_t;
typedef void *rbd_completion_t;
typedef void (*rbd_callback_t)(rbd_completion_t cb, void *arg);

int rados_create(rados_t *cluster, const char *id);
int rados_conf_read_file(rados_t cluster, const char *path);
int rados_conf_set(rados_t cluster, const char *option, const char *value);
int rados_conf_get(rados_t cluster, const char *option, char *buf, size_t len);
int rados_connect(rados_t cluster);
void rados_shutdown(rados_t cluster);
int rados_ioctx_create(rados_t cluster, const char *pool, rados_ioctx_t *io);
void rados_ioctx_destroy(rados_ioctx_t io);
typedef void *rados_completion_t;
typedef void (*rados_callback_t)(rados_completion_t cb, void *arg);
int rados_write_full(rados_ioctx_t io, const char *oid, const char *buf, size_t len);
int rados_read(rados_ioctx_t io, const char *oid, char *buf, size_t len, uint64_t off);
int rados_aio_create_completion(void *arg, rados_callback_t complete, rados_callback_t safe,
                                rados_completion_t *pc);
int rados_aio_write(rados_ioctx_t io, const char *oid, rados_completion_t c, const char *buf,
                    size_t len, uint64_t off);
int rados_aio_read(rados_ioctx_t io, const char *oid, rados_completion_t c, char *buf,
                   size_t len, uint64_t off);
int rados_aio_wait_for_complete(rados_completion_t c);
int rados_aio_wait_for_complete_and_cb(rados_completion_t c);
int rados_aio_get_return_value(rados_completion_t c);
void rados_aio_release(rados_completion_t c);
int rbd_create(rados_ioctx_t io, const char *name, uint64_t size, int *order);
int rbd_open(rados_ioctx_t io, const char *name, rbd_image_t *image, const char *snap);
int rbd_close(rbd_image_t image);
int rbd_get_size(rbd_image_t image, uint64_t *size);
int rbd_aio_create_completion(void *arg, rbd_callback_t cb, rbd_completion_t *c);
int rbd_aio_write(rbd_image_t image, uint64_t off, size_t len, const char *buf,
                  rbd_completion_t c);
int rbd_aio_read(rbd_image_t image, uint64_t off, size_t len, char *buf, rbd_completion_t c);
struct iovec;
int rbd_aio_compare_and_write(rbd_image_t image, uint64_t off, size_t len, const char *cmp_buf,
                              const char *buf, rbd_completion_t c, uint64_t *mismatch_off,
                              int op_flags);
int rbd_aio_writev(rbd_image_t image, const struct iovec *iov, int iovcnt, uint64_t off,
                   rbd_completion_t c);
int rbd_aio_flush(rbd_image_t image, rbd_completion_t c);
int rbd_flush(rbd_image_t image);
int rbd_aio_wait_for_complete(rbd_completion_t c);
int rbd_aio_is_complete(rbd_completion_t c);
ssize_t rbd_aio_get_return_value(rbd_completion_t c);
void *rbd_aio_get_arg(rbd_completion_t c);
void rbd_aio_release(rbd_completion_t c);
ssize_t rbd_read(rbd_image_t image, uint64_t off, size_t len, char *buf);
int rbd_set_image_notification(rbd_image_t image, int fd, int type);
int rbd_poll_io_events(rbd_image_t image, rbd_completion_t *comps, int numcomp);
int rbd_stat(rbd_image_t image, void *info, size_t infosize);
int rbd_encryption_load(rbd_image_t image, int format, void *opts, size_t size);
int rbd_resize(rbd_image_t image, uint64_t size);
int rbd_update_watch(rbd_image_t image, uint64_t *handle, void (*cb)(void *), void *arg);
int rbd_update_unwatch(rbd_image_t image, uint64_t handle);
int rbd_diff_iterate2(rbd_image_t image, const char *fromsnapname, uint64_t ofs, uint64_t len,
                      uint8_t include_parent, uint8_t whole_object,
                      int (*cb)(uint64_t, size_t, int, void *), void *arg);
int rbd_snap_create(rbd_image_t image, const char *snapname);
int rbd_snap_remove(rbd_image_t image, const char *snapname);

#define N 256
#define PIECE (64 * 1024)


static int failures;
#define CHECK(cond, ...)                                                                       \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            fprintf(stderr, "FAILED line %d: %s: ", __LINE__, #cond);                          \
            fprintf(stderr, __VA_ARGS__);                                                      \
            fprintf(stderr, "\n");                                                             \
            failures++;                                                                        \
        }                                                                                      \
    } while (0)

static pthread_t main_thread;
static atomic_int callbacks, bad_returns, on_caller_thread;

/* QEMU's pattern: read the result and release the completion inside the callback. */
static void release_in_callback(rbd_completion_t c, void *arg) {
    if (rbd_aio_get_return_value(c) != 0) atomic_fetch_add(&bad_returns, 1);
    if (rbd_aio_get_arg(c) != arg) atomic_fetch_add(&bad_returns, 1);
    if (pthread_equal(pthread_self(), main_thread)) atomic_fetch_add(&on_caller_thread, 1);
    rbd_aio_release(c);
    usleep(1000); /* a slow callback: rbd_close must still wait for it */
    atomic_fetch_add(&callbacks, 1);
}

static void count_only(rbd_completion_t c, void *arg) {
    (void)c;
    (void)arg;
    atomic_fetch_add(&callbacks, 1);
}

/* A write's callback; the last write's (arg 1) takes 100 ms: a flush's callback must still
 * come after it. */
static void slow_count(rbd_completion_t c, void *arg) {
    (void)c;
    if (arg) usleep(100000);
    atomic_fetch_add(&callbacks, 1);
}

static atomic_int updates;
static void on_update(void *arg) {
    if (arg == (void *)&updates) atomic_fetch_add(&updates, 1);
}

/* A flush's callback: how many write callbacks had run by then. */
static atomic_int seen_at_flush = -1;
static void flush_done(rbd_completion_t c, void *arg) {
    (void)arg;
    atomic_store(&seen_at_flush, atomic_load(&callbacks));
    rbd_aio_release(c);
}

/* Callbacks that make blocking calls into the library, as librbd lets its callbacks do: a
 * synchronous read, and a request started and waited for. Callbacks run on the library's
 * runtime workers: a wait there must not hold up the request it waits for (a request
 * started from a worker is that worker's next task, which no other worker takes). */
static rbd_image_t nested_image;
static atomic_int nested_done, nested_bad;
static void blocking_in_callback(rbd_completion_t c, void *arg) {
    (void)arg;
    char buf[4096];
    if (rbd_aio_get_return_value(c) != 0) atomic_fetch_add(&nested_bad, 1);
    rbd_aio_release(c);
    /* The wait first: a synchronous call before it would move the callback off its worker. */
    rbd_completion_t inner;
    if (rbd_aio_create_completion(NULL, NULL, &inner) != 0) {
        atomic_fetch_add(&nested_bad, 1);
    } else {
        if (rbd_aio_read(nested_image, 4096, sizeof buf, buf, inner) != 0)
            atomic_fetch_add(&nested_bad, 1);
        rbd_aio_wait_for_complete(inner);
        if (rbd_aio_get_return_value(inner) != (ssize_t)sizeof buf)
            atomic_fetch_add(&nested_bad, 1);
        rbd_aio_release(inner);
    }
    if (rbd_read(nested_image, 0, sizeof buf, buf) != (ssize_t)sizeof buf)
        atomic_fetch_add(&nested_bad, 1);
    atomic_fetch_add(&nested_done, 1);
}

/* The same from librados' asynchronous calls (fio's rados engine, python-rados). */
static rados_ioctx_t nested_io;
static void rados_blocking_in_callback(rados_completion_t c, void *arg) {
    (void)arg;
    char buf[4096];
    if (rados_aio_get_return_value(c) != 0) atomic_fetch_add(&nested_bad, 1);
    /* The wait first: a synchronous call before it would move the callback off its worker. */
    rados_completion_t inner;
    if (rados_aio_create_completion(NULL, NULL, NULL, &inner) != 0) {
        atomic_fetch_add(&nested_bad, 1);
    } else {
        if (rados_aio_read(nested_io, "nested", inner, buf, sizeof buf, 0) != 0)
            atomic_fetch_add(&nested_bad, 1);
        rados_aio_wait_for_complete(inner);
        if (rados_aio_get_return_value(inner) != (int)sizeof buf)
            atomic_fetch_add(&nested_bad, 1);
        rados_aio_release(inner);
    }
    if (rados_read(nested_io, "nested", buf, sizeof buf, 0) != (int)sizeof buf)
        atomic_fetch_add(&nested_bad, 1);
    atomic_fetch_add(&nested_done, 1);
}

/* A write's callback that flushes, synchronously and asynchronously (waiting for it): the
 * flush covers the write whose callback makes it and must not wait for that callback. */
static atomic_int flushed_in_callback, flush_bad;
static void flush_in_callback(rbd_completion_t c, void *arg) {
    rbd_image_t img = arg;
    rbd_aio_release(c);
    if (rbd_flush(img) != 0) atomic_fetch_add(&flush_bad, 1);
    rbd_completion_t f;
    if (rbd_aio_create_completion(NULL, NULL, &f) != 0) {
        atomic_fetch_add(&flush_bad, 1);
    } else {
        if (rbd_aio_flush(img, f) != 0) atomic_fetch_add(&flush_bad, 1);
        rbd_aio_wait_for_complete(f);
        if (rbd_aio_get_return_value(f) != 0) atomic_fetch_add(&flush_bad, 1);
        rbd_aio_release(f);
    }
    atomic_fetch_add(&flushed_in_callback, 1);
}

/* A callback that starts a request, then waits for a lock that a thread waiting for that
 * request holds: the request must not be held back by the blocked callback. */
static pthread_mutex_t app_lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic(rbd_completion_t) follow_up;
static atomic_int follow_up_done;
static void submit_then_lock(rbd_completion_t c, void *arg) {
    rbd_image_t img = arg;
    static char block[4096];
    rbd_aio_release(c);
    rbd_completion_t next;
    if (rbd_aio_create_completion(NULL, NULL, &next) != 0 ||
        rbd_aio_write(img, 1 << 20, sizeof block, block, next) != 0) {
        atomic_fetch_add(&flush_bad, 1);
        return;
    }
    atomic_store(&follow_up, next);
    pthread_mutex_lock(&app_lock);
    pthread_mutex_unlock(&app_lock);
    atomic_fetch_add(&follow_up_done, 1);
}

/* Writes `n` blocks of `data` to `image` at 4 KiB steps, each completion calling `cb` with
 * `arg`, then waits up to 60 s for `*done` to reach `n`; a hang ends the program (a callback
 * stuck for good would also hold up rbd_close). */
static void writes_whose_callbacks_end(rbd_image_t image, int n, const char *data,
                                       rbd_callback_t cb, void *arg, atomic_int *done,
                                       const char *what) {
    for (int i = 0; i < n; i++) {
        rbd_completion_t c;
        CHECK(rbd_aio_create_completion(arg, cb, &c) == 0, "completion");
        CHECK(rbd_aio_write(image, (uint64_t)i * 4096, 4096, data, c) == 0, "write %d", i);
    }
    for (int i = 0; i < 6000 && atomic_load(done) < n; i++) usleep(10000);
    if (atomic_load(done) < n) {
        fprintf(stderr, "FAILED: %d of %d callbacks %s ended in 60 s\n", atomic_load(done), n,
                what);
        _exit(1);
    }
}

/* A callback of one image's request that closes another image: rbd_close still waits for
 * that image's requests and their (slow) callbacks. */
static rbd_image_t closed_in_callback;
static atomic_int slow_done, slow_done_at_close = -1;
static void slow_callback(rbd_completion_t c, void *arg) {
    (void)arg;
    rbd_aio_release(c);
    usleep(50000);
    atomic_fetch_add(&slow_done, 1);
}
static void close_other_in_callback(rbd_completion_t c, void *arg) {
    (void)arg;
    rbd_aio_release(c);
    if (rbd_close(closed_in_callback) != 0) atomic_fetch_add(&flush_bad, 1);
    atomic_store(&slow_done_at_close, atomic_load(&slow_done));
}

static void wait_callbacks(int n) {
    for (int i = 0; i < 3000 && atomic_load(&callbacks) < n; i++) usleep(10000);
}

/* QEMU makes some blocking calls from coroutines, on 1 MiB stacks (block status:
 * rbd_diff_iterate2; resize: rbd_resize; snapshots): the library drives their futures on the
 * caller's stack, which must be enough. Measured with these calls: a release build needs
 * 64 KiB (128 KiB before block_on boxed its future), the debug build these tests use
 * ~768 KiB (512 KiB crashed). Run on a thread with QEMU's coroutine stack size. */
#define SMALL_STACK (1024 * 1024)

static int count_extent(uint64_t off, size_t len, int exists, void *arg) {
    (void)off;
    (void)len;
    if (exists) ++*(int *)arg;
    return 0;
}

static void *blocking_calls(void *arg) {
    rados_ioctx_t io = arg;
    rbd_image_t image;
    int order = 0, extents = 0;
    uint64_t size = 0;
    CHECK(rbd_create(io, "coroutine", 16 << 20, &order) == 0, "small stack: create");
    CHECK(rbd_open(io, "coroutine", &image, NULL) == 0, "small stack: open");
    char info[256];
    CHECK(rbd_stat(image, info, sizeof info) == 0, "small stack: stat");
    static char block[4096];
    memset(block, 7, sizeof block);
    rbd_completion_t c;
    CHECK(rbd_aio_create_completion(NULL, NULL, &c) == 0, "small stack: completion");
    CHECK(rbd_aio_write(image, 4 << 20, sizeof block, block, c) == 0, "small stack: write");
    rbd_aio_wait_for_complete(c);
    CHECK(rbd_aio_get_return_value(c) == 0, "small stack: write result");
    rbd_aio_release(c);
    CHECK(rbd_snap_create(image, "s") == 0, "small stack: snap create");
    CHECK(rbd_diff_iterate2(image, NULL, 0, 16 << 20, 1, 1, count_extent, &extents) == 0,
          "small stack: diff_iterate2");
    CHECK(extents == 1, "small stack: %d extents with data, not 1", extents);
    CHECK(rbd_resize(image, 32 << 20) == 0, "small stack: resize");
    CHECK(rbd_get_size(image, &size) == 0 && size == 32 << 20, "small stack: size");
    CHECK(rbd_snap_remove(image, "s") == 0, "small stack: snap remove");
    CHECK(rbd_close(image) == 0, "small stack: close");
    return NULL;
}

int main(void) {
    rados_t cluster;
    rados_ioctx_t io;
    rbd_image_t image;
    main_thread = pthread_self();

    CHECK(rados_create(&cluster, NULL) == 0, "create");
    CHECK(rados_conf_read_file(cluster, NULL) == 0, "read_file");
    CHECK(rados_conf_set(cluster, "rbd_cache", "true") == 0, "rbd_cache");
    CHECK(rados_conf_set(cluster, "some_ceph_option_quarry_lacks", "1") == 0, "unknown key");
    char buf[64];
    CHECK(rados_conf_get(cluster, "some_ceph_option_quarry_lacks", buf, sizeof buf) == 0 &&
              strcmp(buf, "1") == 0,
          "conf_get of a stored key");
    CHECK(rados_conf_get(cluster, "rbd_cache", buf, 2) == -ENAMETOOLONG, "short buffer");
    int r = rados_connect(cluster);
    CHECK(r == 0, "connect: %d", r);
    if (r) return 1;
    CHECK(rados_ioctx_create(cluster, "nopool", &io) == -ENOENT, "unknown pool");
    CHECK(rados_ioctx_create(cluster, "rbd", &io) == 0, "ioctx");

    int order = 0;
    r = rbd_create(io, "race", 64 << 20, &order);
    CHECK(r == 0 && order == 22, "rbd_create: %d order %d", r, order);
    CHECK(rbd_create(io, "race", 1 << 20, &order) == -EEXIST, "EEXIST");
    CHECK(rbd_open(io, "nope", &image, NULL) == -ENOENT, "open missing");
    CHECK(rbd_stat(NULL, buf, sizeof buf) == -EINVAL, "stat NULL image");
    CHECK(rbd_open(io, "race", &image, NULL) == 0, "open");
    CHECK(rbd_encryption_load(image, 0, NULL, 0) == -EOPNOTSUPP, "encryption");
    CHECK(rbd_aio_write(image, 0, 4, "abcd", NULL) == -EINVAL, "NULL completion");

    /* N writes of distinct patterns, completions released in their callbacks, then close at
     * once while they are in flight. */
    char *data = malloc((size_t)N * PIECE);
    for (int i = 0; i < N; i++) memset(data + (size_t)i * PIECE, 'A' + i % 26, PIECE);
    for (int i = 0; i < N; i++) {
        rbd_completion_t c;
        CHECK(rbd_aio_create_completion((void *)(intptr_t)(i + 1), release_in_callback, &c) == 0,
              "completion");
        CHECK(rbd_aio_write(image, (uint64_t)i * PIECE, PIECE, data + (size_t)i * PIECE, c) == 0,
              "aio_write %d", i);
    }
    CHECK(rbd_close(image) == 0, "close racing in-flight writes");
    /* rbd_close returns once every request has ended and its callback has run. */
    CHECK(atomic_load(&callbacks) == N, "callbacks %d of %d when rbd_close returned",
          atomic_load(&callbacks), N);
    CHECK(atomic_load(&bad_returns) == 0, "bad returns %d", atomic_load(&bad_returns));
    CHECK(atomic_load(&on_caller_thread) == 0, "callbacks on the caller's thread");

    /* Reopen: every write is there. */
    CHECK(rbd_open(io, "race", &image, NULL) == 0, "reopen");
    char *back = malloc((size_t)N * PIECE);
    ssize_t n = rbd_read(image, 0, (size_t)N * PIECE, back);
    CHECK(n == (ssize_t)N * PIECE, "read %zd", n);
    CHECK(memcmp(back, data, (size_t)N * PIECE) == 0, "data after close/reopen");
    uint64_t size = 0;
    CHECK(rbd_get_size(image, &size) == 0 && size == 64 << 20, "size");
    CHECK(rbd_read(image, (64 << 20) - 100, 4096, back) == 100, "short read at the end");
    CHECK(rbd_read(image, (64 << 20) + 4096, 4096, back) == -EINVAL, "read past the end");

    /* A completion released before its request ends; one without callback waited for. */
    atomic_store(&callbacks, 0);
    rbd_completion_t early;
    CHECK(rbd_aio_create_completion(NULL, count_only, &early) == 0, "completion");
    CHECK(rbd_aio_read(image, 0, PIECE, back, early) == 0, "aio_read");
    rbd_aio_release(early);
    wait_callbacks(1);
    CHECK(atomic_load(&callbacks) == 1, "callback after early release");
    rbd_completion_t waited;
    CHECK(rbd_aio_create_completion(NULL, NULL, &waited) == 0, "completion");
    memset(back, 0, PIECE);
    CHECK(rbd_aio_read(image, 5 * PIECE, PIECE, back, waited) == 0, "aio_read");
    CHECK(rbd_aio_wait_for_complete(waited) == 0, "wait");
    CHECK(rbd_aio_is_complete(waited) == 1, "is_complete");
    CHECK(rbd_aio_get_return_value(waited) == PIECE, "read returns its length");
    CHECK(memcmp(back, data + 5 * PIECE, PIECE) == 0, "aio_read data");
    rbd_aio_release(waited);

    /* fio's poll mode: completions come back through the eventfd, in completion order. */
    int efd = eventfd(0, 0);
    CHECK(rbd_set_image_notification(image, efd, 2) == 0, "notification");
    rbd_completion_t cs[8];
    for (int i = 0; i < 8; i++) {
        CHECK(rbd_aio_create_completion((void *)(intptr_t)(100 + i), NULL, &cs[i]) == 0, "c");
        CHECK(rbd_aio_read(image, (uint64_t)i * PIECE, 4096, back + i * 4096, cs[i]) == 0, "r");
    }
    int got = 0, seen[8] = {0};
    for (int tries = 0; got < 8 && tries < 3000; tries++) {
        uint64_t count;
        if (read(efd, &count, sizeof count) != sizeof count) break;
        rbd_completion_t out[8];
        int k = rbd_poll_io_events(image, out, 8);
        for (int j = 0; j < k; j++) {
            intptr_t arg = (intptr_t)rbd_aio_get_arg(out[j]);
            CHECK(arg >= 100 && arg < 108 && !seen[arg - 100], "poll arg %ld", (long)arg);
            if (arg >= 100 && arg < 108) seen[arg - 100] = 1;
            CHECK(rbd_aio_get_return_value(out[j]) == 4096, "poll return");
            got++;
        }
    }
    CHECK(got == 8, "polled %d of 8", got);
    for (int i = 0; i < 8; i++) rbd_aio_release(cs[i]);
    rbd_completion_t f;
    CHECK(rbd_aio_create_completion(NULL, NULL, &f) == 0, "c");
    CHECK(rbd_aio_flush(image, f) == 0, "flush");
    rbd_aio_wait_for_complete(f);
    CHECK(rbd_aio_get_return_value(f) == 0, "flush result");
    rbd_aio_release(f);

    /* Image change notifications: another handle resizes, the watcher hears of it. */
    uint64_t watch_handle;
    CHECK(rbd_update_watch(image, &watch_handle, on_update, &updates) == 0, "update_watch");
    rbd_image_t other;
    CHECK(rbd_open(io, "race", &other, NULL) == 0, "second handle");
    CHECK(rbd_resize(other, 128 << 20) == 0, "resize by the other handle");
    for (int i = 0; i < 500 && atomic_load(&updates) == 0; i++) usleep(10000);
    CHECK(atomic_load(&updates) >= 1, "update callback after a resize elsewhere");
    CHECK(rbd_update_unwatch(image, watch_handle) == 0, "update_unwatch");
    CHECK(rbd_update_unwatch(image, watch_handle) == -ENOENT, "unwatch twice");
    int before = atomic_load(&updates);
    CHECK(rbd_resize(other, 96 << 20) == 0, "resize again");
    usleep(300000);
    CHECK(atomic_load(&updates) == before, "no callback after unwatch");
    CHECK(rbd_get_size(image, &size) == 0 && size == 96 << 20, "size seen: %llu",
          (unsigned long long)size);
    /* A flush issued while writes are in flight completes after all of them (librbd: a
     * flush covers every write issued before it), and its callback runs after theirs.
     * Several rounds: a flush's callback once ran before the last write's (1 in ~4 runs);
     * the last write's callback takes 100 ms, so a flush that waited only for the writes'
     * I/O calls back during it. */
    for (int round = 0; round < 20; round++) {
        atomic_store(&callbacks, 0);
        atomic_store(&seen_at_flush, -1);
        for (int i = 0; i < 32; i++) {
            rbd_completion_t c;
            CHECK(rbd_aio_create_completion(i == 31 ? &c : NULL, slow_count, &c) == 0,
                  "completion");
            CHECK(rbd_aio_write(other, (uint64_t)i * PIECE, PIECE, data + (size_t)i * PIECE,
                                c) == 0,
                  "aio_write %d", i);
        }
        rbd_completion_t fl;
        CHECK(rbd_aio_create_completion(NULL, flush_done, &fl) == 0, "completion");
        CHECK(rbd_aio_flush(other, fl) == 0, "flush behind writes");
        for (int i = 0; i < 3000 && atomic_load(&seen_at_flush) < 0; i++) usleep(10000);
        CHECK(atomic_load(&seen_at_flush) == 32,
              "round %d: write callbacks run before the flush's: %d", round,
              atomic_load(&seen_at_flush));
    }
    /* compare-and-write: written when the bytes match, -EILSEQ and the offset otherwise. */
    char cmp[512], zs[512];
    memset(cmp, 'A', sizeof cmp);
    memset(zs, 'Z', sizeof zs);
    uint64_t mismatch = 12345;
    rbd_completion_t cw;
    CHECK(rbd_aio_create_completion(NULL, NULL, &cw) == 0, "completion");
    CHECK(rbd_aio_compare_and_write(other, 0, 512, cmp, zs, cw, &mismatch, 0) == 0, "caw");
    rbd_aio_wait_for_complete(cw);
    CHECK(rbd_aio_get_return_value(cw) == 512, "caw matched: %ld",
          (long)rbd_aio_get_return_value(cw));
    rbd_aio_release(cw);
    CHECK(rbd_aio_create_completion(NULL, NULL, &cw) == 0, "completion");
    CHECK(rbd_aio_compare_and_write(other, 0, 512, cmp, zs, cw, &mismatch, 0) == 0, "caw");
    rbd_aio_wait_for_complete(cw);
    CHECK(rbd_aio_get_return_value(cw) == -EILSEQ, "caw mismatch: %ld",
          (long)rbd_aio_get_return_value(cw));
    CHECK(mismatch == 0, "mismatch offset %llu", (unsigned long long)mismatch);
    rbd_aio_release(cw);
    /* No iovec is -EINVAL, as in librbd. */
    rbd_completion_t none;
    CHECK(rbd_aio_create_completion(NULL, NULL, &none) == 0, "completion");
    CHECK(rbd_aio_writev(other, NULL, 0, 0, none) == -EINVAL, "writev without iovec");
    rbd_aio_release(none);
    CHECK(rbd_close(other) == 0, "close second");

    /* Blocking calls inside callbacks, with 32 requests in flight: every callback ends (a
     * wait that held up its worker hung here for good, so give up after 60 s). */
    CHECK(rbd_open(io, "race", &nested_image, NULL) == 0, "open for nested calls");
    writes_whose_callbacks_end(nested_image, 32, data, blocking_in_callback, NULL, &nested_done,
                               "making blocking calls");
    CHECK(atomic_load(&nested_bad) == 0, "blocking calls in callbacks failed: %d",
          atomic_load(&nested_bad));
    writes_whose_callbacks_end(nested_image, 8, data, flush_in_callback, nested_image,
                               &flushed_in_callback, "flushing");
    pthread_mutex_lock(&app_lock);
    rbd_completion_t first;
    CHECK(rbd_aio_create_completion(nested_image, submit_then_lock, &first) == 0, "completion");
    CHECK(rbd_aio_write(nested_image, 0, 4096, data, first) == 0, "write");
    rbd_completion_t next = NULL;
    for (int i = 0; i < 3000 && !(next = atomic_load(&follow_up)); i++) usleep(10000);
    int ended = 0;
    for (int i = 0; next && i < 3000 && !(ended = rbd_aio_is_complete(next)); i++) usleep(10000);
    pthread_mutex_unlock(&app_lock);
    if (!ended) {
        fprintf(stderr, "FAILED: a request started by a callback that then blocks did not end in "
                        "30 s\n");
        _exit(1);
    }
    CHECK(rbd_aio_get_return_value(next) == 0, "follow-up write result");
    rbd_aio_release(next);
    for (int i = 0; i < 3000 && atomic_load(&follow_up_done) < 1; i++) usleep(10000);
    CHECK(atomic_load(&follow_up_done) == 1, "the blocked callback ended");
    CHECK(atomic_load(&flush_bad) == 0, "flushes or follow-ups in callbacks failed: %d",
          atomic_load(&flush_bad));
    CHECK(rbd_open(io, "race", &closed_in_callback, NULL) == 0, "open the image to close");
    for (int i = 0; i < 4; i++) {
        rbd_completion_t c;
        CHECK(rbd_aio_create_completion(NULL, slow_callback, &c) == 0, "completion");
        CHECK(rbd_aio_write(closed_in_callback, (uint64_t)i * 4096, 4096, data, c) == 0,
              "write %d", i);
    }
    rbd_completion_t closer;
    CHECK(rbd_aio_create_completion(NULL, close_other_in_callback, &closer) == 0, "completion");
    CHECK(rbd_aio_read(nested_image, 0, 4096, back, closer) == 0, "read");
    for (int i = 0; i < 3000 && atomic_load(&slow_done_at_close) < 0; i++) usleep(10000);
    CHECK(atomic_load(&slow_done_at_close) == 4,
          "rbd_close of another image in a callback returned after %d of its 4 callbacks",
          atomic_load(&slow_done_at_close));
    CHECK(rbd_close(nested_image) == 0, "close after nested calls");
    nested_io = io;
    atomic_store(&nested_done, 0);
    CHECK(rados_write_full(io, "nested", data, 4096) == 0, "write_full nested");
    rados_completion_t rcs[16];
    for (int i = 0; i < 16; i++) {
        char oid[32];
        snprintf(oid, sizeof oid, "nested-%d", i);
        CHECK(rados_aio_create_completion(NULL, rados_blocking_in_callback, NULL, &rcs[i]) == 0,
              "rados completion");
        CHECK(rados_aio_write(io, oid, rcs[i], data, 4096, 0) == 0, "rados aio_write %d", i);
    }
    for (int i = 0; i < 6000 && atomic_load(&nested_done) < 16; i++) usleep(10000);
    if (atomic_load(&nested_done) < 16) {
        fprintf(stderr, "FAILED: %d of 16 rados callbacks making blocking calls ended in 60 s\n",
                atomic_load(&nested_done));
        _exit(1);
    }
    for (int i = 0; i < 16; i++) {
        CHECK(rados_aio_wait_for_complete_and_cb(rcs[i]) == 0, "rados wait and cb");
        rados_aio_release(rcs[i]);
    }
    CHECK(atomic_load(&nested_bad) == 0, "blocking calls in rados callbacks failed: %d",
          atomic_load(&nested_bad));

    CHECK(rbd_close(image) == 0, "close");

    pthread_attr_t attr;
    pthread_t small;
    CHECK(pthread_attr_init(&attr) == 0, "attr");
    CHECK(pthread_attr_setstacksize(&attr, SMALL_STACK) == 0, "stack size");
    CHECK(pthread_create(&small, &attr, blocking_calls, io) == 0, "small-stack thread");
    pthread_join(small, NULL);
    pthread_attr_destroy(&attr);

    rados_ioctx_destroy(io);
    rados_shutdown(cluster);
    free(data);
    free(back);
    if (failures) {
        fprintf(stderr, "%d checks failed\n", failures);
        return 1;
    }
    printf("all checks passed\n");
    return 0;
}
