export { KradagradError, type ErrorCode } from './errors';
export { Backend, Tensor, getBackend, type DType, type FloatArray } from './tensor';
export type { BackendName, BackendRequest, LoadReport } from './native';
export * as ops from './ops';
export * from './optim';
