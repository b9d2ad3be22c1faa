/*
 * test_dist.c — the data-parallel layer (src/dist/dist.h) in one process.
 *
 * Every build: a process not started by mpirun is rank 0 of 1, collectives leave
 * buffers as they are, and gn_dist_use_nccl says why it cannot run when the build
 * has no NCCL. (tests/test_mpi.py runs two ranks under mpirun.)
 *
 * NCCL build (`make MPI=1 CUDA=1 NCCL=1`) on a machine with a GPU: a one-member
 * NCCL communicator; the all-reduce of awkward sizes (0, 1, odd, growing then
 * shrinking buffers) must give back exactly the input (a sum over one rank), and
 * the time of one all-reduce the size of a 7B r64 adapter's gradients (159.9 M
 * floats: host to device, NCCL, device to host) is printed.
 */
#include <string.h>

#include "harness.h"
#include "core/common.h"
#include "dist/dist.h"
#ifdef GN_HAVE_NCCL
#include "cuda/cuda.h"
#endif

#ifdef GN_HAVE_NCCL
static uint64_t rng = 0x9e3779b97f4a7c15ull;
static float frand(void) {
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (float)((rng >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}
#endif

int main(void) {
    CHECK(gn_dist_init() == GN_OK, "init outside mpirun: %s", gn_last_error());
    CHECK(gn_dist_rank() == 0 && gn_dist_size() == 1, "rank %d of %d", gn_dist_rank(), gn_dist_size());
    float b[3] = {1.5f, -2.0f, 3.25f};
    double d[2] = {0.1, 7.0};
    CHECK(gn_dist_allreduce_sum_f32(b, 3) == GN_OK && b[0] == 1.5f && b[1] == -2.0f && b[2] == 3.25f, "f32 one rank");
    CHECK(gn_dist_allreduce_sum_f64(d, 2) == GN_OK && d[0] == 0.1 && d[1] == 7.0, "f64 one rank");
    CHECK(gn_dist_bcast(b, sizeof b, 0) == GN_OK && b[1] == -2.0f, "bcast one rank");
#ifndef GN_HAVE_NCCL
    gn_status st = gn_dist_use_nccl();
    CHECK(st == GN_ERR_UNSUPPORTED && strstr(gn_last_error(), "NCCL=1"), "use_nccl without NCCL: %d %s", st,
          gn_last_error());
    printf("SKIP: NCCL cases (built without NCCL: make MPI=1 CUDA=1 NCCL=1)\n");
#else
    if (gn_cuda_init(0) != GN_OK) {
        printf("SKIP: NCCL cases (no CUDA device: %s)\n", gn_last_error());
    } else {
        gn_status st = gn_dist_use_nccl();
        CHECK(st == GN_OK, "use_nccl: %s", gn_last_error());
        CHECK(st || !strcmp(gn_dist_backend(), "mpi+nccl"), "backend %s", gn_dist_backend());
        size_t sizes[] = {0, 1, 7, 1000003, 4096, 65537, 3};
        for (size_t k = 0; !st && k < sizeof sizes / sizeof sizes[0]; k++) {
            size_t n = sizes[k];
            float *x = gn_malloc(sizeof(float) * (n ? n : 1)), *want = gn_malloc(sizeof(float) * (n ? n : 1));
            for (size_t i = 0; i < n; i++) want[i] = x[i] = frand() * 1e3f;
            if (n > 2) x[n / 2] = want[n / 2] = -0.0f;
            gn_status s2 = gn_dist_allreduce_sum_f32(x, n);
            CHECK(s2 == GN_OK && !memcmp(x, want, sizeof(float) * n), "NCCL all-reduce, one rank, n=%zu: %s", n,
                  s2 ? gn_last_error() : "values changed");
            free(x);
            free(want);
        }
        if (!st) {
            size_t n = 159900000; // 7B, r 64 on all 7 modules of 32 layers: 639.6 MB of f32 gradients
            float *x = gn_malloc(sizeof(float) * n);
            for (size_t i = 0; i < n; i++) x[i] = (float)(i & 1023);
            gn_status s2 = gn_dist_allreduce_sum_f32(x, n); // warm-up: allocates the device buffer
            double t0 = gn_time_s();
            for (int r = 0; r < 3 && !s2; r++) s2 = gn_dist_allreduce_sum_f32(x, n);
            double dt = (gn_time_s() - t0) / 3;
            int ok = !s2;
            for (size_t i = 0; ok && i < n; i += 4099) ok = x[i] == (float)(i & 1023);
            CHECK(ok, "NCCL all-reduce of 159.9 M floats: %s", s2 ? gn_last_error() : "values changed");
            printf("RESULT nccl_allreduce_1rank_7b_r64_ms %.2f (%.1f GB/s host->device->host of %.1f MB, %s)\n",
                   dt * 1e3, 2.0 * 4.0 * (double)n / dt / 1e9, 4.0 * (double)n / 1e6, gn_cuda_device_name());
            free(x);
        }
    }
#endif
    gn_dist_finalize();
    TEST_REPORT();
}
