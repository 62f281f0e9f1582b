/* POST /v1/snapshots/{id}/wake: a lazy wake (docs/lazy-wake.md).
 *   {"mode": "file"}                 the paths of the snapshot's files in the FUSE view the
 *                                    config names ("mount": a `cairn mount` of this store)
 *   {"mode": "uffd", "socket": PATH} starts `cairn uffd-serve` on PATH (below a restore
 *                                    root) and answers once it listens; PATH's folder is
 *                                    opened once, beneath the root, and the page server
 *                                    binds through that descriptor (sock_open)
 * Both record a restore event (activity) first: when it cannot be, the wake is a 500. The page server is a process of its own, not a
 * thread of the API: the VM hangs if its handler dies, so a restart of the API must not
 * take it down; it is detached (double fork) so nothing here has to reap it.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <pthread.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "api/routes.h"
#include "store/toolbox.h"

/* The page servers this process started and that may still run: one pidfd each (it turns
 * readable when the server exits). Shared by every worker thread, under ps_mu. */
#define PS_MAX 1024
static pthread_mutex_t ps_mu = PTHREAD_MUTEX_INITIALIZER;
static int ps_fd[PS_MAX];
static int ps_n;

/* Forgets the servers that exited; returns how many still run. Under ps_mu. */
static int ps_running(void)
{
    int keep = 0;
    for (int i = 0; i < ps_n; i++) {
        struct pollfd pf = {.fd = ps_fd[i], .events = POLLIN};
        if (poll(&pf, 1, 0) != 0) close(ps_fd[i]);      /* exited (or the fd is broken) */
        else ps_fd[keep++] = ps_fd[i];
    }
    ps_n = keep;
    return ps_n;
}

/* The socket's name for the page server: its folder is the descriptor 3 it inherits. */
#define SOCK_DIR_FD 3
#define SOCK_VIA "/proc/self/fd/3/"

/* Starts `cairn uffd-serve` detached, its socket NAME in the folder dirfd (passed as its
 * descriptor 3); returns its pid or a negative code. */
static pid_t spawn_server(const char *store_dir, const char *id, int dirfd, const char *name, int wait_s,
                          store_err *e)
{
    char wait_arg[16], sock[sizeof SOCK_VIA + 256];
    snprintf(wait_arg, sizeof wait_arg, "%d", wait_s);
    snprintf(sock, sizeof sock, "%s%s", SOCK_VIA, name);
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n < 0) return store_errf(e, -errno, "/proc/self/exe: %s", strerror(errno));
    exe[n] = 0;
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) < 0) return store_errf(e, -errno, "pipe: %s", strerror(errno));
    pid_t mid = fork();
    if (mid < 0) {
        int err = errno;
        close(pfd[0]);
        close(pfd[1]);
        return store_errf(e, -err, "fork: %s", strerror(err));
    }
    if (mid == 0) {
        /* Only async-signal-safe calls between fork and exec: the API is multithreaded. */
        setsid();
        pid_t pid = fork();
        if (pid == 0) {
            int devnull = open("/dev/null", O_RDWR);
            if (devnull >= 0) {
                dup2(devnull, 0);
                dup2(devnull, 1);      /* its JSON summary has no reader; stderr stays the API's log */
            }
            /* The checked folder, as descriptor 3 without close-on-exec (dup2 onto itself
             * would keep the flag). */
            if (dirfd == SOCK_DIR_FD ? fcntl(dirfd, F_SETFD, 0) < 0 : dup2(dirfd, SOCK_DIR_FD) < 0) _exit(126);
            /* Nothing else of the API's: a page server holding its listening socket would
             * keep the port after the API restarts. */
            close_range(SOCK_DIR_FD + 1, ~0u, 0);
            char *argv[] = {exe, "uffd-serve", "--store", (char *)store_dir, "--snapshot", (char *)id,
                            "--socket", sock, "--accept-timeout", wait_arg, NULL};
            execv(exe, argv);
            _exit(127);
        }
        ssize_t w = write(pfd[1], &pid, sizeof pid);
        _exit(w == (ssize_t)sizeof pid && pid > 0 ? 0 : 1);
    }
    close(pfd[1]);
    pid_t pid = -1;
    ssize_t r = read(pfd[0], &pid, sizeof pid);
    close(pfd[0]);
    int st = 0;
    while (waitpid(mid, &st, 0) < 0 && errno == EINTR) {}
    if (r != (ssize_t)sizeof pid || pid <= 0) return store_errf(e, -ECHILD, "could not start the page server");
    return pid;
}

