/*
 * dist_nccl.h — the NCCL half of the MPI backend (dist_mpi.c calls it; `make NCCL=1`).
 * MPI still starts the job, says who is who, broadcasts the ncclUniqueId and carries
 * the small float64 sums; NCCL carries the gradients.
 */
#ifndef GN_DIST_NCCL_H
#define GN_DIST_NCCL_H

#include <stddef.h>

#include "guanaco.h"

// One communicator over all `size` ranks on the current CUDA device (every rank calls it).
gn_status gn_dist_nccl_begin(int rank, int size);
int gn_dist_nccl_on(void);
// buf (host, n floats) = the sum over ranks, through a device buffer kept between calls.
gn_status gn_dist_nccl_allreduce_f32(float *buf, size_t n);
// Destroys the communicator and frees the buffers (idempotent).
void gn_dist_nccl_end(void);

#endif
