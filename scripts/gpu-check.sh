#!/usr/bin/env bash
# The GPU check (see ../shared/GPU.md), one prepared script for the GPU machine:
#
#   bash scripts/gpu-check.sh            (from anywhere; it cd's to the repository root)
#
# That machine has CUDA 13.0 at /usr/local/cuda-13.0, cmake, g++, OpenBLAS/LAPACKE, but no
# Node.js or npm. Prepare here, then carry: .device-carry (../shared/device/pack.sh: node +
# Node-API headers), node_modules/node-addon-api (napi.h) and dist (npx tsc -p
# tsconfig.build.json). About 23 MB together.
#
# Steps (each timed, with its exit status in the summary):
#   1. node from .device-carry; device and driver (nvidia-smi)
#   2. build both addons from CMakeLists.txt with the system CUDA (plain cmake, no cmake-js):
#      build-cuda/Release/kradagrad_{cuda,cpu}.node
#   3. every op on CUDA vs the CPU backend, float32 and float64, plus eigensolver timings
#      (looped syevd vs syevjBatched vs auto): node dist/bench/gpu-ops.js
#   4. further steps (golden replay on CUDA, the step benchmark, its unfused and Newton-root
#      variants, the conditioning benchmark): each runs when its compiled script exists;
#      add new ones in the "further steps" block below.
# Results: bench/results/gpu-check-<stamp>.md and -log.txt, plus each step's JSON, all with the
# device name; copies go to $OUT when it is set (log, summary, one .tar.gz of every result
# file of the run, and up to five tables: at most 8 files come back from there).
#
# GPU_CHECK_SELF=1 runs the same script where there is no GPU (builds against whatever
# toolkit scripts/build-cuda.js finds, e.g. the PyPI wheels, and compares the CPU backend
# inside the CUDA addon with the CPU addon): it checks this script, not the GPU.
# GPU_CHECK_RESULTS (default bench/results): where results go.
# GPU_CHECK_BUDGET_S (default 480): the whole script's wall-clock budget; each step gets
# at most what is left, so the summary and the copies to $OUT always happen.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
stamp=$(date -u +%Y%m%dT%H%M%SZ)
results=${GPU_CHECK_RESULTS:-bench/results}
mkdir -p "$results"
log=$results/gpu-check-$stamp-log.txt  # .txt: *.log is gitignored, and the log belongs with the results
summary=$results/gpu-check-$stamp.md
marker=$(mktemp)
started=$(date +%s)
budget=${GPU_CHECK_BUDGET_S:-480}
self=${GPU_CHECK_SELF:-0}
rowsfile=$(mktemp)

left() { echo $(( budget - ($(date +%s) - started) )); }

# step NAME CAP_SECONDS CMD...: runs CMD under a timeout of min(CAP, budget left - 20 s).
step() {
  local name=$1 cap=$2
  shift 2
  local t=$(( $(left) - 20 ))
  (( t > cap )) && t=$cap
  if (( t < 10 )); then
    echo "== $name: skipped (budget spent)"
    echo "| $name | skipped: budget spent | 0 |" >> "$rowsfile"
    return 0
  fi
  echo "== $name (timeout ${t}s): $*"
  local s0 rc
  s0=$(date +%s)
  timeout --kill-after=5 "$t" "$@"
  rc=$?
  local secs=$(( $(date +%s) - s0 ))
  local status=ok
  if (( rc == 124 || rc == 137 )); then status="TIMED OUT after ${t}s"
  elif (( rc != 0 )); then status="FAILED (exit $rc)"; fi
  echo "== $name: $status in ${secs}s"
  echo "| $name | $status | $secs |" >> "$rowsfile"
  return $rc
}

