/**
 * The PyTorch side of `kradagrad bench step --torch`: `torch.optim.Adam` (its default
 * for-loop, foreach and fused forms) over the same parameter shapes, and
 * `torch.linalg.eigh` of the factor sizes a root refresh of the same set solves, timed by
 * a small Python script that the bench runs with the user's Python (torch is never a
 * dependency of kradagrad; `pip install torch` makes it available). The script is kept
 * here as a string so that the installed package carries it.
 */
import { spawnSync } from 'child_process';

export interface TorchSetRequest {
  id: string;
  shapes: number[][];
  /** Factor sizes of one root refresh: [n, how many]. */
  factors: [number, number][];
}

export interface TorchAdam {
  /** ms per step, min and median of the timed steps. */
  minMs: number;
  medianMs: number;
}

export interface TorchSetResult {
  set: string;
  adam: { default?: TorchAdam; foreach?: TorchAdam; fused?: TorchAdam; errors?: Record<string, string> };
  /** torch.linalg.eigh per factor size and dtype: min ms per call. */
  eigh: { n: number; count: number; float32: number; float64: number }[];
}

export interface TorchRun {
  threads: number;
  torch?: string;
  mkl?: boolean;
  sets: TorchSetResult[];
  error?: string;
}

export const TORCH_SCRIPT = String.raw`
import json, sys, time, statistics
req = json.loads(sys.argv[1])
try:
    import torch
except Exception as e:
    print(json.dumps({"error": "torch is not importable: %s" % e}))
    sys.exit(0)
torch.set_num_threads(int(req["threads"]))
torch.manual_seed(7)
out = {"threads": torch.get_num_threads(), "torch": torch.__version__,
       "mkl": bool(torch.backends.mkl.is_available()), "sets": []}

def timed(fn, warmup, steps):
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    return ts

for s in req["sets"]:
    params = [torch.randn(*sh) * 0.1 for sh in s["shapes"]]
    grads = [torch.randn(*sh) * 1e-2 for sh in s["shapes"]]
    res = {"set": s["id"], "adam": {}, "eigh": []}
    errors = {}
    for name, kw in (("default", {}), ("foreach", {"foreach": True}), ("fused", {"fused": True})):
        try:
            ps = [p.clone().requires_grad_(True) for p in params]
            for p, g in zip(ps, grads):
                p.grad = g.clone()
            opt = torch.optim.Adam(ps, lr=1e-4, **kw)
            ts = timed(opt.step, req["warmup"], req["adamSteps"])
            res["adam"][name] = {"minMs": min(ts), "medianMs": statistics.median(ts)}
            del opt, ps
        except Exception as e:
            errors[name] = str(e)
    if errors:
        res["adam"]["errors"] = errors
    for n, count in s["factors"]:
        row = {"n": n, "count": count}
        for dt in ("float32", "float64"):
            x = torch.randn(n, max(n, 16), dtype=getattr(torch, dt))
            a = x @ x.T / x.shape[1] + 1e-6 * torch.eye(n, dtype=x.dtype)
            reps = 3 if n >= 512 else 10 if n >= 128 else 30
            ts = timed(lambda: torch.linalg.eigh(a), 1, reps)
            row[dt] = min(ts)
        res["eigh"].append(row)
    out["sets"].append(res)
print(json.dumps(out))
`;

/**
 * Runs the script with `python` at `threads` threads. Never throws: a missing Python or
 * torch, or a failing script, comes back as `error`.
 */
export function runTorchPeer(
  python: string,
  threads: number,
  sets: TorchSetRequest[],
  opts: { warmup: number; adamSteps: number; timeoutMs?: number },
): TorchRun {
  const req = JSON.stringify({ threads, sets, warmup: opts.warmup, adamSteps: opts.adamSteps });
  const env = { ...process.env, OMP_NUM_THREADS: String(threads), MKL_NUM_THREADS: String(threads) };
  const r = spawnSync(python, ['-c', TORCH_SCRIPT, req], { encoding: 'utf8', env, maxBuffer: 16 << 20, timeout: opts.timeoutMs ?? 1800e3 });
  if (r.error) return { threads, sets: [], error: `${python}: ${r.error.message}` };
  if (r.status !== 0) return { threads, sets: [], error: `${python} exited with ${r.status}: ${(r.stderr || '').trim().split('\n').slice(-3).join(' | ')}` };
  try {
    const j = JSON.parse(r.stdout.trim().split('\n').pop() ?? '') as TorchRun;
    if (j.error) return { threads, sets: [], error: j.error };
    return { threads: j.threads, torch: j.torch, mkl: j.mkl, sets: j.sets };
  } catch (e) {
    return { threads, sets: [], error: `unreadable output from the torch script: ${(e as Error).message}` };
  }
}
