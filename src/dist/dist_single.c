/*
 * dist_single.c — the single-process backend of dist.h (the default build):
 * one rank, collectives are no-ops. `make MPI=1` links dist_mpi.c instead.
 */
#include "dist.h"
#include "../core/common.h" // gn_err

#include <stdlib.h> // exit

gn_status gn_dist_init(void) { return GN_OK; }
void gn_dist_finalize(void) {}
_Noreturn void gn_dist_abort(int code) { exit(code); }

int gn_dist_rank(void) { return 0; }
int gn_dist_size(void) { return 1; }
int gn_dist_local_size(void) { return 1; }
const char *gn_dist_backend(void) { return "single"; }

gn_status gn_dist_allreduce_sum_f32(float *buf, size_t n) { (void)buf; (void)n; return GN_OK; }
gn_status gn_dist_allreduce_sum_f64(double *buf, size_t n) { (void)buf; (void)n; return GN_OK; }
gn_status gn_dist_bcast(void *buf, size_t bytes, int root) { (void)buf; (void)bytes; (void)root; return GN_OK; }
gn_status gn_dist_barrier(void) { return GN_OK; }
gn_status gn_dist_use_nccl(void) {
    return gn_err(GN_ERR_UNSUPPORTED, "NCCL: built without it (make MPI=1 CUDA=1 NCCL=1)");
}
