/**
 * `kradagrad/distributed`: MPI collectives for data-parallel training, and the pieces the
 * sharded optimizers build on.
 *
 * Needs the optional MPI addon (`npm run build:mpi`, against OpenMPI: `apt-get install
 * openmpi-bin libopenmpi-dev`); without it {@link init} rejects with
 * DISTRIBUTED_UNAVAILABLE and says so. The rest of kradagrad never loads it.
 *
 * ```ts
 * import { init } from 'kradagrad/distributed';
 * const comm = await init();                 // under mpirun -np N, or alone as size 1
 * await comm.allReduce(grad, 'mean');        // in place, off the event loop
 * await comm.finalize();
 * ```
 */
export { Communicator, init, type InitOptions, type ArrayFor } from './communicator';
export { assignBlocks, blockCost, type BlockAssignment, type BlockFactors } from './assign';
export { measureBandwidth, type BandwidthOptions, type BandwidthReport, type CollectiveTiming } from './bandwidth';
export { NCCL_FIX, type NcclInfo, type NcclOptions } from './nccl';
export { distributedAvailable, type CommArray, type CommDType, type ReduceOp, type WorldInfo } from './native';
