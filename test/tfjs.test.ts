/**
 * kradagrad/tfjs: our optimizers as tf.Optimizers with the pure-JS @tensorflow/tfjs (cpu
 * backend): model.fit trains, getWeights/setWeights and save/load with includeOptimizer
 * resume bit for bit, variable-set changes are clear errors, no tensor leaks, config round
 * trip, the main entry does not load tfjs, and the MNIST autoencoder bench's quick mode.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { spawnSync } from 'child_process';
import * as tf from '@tensorflow/tfjs';
import { KradagradError } from '../lib';
import {
  ITER_WEIGHT_NAME,
  KradagradOptimizer,
  KradagradStarOptimizer,
  KradagradTfjsOptimizer,
  NativeAdamOptimizer,
  NativeSgdOptimizer,
  STATE_WEIGHT_NAME,
  ShampooOptimizer,
  decodeBytes,
  encodeBytes,
} from '../lib/tfjs';

tf.env().set('IS_TEST', true); // no "install tfjs-node" banner

beforeAll(async () => {
  await tf.setBackend('cpu');
  await tf.ready();
});

const root = path.resolve(__dirname, '..');

function mlp(seed: number): tf.Sequential {
  const m = tf.sequential();
  m.add(tf.layers.dense({ units: 12, inputShape: [6], activation: 'tanh', kernelInitializer: tf.initializers.glorotUniform({ seed }) }));
  m.add(tf.layers.dense({ units: 3, kernelInitializer: tf.initializers.glorotUniform({ seed: seed + 1 }) }));
  return m;
}

function data(n: number, seed: number): { x: tf.Tensor2D; y: tf.Tensor2D } {
  return tf.tidy(() => {
    const x = tf.randomNormal([n, 6], 0, 1, 'float32', seed) as tf.Tensor2D;
    const w = tf.randomNormal([6, 3], 0, 1, 'float32', seed + 1);
    const y = tf.tanh(tf.matMul(x, w)) as tf.Tensor2D;
    return { x, y };
  });
}

const bits = (m: tf.LayersModel): Uint32Array[] => m.getWeights().map((w) => new Uint32Array(Float32Array.from(w.dataSync()).buffer));
function expectBitEqual(a: Uint32Array[], b: Uint32Array[]): void {
  expect(a.length).toBe(b.length);
  a.forEach((x, i) => {
    expect(x.length).toBe(b[i].length);
    const bad = x.findIndex((v, j) => v !== b[i][j]);
    expect(bad).toBe(-1);
  });
}

/** A memory IOHandler: model.save into an object, tf.loadLayersModel back from it. */
async function saveToMemory(m: tf.LayersModel): Promise<tf.io.ModelArtifacts> {
  let saved: tf.io.ModelArtifacts | undefined;
  await m.save(
    tf.io.withSaveHandler(async (a) => {
      saved = a;
      return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } };
    }),
    { includeOptimizer: true },
  );
  return saved!;
}

