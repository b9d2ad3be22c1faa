/*
 * dist.h — data-parallel ranks: who am I, how many are we, and sums over all of us.
 *
 * `mpirun -np N guanaco finetune ...` starts N identical processes ("ranks"). Each
 * holds the whole base model and the same LoRA parameters, trains on its share of
 * every global batch, and before the optimizer step the LoRA gradients are summed
 * over all ranks (gn_dist_allreduce_sum_f32), so every rank takes the same AdamW
 * step and the parameters stay identical everywhere.
 *
 * One interface, a backend chosen at link time by the Makefile:
 *   dist_single.c   the default build: one rank, every call a no-op (nothing from MPI)
 *   dist_mpi.c      `make MPI=1`: MPI_COMM_WORLD (Open MPI), buffers in host memory
 *   dist_nccl.c     `make MPI=1 CUDA=1 NCCL=1`, beside dist_mpi.c: once a GPU run calls
 *                   gn_dist_use_nccl, the gradient all-reduce goes through NCCL
 *                   (ncclAllReduce on the CUDA device; the ncclUniqueId travels by MPI).
 *
 * Usage (the CLI owns initialisation; the library only asks rank and size):
 *     if (gn_dist_init()) die(gn_last_error());
 *     ... gn_dist_allreduce_sum_f32(grads, n) ...
 *     on error with gn_dist_size() > 1: print, then gn_dist_abort(1) (never hang the others)
 *     gn_dist_finalize();
 *
 * Before gn_dist_init, and in the single build, rank is 0 and size is 1.
 * Collectives must be called by every rank in the same order. They return GN_OK
 * or GN_ERR_IO with the transport's message.
 */
#ifndef GN_DIST_H
#define GN_DIST_H

#include <stddef.h> // size_t

#include "guanaco.h" // gn_status

// gn_dist_init, gn_dist_finalize, gn_dist_abort, gn_dist_rank, gn_dist_size, gn_dist_local_size and
// gn_dist_backend: guanaco.h

// From this call on, gn_dist_allreduce_sum_f32 sums through NCCL on the CUDA device the
// library already runs on (gn_cuda_init picked it): the host buffer is copied to the device,
// all-reduced there, and copied back. Collective: every rank calls it once. Works with one
// rank too (a one-member NCCL communicator: the sum is the buffer itself). Builds without
// NCCL return GN_ERR_UNSUPPORTED and the host all-reduce stays.
gn_status gn_dist_use_nccl(void);

// buf[i] = sum over ranks of buf[i], in place, on every rank.
gn_status gn_dist_allreduce_sum_f32(float *buf, size_t n);
gn_status gn_dist_allreduce_sum_f64(double *buf, size_t n);
// Copies root's bytes into every other rank's buf (root's buf is only read).
gn_status gn_dist_bcast(void *buf, size_t bytes, int root);
gn_status gn_dist_barrier(void);

#endif