# optional NAME CAP FILE ARGS...: a node script step that runs only when FILE exists.
optional() {
  local name=$1 cap=$2 file=$3
  shift 3
  if [ -f "$file" ]; then
    step "$name" "$cap" node "$file" "$@"
  else
    echo "== $name: skipped ($file not built)"
    echo "| $name | skipped: $file not built | 0 |" >> "$rowsfile"
  fi
}

main() {
  echo "== gpu-check $stamp in $root (self-test: $self)"
  # 1. node and the device
  if ! command -v node >/dev/null 2>&1; then
    if [ -f .device-carry/node.xz ]; then
      xz -dc .device-carry/node.xz > /tmp/node && chmod +x /tmp/node && export PATH=/tmp:$PATH
    else
      echo "no node and no .device-carry/node.xz (run ../shared/device/pack.sh and carry .device-carry)"
      return 1
    fi
  fi
  echo "node $(node --version) at $(command -v node)"
  if command -v nvidia-smi >/dev/null 2>&1; then
    gpu=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | head -1)
    echo "GPU: $gpu"
  else
    gpu="none (nvidia-smi not found)"
    echo "GPU: $gpu"
  fi
  [ -f dist/bench/gpu-ops.js ] || { echo "dist/bench/gpu-ops.js missing: run npx tsc -p tsconfig.build.json here and carry dist"; return 1; }

  # 2. build both addons (the CPU addon too: node-gyp is not on that machine)
  local cuda_root=()
  for d in /usr/local/cuda-13.0 /usr/local/cuda; do
    if [ -x "$d/bin/nvcc" ]; then cuda_root=(--cuda-root="$d"); break; fi
  done
  step "build (cmake, $(nproc) jobs)" 240 node scripts/build-cuda.js --force --plain-cmake \
    --targets=kradagrad_cuda,kradagrad_cpu --jobs="$(nproc)" "${cuda_root[@]}" || return 1
  export KRADAGRAD_CUDA_ADDON=$root/build-cuda/Release/kradagrad_cuda.node
  export KRADAGRAD_CPU_ADDON=$root/build-cuda/Release/kradagrad_cpu.node

  # 3. every op on CUDA vs CPU, and the eigensolver paths' timings
  if [ "$self" = 1 ]; then
    step "ops: CPU inside the CUDA addon vs CPU addon (self-test)" 200 node dist/bench/gpu-ops.js --self --out="$results" --bench-eigh
  else
    step "ops: CUDA vs CPU, float32 + float64; eigh timings" 200 node dist/bench/gpu-ops.js --out="$results" --bench-eigh
  fi

  # 3b. compute-sanitizer memcheck over the fused multi-tensor kernels and the single
  #     kernels they mirror (when the sanitizer is on the machine; not in the self-test).
  if [ "$self" != 1 ] && command -v compute-sanitizer >/dev/null 2>&1; then
    step "compute-sanitizer memcheck: multi-tensor and elementwise kernels" 120 compute-sanitizer --tool memcheck \
      --error-exitcode 1 node dist/bench/gpu-ops.js --filter='multi-tensor|axpby|scaleByNormRatio|boxes'
  fi

  # 4. further steps: one line each; they run when their compiled script exists. Each
  #    should print the device name and write its JSON into bench/results/.
  local be=cuda
  [ "$self" = 1 ] && be=cpu
  if [ -f dist/lib/cli/main.js ]; then
    optional "golden replay ($be)" 120 dist/lib/cli/main.js golden test/fixtures/golden-reference.json \
      --backend "$be" --json "$results/golden-$be-$stamp.json"
  elif [ -f dist/lib/cli/golden.js ]; then  # before the CLI entry point exists
    step "golden replay ($be)" 120 node -e \
      "require('./dist/lib/cli/golden').runGolden(process.argv.slice(1)).then((c) => process.exit(c))" \
      test/fixtures/golden-reference.json --backend "$be" --json "$results/golden-$be-$stamp.json"
  fi
  optional "step benchmark ($be)" 240 dist/lib/cli/main.js bench step --backend "$be" --no-png \
    --out "$results/step-$be-$stamp"
  # Side-by-side variants of the step benchmark (same machine, same run):
  #  - the previous kernels: multi-tensor ops one launch per parameter instead of fused,
  #    Gram products by batched gemm instead of syrk, and one syevd at a time instead of
  #    four concurrent lanes (the "before" of all three);
  #  - roots by the batched GEMM-only coupled Newton iteration instead of eigh.
  local vsets=resnet32,mlp
  [ "$self" = 1 ] && vsets=tiny  # the CPU takes minutes per MLP step variant
  if [ -f dist/lib/cli/main.js ]; then
    step "step benchmark, previous kernels: unfused multi-tensor ops, gemm Gram, serial syevd ($be)" 90 \
      env KRADAGRAD_CUDA_NO_FUSED_MULTI=1 KRADAGRAD_CUDA_NO_SYRK=1 KRADAGRAD_CUDA_EIGH_STREAMS=1 node dist/lib/cli/main.js \
      bench step --backend "$be" --sets "$vsets" --optimizers adam,shampoo32,kradstar32 --no-png \
      --out "$results/step-previous-$be-$stamp"
    step "step benchmark, rootMethod newton ($be)" 120 node dist/lib/cli/main.js bench step --backend "$be" \
      --sets "$vsets" --optimizers shampoo32,kradstar32 --root-method newton --no-png \
      --out "$results/step-newton-$be-$stamp"
  fi
  optional "conditioning benchmark ($be)" 90 dist/lib/cli/main.js bench conditioning --backend "$be" --no-png \
    --out "$results/conditioning-$be-$stamp"
  return 0
}