describe('kradagrad/tfjs', () => {
  test.each([
    ['KradagradStar', () => new KradagradStarOptimizer({ lr: 0.02, rootFrequency: 5, grafting: 'adam', backend: 'cpu' })],
    ['Shampoo', () => new ShampooOptimizer({ lr: 0.02, rootFrequency: 5, grafting: 'adam', backend: 'cpu' })],
    ['Kradagrad', () => new KradagradOptimizer({ lr: 0.02, rootFrequency: 5, grafting: 'adam', backend: 'cpu' })],
    ['Adam', () => new NativeAdamOptimizer({ lr: 0.02, backend: 'cpu' })],
    ['Sgd', () => new NativeSgdOptimizer({ lr: 0.1, momentum: 0.9, backend: 'cpu' })],
  ])('model.fit with %s decreases the loss', async (_name, make) => {
    const m = mlp(3);
    const opt = make();
    m.compile({ optimizer: opt, loss: 'meanSquaredError' });
    const { x, y } = data(128, 7);
    const h = await m.fit(x, y, { epochs: 15, batchSize: 32, shuffle: false, verbose: 0 });
    const loss = h.history.loss as number[];
    expect(loss.every(Number.isFinite)).toBe(true);
    expect(loss[loss.length - 1]).toBeLessThan(0.6 * loss[0]);
    expect(opt.iterations).toBe(15 * 4);
    expect(opt.optimizer!.stepCount).toBe(60);
    expect((opt as KradagradTfjsOptimizer).variableNames).toEqual(m.trainableWeights.map((w) => (w.read() as tf.Variable).name));
    tf.dispose([x, y]);
    m.dispose();
  });

  test('no tensor leaks: tf.memory().numTensors stable across steps (minimize and fit)', async () => {
    const w = tf.variable(tf.randomNormal([10, 7], 0, 1, 'float32', 1), true, 'leak/w');
    const b = tf.variable(tf.zeros([7]), true, 'leak/b');
    const x = tf.randomNormal([16, 10], 0, 1, 'float32', 2);
    const opt = new KradagradStarOptimizer({ lr: 0.01, rootFrequency: 2, backend: 'cpu' });
    const loss = () => tf.tidy(() => tf.sigmoid(tf.add(tf.matMul(x, w), b)).square().mean() as tf.Scalar);
    opt.minimize(loss, false, [w, b]);
    const n0 = tf.memory().numTensors;
    for (let i = 0; i < 10; i++) opt.minimize(loss, false, [w, b]);
    expect(tf.memory().numTensors).toBe(n0);
    // getWeights tensors are the caller's: disposing them restores the count
    const ws = await opt.getWeights();
    tf.dispose(ws.map((t) => t.tensor));
    expect(tf.memory().numTensors).toBe(n0);
    opt.dispose();
    tf.dispose([w, b, x]);

    const m = mlp(5);
    m.compile({ optimizer: new ShampooOptimizer({ lr: 0.01, rootFrequency: 3, backend: 'cpu' }), loss: 'meanSquaredError' });
    const d = data(64, 3);
    await m.fit(d.x, d.y, { epochs: 1, batchSize: 16, verbose: 0 });
    const n1 = tf.memory().numTensors;
    await m.fit(d.x, d.y, { epochs: 3, batchSize: 16, verbose: 0 });
    expect(tf.memory().numTensors).toBe(n1);
    tf.dispose([d.x, d.y]);
    m.dispose();
  });

  test('getWeights/setWeights round trip resumes with bit-identical next steps', async () => {
    const mk = () => new KradagradStarOptimizer({ lr: 0.05, rootFrequency: 3, momentum: 0.5, grafting: 'adam', backend: 'cpu' });
    const m = mlp(11);
    const a = mk();
    m.compile({ optimizer: a, loss: 'meanSquaredError' });
    const { x, y } = data(64, 13);
    await m.fit(x, y, { epochs: 2, batchSize: 16, shuffle: false, verbose: 0 }); // 8 steps
    const snapshotW = m.getWeights().map((t) => t.clone());
    const ow = await a.getWeights();
    expect(ow.map((w) => w.name)).toEqual([ITER_WEIGHT_NAME, STATE_WEIGHT_NAME]);
    expect(ow[1].tensor.dtype).toBe('int32');
    expect((await ow[0].tensor.data())[0]).toBe(8);

    // continue with the original optimizer for 5 steps (crossing a root refresh at step 9 and 12)
    await m.fit(x, y, { epochs: 1, batchSize: 16, shuffle: false, verbose: 0 });
    await m.fit(x, y, { epochs: 1, batchSize: 16, shuffle: false, verbose: 0, initialEpoch: 0 });
    const expected = bits(m);

    // a fresh optimizer fed the weights, on a fresh model with the snapshot weights
    const m2 = mlp(11);
    m2.setWeights(snapshotW);
    const b = mk();
    await b.setWeights(ow);
    expect(b.iterations).toBe(8);
    m2.compile({ optimizer: b, loss: 'meanSquaredError' });
    await m2.fit(x, y, { epochs: 1, batchSize: 16, shuffle: false, verbose: 0 });
    await m2.fit(x, y, { epochs: 1, batchSize: 16, shuffle: false, verbose: 0 });
    expectBitEqual(bits(m2), expected);
    expect(b.optimizer!.stepCount).toBe(16);
    expect(b.iterations).toBe(16);
    tf.dispose([...snapshotW, ...ow.map((w) => w.tensor), x, y]);
    m.dispose();
    m2.dispose();
  });

  test.each([
    ['KradagradStarOptimizer', () => new KradagradStarOptimizer({ lr: 0.03, rootFrequency: 2, backend: 'cpu', blockSize: 8, normalization: 'reference' })],
    ['ShampooOptimizer', () => new ShampooOptimizer({ lr: 0.03, rootFrequency: 2, backend: 'cpu', statisticsDtype: 'float64', grafting: 'adagrad' })],
  ])('model.save with includeOptimizer + tf.loadLayersModel resumes identically (%s)', async (cls, make) => {
    const m = mlp(21);
    m.compile({ optimizer: make(), loss: 'meanSquaredError' });
    const { x, y } = data(48, 23);
    await m.fit(x, y, { epochs: 2, batchSize: 16, shuffle: false, verbose: 0 }); // 6 steps
    const artifacts = await saveToMemory(m);
    expect((artifacts.trainingConfig as unknown as { optimizer_config: { class_name: string } }).optimizer_config.class_name).toBe(cls);
    expect(artifacts.weightSpecs!.filter((s) => s.group === 'optimizer').map((s) => s.name)).toEqual([ITER_WEIGHT_NAME, STATE_WEIGHT_NAME]);

    await m.fit(x, y, { epochs: 1, batchSize: 16, shuffle: false, verbose: 0 });
    const expected = bits(m);

    // the reloaded model's variables get tfjs' de-duplicating suffix (the original is alive): matched modulo it
    const m2 = await tf.loadLayersModel(tf.io.fromMemory(artifacts));
    expect(m2.optimizer.getClassName()).toBe(cls);
    expect(m2.optimizer).toBeInstanceOf(KradagradTfjsOptimizer);
    expect(m2.optimizer.iterations).toBe(6);
    await m2.fit(x, y, { epochs: 1, batchSize: 16, shuffle: false, verbose: 0 });
    expectBitEqual(bits(m2), expected);
    expect((m2.optimizer as KradagradTfjsOptimizer).optimizer!.stepCount).toBe(9);
    tf.dispose([x, y]);
    m.dispose();
    m2.dispose();
  });

  test('variables added, removed or renamed between steps: INVALID_ARGUMENT, nothing changed', () => {
    const a = tf.variable(tf.ones([3, 4]), true, 'vars/a');
    const b = tf.variable(tf.ones([4]), true, 'vars/b');
    const c = tf.variable(tf.ones([4]), true, 'vars/c');
    const ga = tf.fill([3, 4], 0.5);
    const gb = tf.fill([4], 0.25);
    const opt = new KradagradStarOptimizer({ lr: 0.1, backend: 'cpu' });
    opt.applyGradients({ 'vars/a': ga, 'vars/b': gb });
    const before = [a, b, c].map((v) => Float32Array.from(v.dataSync()));
    const state = opt.optimizer!.saveState();
    const cases: [string, tf.NamedTensorMap, RegExp][] = [
      ['removed', { 'vars/a': ga }, /removed.*missing: vars\/b/],
      ['added', { 'vars/a': ga, 'vars/b': gb, 'vars/c': gb }, /added.*new: vars\/c/],
      ['renamed', { 'vars/a': ga, 'vars/c': gb }, /renamed or replaced.*new: vars\/c.*missing: vars\/b/],
      ['unknown', { 'vars/a': ga, 'vars/b': gb, 'no/such': gb }, /'no\/such' is not a registered tf variable/],
    ];
    for (const [, grads, re] of cases) {
      let caught: unknown;
      try {
        opt.applyGradients(grads);
      } catch (e) {
        caught = e;
      }
      expect(caught).toBeInstanceOf(KradagradError);
      expect((caught as KradagradError).code).toBe('INVALID_ARGUMENT');
      expect((caught as Error).message).toMatch(re);
    }
    // wrong gradient shape: SHAPE_MISMATCH
    expect(() => opt.applyGradients({ 'vars/a': ga, 'vars/b': tf.ones([5]) })).toThrow(expect.objectContaining({ code: 'SHAPE_MISMATCH' }));
    // nothing changed
    [a, b, c].forEach((v, i) => expect(Array.from(v.dataSync())).toEqual(Array.from(before[i])));
    expect(opt.optimizer!.saveState().equals(state)).toBe(true);
    expect(opt.iterations).toBe(1);
    // array form works too, and the step goes on
    opt.applyGradients([
      { name: 'vars/b', tensor: gb },
      { name: 'vars/a', tensor: ga },
    ]);
    expect(opt.optimizer!.stepCount).toBe(2);
    // restoring state of other variables is refused at the next step
    const other = new KradagradStarOptimizer({ lr: 0.1, backend: 'cpu' });
    return opt.getWeights().then(async (w) => {
      await other.setWeights(w);
      // (matched by name, else in order: count and shapes must agree)
      expect(() => other.applyGradients({ 'vars/a': ga })).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT', message: expect.stringMatching(/state is for 2 variables/) }));
      expect(() => other.applyGradients({ 'vars/c': gb, 'vars/a': ga })).toThrow(
        expect.objectContaining({ code: 'INVALID_ARGUMENT', message: expect.stringMatching(/'vars\/c' has shape \[4\] but the state has \[3,4\]/) }),
      );
      other.applyGradients({ 'vars/a': ga, 'vars/c': gb }); // in order: a -> a, c -> b
      expect(other.optimizer!.stepCount).toBe(3);
      // state of another optimizer kind is refused at setWeights
      const sh = new ShampooOptimizer({ backend: 'cpu' });
      await expect(sh.setWeights(w)).rejects.toMatchObject({ code: 'STATE_FORMAT' });
      await expect(sh.setWeights([{ name: 'x/m', tensor: ga }])).rejects.toMatchObject({ code: 'STATE_FORMAT' });
      tf.dispose([a, b, c, ga, gb, ...w.map((t) => t.tensor)]);
      [opt, other, sh].forEach((o) => o.dispose());
    });
  });

  test('getConfig/fromConfig, registration, option validation', () => {
    const opts = { lr: 0.01, blockSize: 64, rootFrequency: 7, grafting: 'adagrad' as const, statisticsDtype: 'float64' as const, backend: 'cpu' as const };
    const a = new ShampooOptimizer(opts);
    expect(a.getConfig()).toEqual(opts);
    const map = tf.serialization.SerializationMap.getMap().classNameMap;
    for (const n of ['KradagradStarOptimizer', 'KradagradOptimizer', 'ShampooOptimizer', 'NativeAdamOptimizer', 'NativeSgdOptimizer']) expect(map[n]).toBeDefined();
    const [cls, fromConfig] = map.ShampooOptimizer;
    // tfjs-layers adds customObjects to the config it hands fromConfig
    const b = fromConfig(cls, { ...a.getConfig(), customObjects: {} }) as ShampooOptimizer;
    expect(b).toBeInstanceOf(ShampooOptimizer);
    expect(b.getConfig()).toEqual(opts);
    expect(() => new KradagradStarOptimizer({ lr: 0.1, bogus: 1 } as never)).toThrow(expect.objectContaining({ code: 'INVALID_OPTION' }));
    expect(() => new KradagradStarOptimizer({ epsilon: 0 })).toThrow(expect.objectContaining({ code: 'INVALID_OPTION' }));
    expect(() => new KradagradStarOptimizer({ lr: (t: number) => 1 / t }).getConfig()).toThrow(expect.objectContaining({ code: 'UNSUPPORTED' }));
    a.dispose();
    b.dispose();
  });

  test('state bytes encode into an int32 tensor exactly', () => {
    for (const n of [0, 1, 3, 4, 5, 1027]) {
      const buf = Buffer.from(Array.from({ length: n }, (_, i) => (i * 37 + 11) & 255));
      const t = encodeBytes(buf);
      expect(decodeBytes(t).equals(buf)).toBe(true);
      t.dispose();
    }
    expect(() => decodeBytes(tf.tensor1d([1, 2], 'float32'))).toThrow(expect.objectContaining({ code: 'STATE_FORMAT' }));
  });

  test('the main entry does not load tfjs; only kradagrad/tfjs imports @tensorflow', () => {
    const offenders: string[] = [];
    const walk = (d: string) => {
      for (const e of fs.readdirSync(d, { withFileTypes: true })) {
        const p = path.join(d, e.name);
        if (e.isDirectory()) {
          if (p !== path.join(root, 'lib', 'tfjs')) walk(p);
        } else if (p.endsWith('.ts') && /from '@tensorflow|require\('@tensorflow/.test(fs.readFileSync(p, 'utf8'))) offenders.push(p);
      }
    };
    walk(path.join(root, 'lib'));
    expect(offenders).toEqual([]);
    const dist = path.join(root, 'dist', 'lib', 'index.js');
    if (fs.existsSync(dist)) {
      const r = spawnSync(process.execPath, ['-e', `require(${JSON.stringify(dist)}); console.log(Object.keys(require.cache).filter((k) => k.includes('@tensorflow')).length)`], {
        encoding: 'utf8',
      });
      expect(r.stdout.trim()).toBe('0');
    }
  });
});

