/*
 * dist_mpi.c — the MPI backend of dist.h (`make MPI=1`, Open MPI from Debian):
 * MPI_COMM_WORLD, host buffers, errors returned (not fatal) so the caller can
 * say what failed before aborting the job.
 *
 * A process not started by an MPI launcher stays a single rank and never calls
 * MPI_Init, so the MPI build also runs as a plain program.
 */
#include "dist.h"
#include "../core/common.h" // gn_err
#ifdef GN_HAVE_NCCL
#include "dist_nccl.h" // the GPU all-reduce (make NCCL=1)
#endif

#include <mpi.h>

#include <signal.h> // sigaction
#include <stdio.h>  // snprintf
#include <stdlib.h> // getenv, exit
#include <unistd.h> // write, _exit

static int g_on;      // MPI_Init done (launched by mpirun / srun)
static int g_done;    // MPI_Finalize done
static int g_rank, g_size = 1, g_local = 1;

// ---------------------------------------------------------------------------
// the launcher stopping us

// When one rank dies, mpirun terminates the others (SIGTERM, then SIGKILL). Say so
// on the way out, instead of vanishing silently. Only write(2) in the handler.
static char g_term_msg[256];
static size_t g_term_len;

static void on_sigterm(int sig) {
    (void)sig;
    ssize_t w = write(2, g_term_msg, g_term_len);
    (void)w;
    _exit(143);
}

static void install_term_handler(void) {
    int n = snprintf(g_term_msg, sizeof g_term_msg,
                     "guanaco: rank %d of %d: stopped by the MPI launcher (another rank failed or the job was cancelled); "
                     "checkpoints already written are complete: continue with --resume\n",
                     g_rank, g_size);
    g_term_len = n > 0 && (size_t)n < sizeof g_term_msg ? (size_t)n : 0;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigterm;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
}

// ---------------------------------------------------------------------------
// lifetime

static int launched_by_mpi(void) {
    static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        if (getenv(vars[i])) return 1;
    return 0;
}

static gn_status mpi_fail(int rc, const char *what) {
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS) snprintf(msg, sizeof msg, "MPI error %d", rc);
    return gn_err(GN_ERR_IO, "rank %d of %d: %s failed: %s", g_rank, g_size, what, msg);
}

gn_status gn_dist_init(void) {
    if (g_on || !launched_by_mpi()) return GN_OK;
    int provided = 0, rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided);
    if (rc != MPI_SUCCESS) return gn_err(GN_ERR_IO, "MPI_Init failed (error %d); is this mpirun from the same MPI as the build?", rc);
    g_on = 1;
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
    MPI_Comm local;
    if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &local) == MPI_SUCCESS) {
        MPI_Comm_size(local, &g_local);
        MPI_Comm_free(&local);
    }
    if (g_size > 1) install_term_handler();
    return GN_OK;
}

void gn_dist_finalize(void) {
#ifdef GN_HAVE_NCCL
    gn_dist_nccl_end();
#endif
    if (!g_on || g_done) return;
    MPI_Finalize();
    g_done = 1;
}

_Noreturn void gn_dist_abort(int code) {
    if (g_on && !g_done) MPI_Abort(MPI_COMM_WORLD, code);
    exit(code);
}

int gn_dist_rank(void) { return g_rank; }
int gn_dist_size(void) { return g_size; }
int gn_dist_local_size(void) { return g_local; }
const char *gn_dist_backend(void) {
#ifdef GN_HAVE_NCCL
    if (gn_dist_nccl_on()) return "mpi+nccl";
#endif
    return "mpi";
}

gn_status gn_dist_use_nccl(void) {
#ifdef GN_HAVE_NCCL
    return gn_dist_nccl_begin(g_rank, g_size);
#else
    return gn_err(GN_ERR_UNSUPPORTED, "NCCL: built without it (make MPI=1 CUDA=1 NCCL=1)");
#endif
}

// ---------------------------------------------------------------------------
// collectives: MPI counts are int, so large buffers go in chunks

#define CHUNK ((size_t)1 << 30)

gn_status gn_dist_allreduce_sum_f32(float *buf, size_t n) {
#ifdef GN_HAVE_NCCL
    if (gn_dist_nccl_on()) return gn_dist_nccl_allreduce_f32(buf, n); // one rank too: the path is exercised
#endif
    if (!g_on || g_size == 1) return GN_OK;
    for (size_t off = 0; off < n; off += CHUNK) {
        int c = (int)(n - off < CHUNK ? n - off : CHUNK);
        int rc = MPI_Allreduce(MPI_IN_PLACE, buf + off, c, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        if (rc != MPI_SUCCESS) return mpi_fail(rc, "all-reduce of the gradients");
    }
    return GN_OK;
}

gn_status gn_dist_allreduce_sum_f64(double *buf, size_t n) {
    if (!g_on || g_size == 1) return GN_OK;
    for (size_t off = 0; off < n; off += CHUNK) {
        int c = (int)(n - off < CHUNK ? n - off : CHUNK);
        int rc = MPI_Allreduce(MPI_IN_PLACE, buf + off, c, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
        if (rc != MPI_SUCCESS) return mpi_fail(rc, "all-reduce");
    }
    return GN_OK;
}

gn_status gn_dist_bcast(void *buf, size_t bytes, int root) {
    if (!g_on || g_size == 1) return GN_OK;
    for (size_t off = 0; off < bytes; off += CHUNK) {
        int c = (int)(bytes - off < CHUNK ? bytes - off : CHUNK);
        int rc = MPI_Bcast((char *)buf + off, c, MPI_BYTE, root, MPI_COMM_WORLD);
        if (rc != MPI_SUCCESS) return mpi_fail(rc, "broadcast");
    }
    return GN_OK;
}

gn_status gn_dist_barrier(void) {
    if (!g_on || g_size == 1) return GN_OK;
    int rc = MPI_Barrier(MPI_COMM_WORLD);
    return rc == MPI_SUCCESS ? GN_OK : mpi_fail(rc, "barrier");
}