/* The socket's folder, opened once beneath a restore root (api_path_open_output), before
 * anything else: the page server binds in that folder through its descriptor, so a
 * symlink swapped in on the way after this check leads nowhere. 0, or -1 after api_fail. */
typedef struct {
    int dirfd;
    char *name, *shown;
} sock_place;

static int sock_open(api_req *r, sock_place *p)
{
    const char *sock = NULL;
    p->dirfd = -1;
    p->name = p->shown = NULL;
    if (api_body_str(r, "socket", 1, &sock)) return -1;
    const api_config *cfg = api_cfg(r);
    store_err e;
    int rc = api_path_open_output(cfg->restore_roots, cfg->nrestore_roots, sock, &p->dirfd, &p->name, &p->shown, &e);
    if (rc) {
        api_fail_store(r, rc, &e);
        return -1;
    }
    /* The page server binds SOCK_VIA NAME.PID.tmp (restore/uffd.c), in a sun_path of 108. */
    size_t max = sizeof ((struct sockaddr_un *)0)->sun_path - 1 - strlen(SOCK_VIA) - strlen(".4194304.tmp");
    if (strlen(p->name) > max) {
        api_fail(r, 400, "bad_request", "the socket's name %s is longer than %zu bytes", p->name, max);
        return -1;
    }
    return 0;
}

static void sock_close(sock_place *p)
{
    if (p->dirfd >= 0) close(p->dirfd);
    free(p->name);
    free(p->shown);
}

/* The socket's path now (its folder may have been renamed since the check). */
static char *sock_shown(const sock_place *p)
{
    char link[64], real[PATH_MAX];
    snprintf(link, sizeof link, "/proc/self/fd/%d", p->dirfd);
    ssize_t n = readlink(link, real, sizeof real - 1);
    if (n < 0) return strdup(p->shown);
    real[n] = 0;
    char *out = NULL;
    if (asprintf(&out, "%s/%s", strcmp(real, "/") ? real : "", p->name) < 0) return NULL;
    return out;
}