describe('MNIST autoencoder bench, quick mode', () => {
  test('runs all four optimizers and writes table, plot and JSON', async () => {
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    const bench = require('../bench/mnist_autoencoder') as typeof import('../bench/mnist_autoencoder');
    const data = bench.loadMnist();
    expect(data.count).toBe(10000);
    // on the wasm backend, the bench's; tfjs' per-kernel leak check (IS_TEST) flags its fusedMatMul
    tf.env().set('IS_TEST', false);
    tf.env().set('PROD', true);
    const r = await bench.runExperiment(bench.QUICK).finally(() => {
      tf.env().set('PROD', false);
      tf.env().set('IS_TEST', true);
    });
    await tf.setBackend('cpu');
    expect(r.finals.map((f) => f.optimizer)).toEqual(['sgd', 'adam', 'shampoo', 'kstar']);
    for (const f of r.finals) {
      expect(f.error).toBeUndefined();
      expect(f.diverged).toBe(false);
      expect(f.points.map((p) => p.epoch)).toEqual([0, 1, 2]);
      expect(f.points[2].valSqErr).toBeLessThan(r.initial.valSqErr);
    }
    // with roots every 4 steps (of 8) the two preconditioners differ
    const sh = r.finals.find((f) => f.optimizer === 'shampoo')!;
    const ks = r.finals.find((f) => f.optimizer === 'kstar')!;
    expect(sh.points[2].valBce).not.toBe(ks.points[2].valBce);
    const out = fs.mkdtempSync(path.join(os.tmpdir(), 'kradagrad-ae-'));
    const files = bench.writeResults(r, out, 'mnist-quick');
    expect(files.slice(0, 3).every((f) => fs.statSync(f).size > 100)).toBe(true);
    expect(fs.readFileSync(files[2], 'utf8')).toContain('<polyline');
    expect(JSON.parse(fs.readFileSync(files[0], 'utf8')).finals.length).toBe(4);
    fs.rmSync(out, { recursive: true, force: true });
  }, 300000); // ~20 s alone; OpenBLAS threads slow down a lot on a loaded 2-core machine
});
