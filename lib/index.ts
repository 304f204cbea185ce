/**
 * kradagrad: second-order optimizers (KrADagrad*, KrADagrad, Shampoo fp32/fp64) and Adam
 * and SGD for Node.js, on a native CPU (OpenBLAS/LAPACK) or CUDA backend.
 *
 * The public API is what this module exports (and `kradagrad/tfjs`, the TensorFlow.js
 * adapters); other files of the package are internal.
 */
export { KradagradError, type ErrorCode } from './errors';
export { Backend, Tensor, getBackend, type DType, type FloatArray } from './tensor';
export type { BackendName, BackendRequest, LoadReport } from './native';
// Backend discovery and runtime settings: the backends, and the CPU thread count.
export { MAX_THREADS, getThreads, listBackends, setThreads, type BackendInfo } from './backends';
export * as ops from './ops';
export * from './optim';
