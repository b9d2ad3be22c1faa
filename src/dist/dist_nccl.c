/*
 * dist_nccl.c — gradient all-reduce through NCCL (`make MPI=1 CUDA=1 NCCL=1`).
 *
 * The LoRA gradients of a GPU run are summed on the host by the trainer (cuda_train.c
 * adds each sequence's gradients into the host buffer), so a step's all-reduce here is:
 * copy the host buffer into a device buffer (kept between steps), ncclAllReduce in
 * place on our own stream, copy back. Between GPUs NCCL takes NVLink / PCIe peer paths
 * and, across machines, InfiniBand or sockets; MPI's host all-reduce would cross the
 * host memory and the network stack instead.
 *
 * Waiting: NCCL blocks forever when a peer dies mid-collective, so instead of a plain
 * cudaStreamSynchronize we poll the stream and ncclCommGetAsyncError; an error aborts
 * the communicator and returns (mpirun then stops the job, dist_mpi.c's handler).
 */
#include "dist_nccl.h"
#include "dist.h"            // gn_dist_bcast (MPI)
#include "../core/common.h" // gn_err

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <time.h> // nanosleep

static ncclComm_t g_comm;
static cudaStream_t g_stream;
static float *g_dev;      // device staging buffer
static size_t g_cap;      // its size in floats
static int g_on, g_rank, g_size;

static gn_status cuda_fail(cudaError_t e, const char *what) {
    return gn_err(GN_ERR_IO, "NCCL all-reduce (rank %d of %d): %s: %s", g_rank, g_size, what, cudaGetErrorString(e));
}

static gn_status nccl_fail(ncclResult_t r, const char *what) {
    const char *last = g_comm ? ncclGetLastError(g_comm) : NULL;
    return gn_err(GN_ERR_IO, "NCCL (rank %d of %d): %s: %s%s%s", g_rank, g_size, what, ncclGetErrorString(r),
                  last && *last ? ": " : "", last && *last ? last : "");
}

int gn_dist_nccl_on(void) { return g_on; }

gn_status gn_dist_nccl_begin(int rank, int size) {
    if (g_on) return GN_OK;
    g_rank = rank;
    g_size = size;
    int dev = -1;
    cudaError_t e = cudaGetDevice(&dev);
    if (e != cudaSuccess) return cuda_fail(e, "no CUDA device in use");
    ncclUniqueId id;
    memset(&id, 0, sizeof id);
    ncclResult_t r;
    if (rank == 0 && (r = ncclGetUniqueId(&id)) != ncclSuccess) return nccl_fail(r, "ncclGetUniqueId");
    gn_status st = gn_dist_bcast(&id, sizeof id, 0); // MPI (a no-op with one rank)
    if (st) return gn_err_prefix(st, "NCCL: handing out the communicator id");
    if ((r = ncclCommInitRank(&g_comm, size, id, rank)) != ncclSuccess) {
        g_comm = NULL;
        return nccl_fail(r, "ncclCommInitRank");
    }
    if ((e = cudaStreamCreateWithFlags(&g_stream, cudaStreamNonBlocking)) != cudaSuccess) {
        ncclCommDestroy(g_comm);
        g_comm = NULL;
        return cuda_fail(e, "cudaStreamCreate");
    }
    g_on = 1;
    int v = 0;
    ncclGetVersion(&v);
    gn_log(GN_LOG_INFO, "NCCL %d.%d.%d: rank %d of %d on CUDA device %d", v / 10000, v / 100 % 100, v % 100, rank, size,
           dev);
    return GN_OK;
}

// Waits for the stream without ever blocking inside NCCL: a dead peer shows up as an
// asynchronous communicator error, and the communicator is aborted.
static gn_status wait_stream(void) {
    for (long spins = 0;; spins++) {
        cudaError_t e = cudaStreamQuery(g_stream);
        if (e == cudaSuccess) return GN_OK;
        if (e != cudaErrorNotReady) return cuda_fail(e, "waiting for the all-reduce");
        ncclResult_t ar = ncclSuccess;
        ncclResult_t r = ncclCommGetAsyncError(g_comm, &ar);
        if (r != ncclSuccess || ar != ncclSuccess) {
            gn_status st = nccl_fail(r != ncclSuccess ? r : ar, "all-reduce of the gradients failed (a peer stopped?)");
            ncclCommAbort(g_comm);
            g_comm = NULL;
            g_on = 0;
            return st;
        }
        struct timespec ts = {0, spins < 1000 ? 2000 : 200000}; // 2 us, then 0.2 ms
        nanosleep(&ts, NULL);
    }
}

gn_status gn_dist_nccl_allreduce_f32(float *buf, size_t n) {
    if (!g_on) return gn_err(GN_ERR_ARG, "NCCL all-reduce before gn_dist_use_nccl");
    if (n == 0) return GN_OK;
    cudaError_t e;
    if (n > g_cap) {
        if (g_dev) cudaFree(g_dev);
        g_dev = NULL;
        g_cap = 0;
        if ((e = cudaMalloc((void **)&g_dev, n * sizeof(float))) != cudaSuccess) {
            (void)cudaGetLastError();
            return gn_err(GN_ERR_OOM, "NCCL all-reduce: cannot allocate %.1f MiB on the device for the gradients: %s",
                          (double)n * 4 / 1048576.0, cudaGetErrorString(e));
        }
        g_cap = n;
    }
    if ((e = cudaMemcpyAsync(g_dev, buf, n * sizeof(float), cudaMemcpyHostToDevice, g_stream)) != cudaSuccess)
        return cuda_fail(e, "copy to the device");
    ncclResult_t r = ncclAllReduce(g_dev, g_dev, n, ncclFloat32, ncclSum, g_comm, g_stream);
    if (r != ncclSuccess) return nccl_fail(r, "ncclAllReduce");
    if ((e = cudaMemcpyAsync(buf, g_dev, n * sizeof(float), cudaMemcpyDeviceToHost, g_stream)) != cudaSuccess)
        return cuda_fail(e, "copy back to the host");
    return wait_stream();
}

void gn_dist_nccl_end(void) {
    if (g_comm) {
        if (g_on) ncclCommDestroy(g_comm);
        else ncclCommAbort(g_comm);
    }
    g_comm = NULL;
    if (g_stream) cudaStreamDestroy(g_stream);
    g_stream = NULL;
    if (g_dev) cudaFree(g_dev);
    g_dev = NULL;
    g_cap = 0;
    g_on = 0;
}