static void wake_uffd(api_req *r, const store_snapshot *snap, const sock_place *sp)
{
    const api_config *cfg = api_cfg(r);
    store_err e;
    struct stat st;
    if (fstatat(sp->dirfd, sp->name, &st, AT_SYMLINK_NOFOLLOW) == 0)
        return api_fail(r, 409, "exists", "%s exists already", sp->shown);
    if (pthread_mutex_lock(&ps_mu)) return api_fail(r, 500, "wake_failed", "page server table: lock failed");
    if (ps_running() >= cfg->max_page_servers) {
        pthread_mutex_unlock(&ps_mu);
        return api_fail(r, 429, "busy", "%d page servers are running (limits.max_page_servers): retry later",
                        cfg->max_page_servers);
    }
    pid_t pid = spawn_server(api_store_dir(r), snap->id, sp->dirfd, sp->name, cfg->page_server_wait_s, &e);
    if (pid < 0) {
        pthread_mutex_unlock(&ps_mu);
        return api_fail(r, 500, "wake_failed", "%s", e.msg);
    }
    int pfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (pfd >= 0) {
        ps_fd[ps_n++] = pfd;        /* ps_n < max_page_servers <= PS_MAX */
    } else if (errno != ESRCH) {    /* ESRCH: it exited already, nothing to count */
        int err = errno;
        pthread_mutex_unlock(&ps_mu);
        kill(pid, SIGTERM);
        return api_fail(r, 500, "wake_failed", "pidfd_open of the page server: %s", strerror(err));
    }
    pthread_mutex_unlock(&ps_mu);
    /* The socket file appears only once the server listens (restore/uffd.c). */
    for (int i = 0; i < 1000; i++) {
        if (fstatat(sp->dirfd, sp->name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISSOCK(st.st_mode)) {
            char *shown = sock_shown(sp);
            if (!shown) {
                kill(pid, SIGTERM);
                return api_fail(r, 500, "wake_failed", "out of memory");
            }
            api_ok(r, 200, json_pack("{s:s, s:s, s:s, s:s, s:i}", "snapshot", snap->id, "sandbox", snap->sandbox,
                                     "mode", "uffd", "socket", shown, "pid", (int)pid));
            free(shown);
            return;
        }
        if (kill(pid, 0) < 0 && errno == ESRCH) break;    /* it exited: its stderr says why */
        struct timespec ts = {0, 10000000};
        nanosleep(&ts, NULL);
    }
    kill(pid, SIGTERM);
    api_fail(r, 500, "wake_failed",
             "the page server did not listen on %s (see the server's log, where the socket is %s%s)", sp->shown,
             SOCK_VIA, sp->name);
}

static void wake_file(api_req *r, const store_snapshot *snap)
{
    const api_config *cfg = api_cfg(r);
    if (!cfg->mount[0])
        return api_fail(r, 409, "no_mount", "this server has no \"mount\" in its config: run `cairn mount` "
                        "of the store and name its mount point there");
    char path[4200];
    struct stat st;
    snprintf(path, sizeof path, "%s/snapshots/%s/memory", cfg->mount, snap->id);
    if (stat(path, &st) < 0)
        return api_fail(r, 503, "mount_unavailable", "%s: %s (is `cairn mount` running on %s?)", path,
                        strerror(errno), cfg->mount);
    json_t *j = json_pack("{s:s, s:s, s:s, s:s}", "snapshot", snap->id, "sandbox", snap->sandbox, "mode", "file",
                          "memory", path);
    for (int i = 0; j && i < snap->nblobs; i++) {
        if (!strcmp(snap->blobs[i].name, "memory")) continue;
        snprintf(path, sizeof path, "%s/snapshots/%s/%s", cfg->mount, snap->id, snap->blobs[i].name);
        json_object_set_new(j, snap->blobs[i].name, json_string(path));
    }
    api_ok(r, 200, j);
}

void r_snapshot_wake(api_req *r)
{
    const char *mode = NULL;
    if (api_body_str(r, "mode", 1, &mode)) return;
    if (strcmp(mode, "file") && strcmp(mode, "uffd"))
        return api_fail(r, 400, "bad_request", "mode is \"file\" or \"uffd\", not \"%s\"", mode);
    sock_place sp = {.dirfd = -1};
    if (!strcmp(mode, "uffd") && sock_open(r, &sp)) return sock_close(&sp);
    store_t *s = api_store(r, STORE_READ);
    if (!s) return sock_close(&sp);
    store_snapshot *snap = api_load_snapshot(r, s);
    int has_memory = 0;
    for (int i = 0; snap && i < snap->nblobs; i++) has_memory |= !strcmp(snap->blobs[i].name, "memory");
    int go = 0;
    if (!snap) {}
    else if (snap->kind == STORE_KIND_FILES)
        api_fail(r, 410, "reclaimed", "snapshot %s was reclaimed: only its important files are kept", snap->id);
    else if (!has_memory) api_fail(r, 409, "no_memory", "snapshot %s has no memory file", snap->id);
    else go = api_activity(r, s, STORE_EV_RESTORE, snap->sandbox) == 0;
    api_store_done(r, STORE_READ);
    if (go && !strcmp(mode, "file")) wake_file(r, snap);
    else if (go) wake_uffd(r, snap, &sp);
    store_snapshot_free(snap);
    sock_close(&sp);
}