main 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
# A failed or timed-out step fails the check.
if (( rc == 0 )) && grep -qE '\| (FAILED|TIMED OUT)' "$rowsfile"; then rc=1; fi
{
  echo "# GPU check $stamp"
  echo
  echo "- command: \`bash scripts/gpu-check.sh\`${GPU_CHECK_SELF:+ (GPU_CHECK_SELF=$GPU_CHECK_SELF)}"
  echo "- $(grep -m1 '^GPU: ' "$log" || echo 'GPU: unknown')"
  echo "- $(grep -m1 '^node ' "$log" || echo 'node: not found')"
  grep -m1 '^\[kradagrad\] CUDA toolkit:' "$log" | sed 's/^\[kradagrad\] /- /'
  grep -m1 '^device: ' "$log" | sed 's/^/- /'
  echo "- total: $(( $(date +%s) - started )) s, exit status $rc"
  echo
  echo "| step | status | seconds |"
  echo "| --- | --- | --- |"
  cat "$rowsfile"
  echo
  echo "## ops summary"
  echo
  echo '```'
  grep -E '^(FAIL|[0-9]+/[0-9]+ cases pass)' "$log" || echo "(no op results)"
  grep -A 20 '^eigh ms/call' "$log" | grep -E '^(eigh|float)' || true
  echo '```'
} > "$summary"
cat "$summary"
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT"
  cp "$log" "$summary" "$OUT"/ 2>/dev/null
  # Every result file of this run in one archive (8 files at most come back), plus up to
  # five of its tables, named after their folders (step-cuda-<stamp>/step.md ->
  # step-cuda-<stamp>-step.md).
  files=$(find "$results" -type f -newer "$marker" ! -name "gpu-check-$stamp*")
  if [ -n "$files" ]; then
    echo "$files" | tar -czf "$OUT/gpu-check-$stamp-results.tar.gz" -T -
    echo "$files" | grep '\.md$' | head -5 | while read -r f; do
      cp "$f" "$OUT/$(basename "$(dirname "$f")")-$(basename "$f")"
    done
  fi
  echo "copied to \$OUT: $(ls "$OUT" | tr '\n' ' ')"
fi
rm -f "$marker" "$rowsfile"
exit "$rc"
