export * from './types';
export { Sgd, Adam } from './first_order';
export { Shampoo } from './shampoo';
export { KradagradStar } from './kradagrad_star';
export { Kradagrad, scheduleDim } from './kradagrad';
export { mergeDims, partition, planParam, groupBlocks, type Block, type ParamPlan, type BlockGroup } from './blocking';
export { CHECKPOINT_VERSION, checkpointSummary } from './checkpoint';
