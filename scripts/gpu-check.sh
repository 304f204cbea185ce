#!/usr/bin/env bash
# The GPU check (see ../shared/GPU.md), one prepared script for the GPU machine.
#
# Here (the dev machine), first:   bash scripts/gpu-check.sh --prepare
#   runs ../shared/device/pack.sh (.device-carry: node + Node-API headers), compiles the
#   TypeScript into dist/ with a stamp of the sources it came from, checks the sizes and
#   prints the device command. On the GPU machine (through the device tool), with carry
#   .device-carry, dist and node_modules/node-addon-api (about 23 MB together):
#       bash scripts/gpu-check.sh
#   (see bench/results/gpu-next-run.md for the exact call and what to read afterwards).
#
# That machine has CUDA 13.0 at /usr/local/cuda-13.0, cmake, g++, OpenBLAS/LAPACKE, but no
# Node.js or npm: node comes from .device-carry/node.xz, the Node-API headers from
# .device-carry/include, napi.h from node_modules/node-addon-api, the compiled TS from dist.
# A missing piece stops the run at once (step "carry check"), before anything is built.
#
# Steps (each timed, with its status in the summary; timings before the sanitizer, so a
# slow sanitizer can only cost itself):
#   1. carry check; node; device and driver (nvidia-smi)
#   2. build both addons from CMakeLists.txt with the system CUDA (plain cmake, no cmake-js):
#      build-cuda/Release/kradagrad_{cuda,cpu}.node
#   3. every op on CUDA vs the CPU backend, float32 and float64, plus eigensolver timings
#      (looped syevd vs syevjBatched vs auto), 1, 4 and 12 syevd lanes on 12 x 1024, and an
#      eighAsync of 12 x 1024 against main-thread work (does it overlap?):
#      node dist/bench/gpu-ops.js --bench-eigh
#   3b. NCCL (kradagrad/distributed on device buffers): scripts/gpu-check-nccl.sh, which builds
#      kradagrad_nccl.so against Python's nvidia-nccl-cu13 (or KRAD_NCCL_ROOT) and runs
#      test/distributed/nccl_ranks.js gpu at np 1 (np 2 with two GPUs and OpenMPI)
#   4. golden replay on CUDA
#   5. step benchmark as shipped, then side-by-side variants, each one switch (attribution):
#      previous kernels (all three switches), fused multi-tensor kernels off, syrk off,
#      1 solver lane, 12 solver lanes, Newton roots; a comparison table of all of them
#   6. conditioning benchmark
#   7. compute-sanitizer memcheck over the cases that reach our kernels (found on PATH, else
#      in the CUDA toolkit's bin/; a "skipped (reason)" row when there is none)
# Results: bench/results/gpu-check-<stamp>.md (summary) and -log.txt, each step's JSON and
# tables, all with the device name. With $OUT set, $OUT is kept current while the script
# runs (a timeout still returns what was done): the log (written live), the summary and one
# .tar.gz of every result file of the run (both refreshed after each step), and up to four
# tables: 7 files, under the 8 that come back from there.
#
# GPU_CHECK_SELF=1 runs the same script where there is no GPU (builds against whatever
# toolkit scripts/build-cuda.js finds, e.g. the PyPI wheels, compares the CPU backend inside
# the CUDA addon with the CPU addon, small sizes): it checks this script, not the GPU.
# GPU_CHECK_RESULTS (default bench/results): where results go.
# GPU_CHECK_BUDGET_S (default 480): the whole script's wall-clock budget; each step gets
# at most what is left, so the summary and the copies to $OUT always happen.
# GPU_CHECK_STEPS (default all): a comma list of the groups to run, for a short second run
# after a fix: ops (step 3), golden, step (the benchmark as shipped), variants (the rest of
# step 5), conditioning, sanitizer, nccl (step 3b). The carry check and the build always run.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD

# A stamp of the TypeScript sources (and configs) that dist/ is compiled from.
sources_hash() {
  { find lib bench test/support -name '*.ts' -type f; ls tsconfig.json tsconfig.build.json; } | LC_ALL=C sort | xargs sha256sum |
    sha256sum | cut -c1-16
}
stamp_file=dist/.gpu-check-sources

if [ "${1:-}" = "--prepare" ]; then
  set -e
  pack=${GPU_CHECK_PACK:-../shared/device/pack.sh}
  [ -f "$pack" ] || { echo "no $pack (set GPU_CHECK_PACK to ../shared/device/pack.sh)" >&2; exit 1; }
  bash "$pack"
  node node_modules/typescript/bin/tsc -p tsconfig.build.json
  sources_hash > "$stamp_file"
  for f in .device-carry/node.xz .device-carry/include/node_api.h node_modules/node-addon-api/napi.h \
    dist/bench/gpu-ops.js dist/lib/cli/main.js; do
    [ -f "$f" ] || { echo "prepare: $f is missing" >&2; exit 1; }
  done
  carry_kb=$(du -sk .device-carry dist node_modules/node-addon-api | awk '{s += $1} END {print s}')
  tree_kb=$(git ls-files -z -co --exclude-standard | xargs -0 du -ck 2>/dev/null | tail -1 | cut -f1)
  echo "carry: .device-carry dist node_modules/node-addon-api = $((carry_kb / 1024)) MiB;" \
    "working tree $((tree_kb / 1024)) MiB; together $(((carry_kb + tree_kb) / 1024)) MiB of the 64 MiB allowed"
  (( carry_kb + tree_kb < 60 * 1024 )) || { echo "prepare: too large for the device tool (64 MiB)" >&2; exit 1; }
  echo "dist stamp $(cat "$stamp_file") (sources of this tree)"
  echo "device command: bash scripts/gpu-check.sh   (carry: .device-carry, dist, node_modules/node-addon-api; timeout_s 560)"
  exit 0
fi

steps_wanted=${GPU_CHECK_STEPS:-all}
group=build  # the group of the steps now running (GPU_CHECK_STEPS)
want() { [ "$steps_wanted" = all ] || [ "$1" = build ] || [[ ",$steps_wanted," == *",$1,"* ]]; }
for g in ${steps_wanted//,/ }; do
  case $g in all | ops | nccl | golden | step | variants | conditioning | sanitizer) ;;
    *) echo "GPU_CHECK_STEPS: unknown group '$g' (ops, nccl, golden, step, variants, conditioning, sanitizer)" >&2; exit 2 ;;
  esac
done

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
specsfile=$(mktemp)  # the step-benchmark runs of this check, LABEL=DIR per line (comparison)
tablesfile=$(mktemp)  # the tables now copied to $OUT
outdir=${OUT:-}
[ -n "$outdir" ] && mkdir -p "$outdir"
carry_missing=
be=cuda
[ "$self" = 1 ] && be=cpu
compare=$results/step-compare-$be-$stamp.md
# compute-sanitizer's case filter (test/support/gpu_op_cases.ts case names; each case runs its op on the
# device, and memcheck checks every kernel it launches). What each group reaches in
# native/cuda/kernels.cu: multi-tensor -> multi_ew_k, multi_dot2_partial_k,
# multi_norm_ratio_k, multi_scale_k, multi_all_finite_k; axpby -> axpby_k; scaleByNormRatio
# -> dot_partial_k, sum_partials_k, norm_ratio_k; boxes -> boxes_k, boxes_many_k;
# inverseUpdate -> inverse_update_small_k (n <= 128), trace_k, inverse_coeffs_k (n = 200);
# allFinite, allFiniteMany -> all_finite_k, multi_all_finite_k; gram -> mirror_lower_k after cuBLAS
# syrk (n >= 256), the batched gemm below; sweeps -> the Jacobi retry: mirror_lower_k per
# item, syevd on the solver lanes, all_finite_k, transpose_tiles_k; on the solver lanes ->
# eighAsync's lanes with the main thread's read-backs going on (the lock released meanwhile).
# Since then: fused stages (updateMany, adamMany, graftMany, axpbyOutMany; the large-span
# cases only, which hold the small entries too) -> axpby_k, mul_acc_k, div_sqrt_k,
# all_finite_k (default chains) and, with KRADAGRAD_CUDA_FUSED_STAGES=1, update_k, adam_k,
# graft_k, axpby3_k; root float32 -> add_identity_k, eig_f_k/eig_scale_k, symmetrize_k,
# dot partials (Newton residuals), cast_k (the float64 retry); job -> all of the above on
# the libuv pool thread; optimizer step KradagradStar / Shampoo float64 -> whole step jobs
# (boxes_many_k, inverse_update_small_k, multi_* kernels, background root refreshes).
san_filter='multi-tensor|axpby|scaleByNormRatio|boxes|inverseUpdate|allFinite|^gram |sweeps:1|on the solver lanes|^(updateMany|adamMany|graftMany) .*300001|^root float32 |^job |^optimizer step (KradagradStar|Shampoo float64):'
# Each must match at least one selected case name (checked before the sanitizer runs).
san_groups=('^multi-tensor ' '^axpby/scale ' '^scaleByNormRatio ' '^boxes ' '^boxesMany ' '^inverseUpdate ' '^allFinite '
  '^allFiniteMany ' '^gram ' '^eigh .*sweeps:1' '^eighAsync on the solver lanes' '^updateMany .*300001' '^adamMany .*300001'
  '^graftMany adagrad.*300001' '^graftMany adam.*300001' '^axpbyOutMany.*300001' '^root float32 .*newton' '^root float32 .*bad'
  '^job float32' '^job float64' '^optimizer step KradagradStar' '^optimizer step Shampoo float64')

left() { echo $(( budget - ($(date +%s) - started) )); }
row() { echo "| $1 | $2 | $3 |" >> "$rowsfile"; }

# The summary as it stands ($1: the state line).
write_summary() {
  echo "# GPU check $stamp"
  echo
  echo "- command: \`$(env | grep -E '^GPU_CHECK_(SELF|STEPS|BUDGET_S)=' | LC_ALL=C sort | tr '\n' ' ')bash scripts/gpu-check.sh\`"
  echo "- $(grep -m1 '^GPU: ' "$log" || echo 'GPU: unknown')"
  echo "- $(grep -m1 '^node ' "$log" || echo 'node: not found')"
  grep -m1 '^\[kradagrad\] CUDA toolkit:' "$log" | sed 's/^\[kradagrad\] /- /'
  grep -m1 '^device: ' "$log" | sed 's/^/- /'
  echo "- $1 after $(( $(date +%s) - started )) s (budget $budget s)"
  echo
  echo "| step | status | seconds |"
  echo "| --- | --- | --- |"
  cat "$rowsfile"
  echo
  echo "## ops, golden, sanitizer"
  echo
  echo '```'
  grep -E '^(FAIL|[0-9]+/[0-9]+ cases pass|[0-9]+ passed, [0-9]+ failed|========= ERROR SUMMARY)' "$log" || echo "(none)"
  echo '```'
  echo
  echo '```'
  # The eigensolver tables: each header line and the rows that follow it.
  awk '/^eigh (lanes )?ms\/call/ {on = 1; print; next} on && /^float(32|64) / {print; next} {on = 0}' "$log"
  grep '^eigh overlap' "$log"
  echo '```'
  if [ -s "$compare" ]; then
    echo
    echo "## step benchmark, side by side"
    echo
    cat "$compare"
  fi
}

# Refreshes the summary, the comparison table and, with $OUT, the copies there. Each file
# is written beside its target and renamed over it, so a run cut off mid-copy still leaves
# the previous complete version.
publish() {
  if [ -s "$specsfile" ]; then
    mapfile -t specs < "$specsfile"
    node scripts/step-compare.js "${specs[@]}" > "$compare.part" 2>&1 && mv "$compare.part" "$compare"
    rm -f "$compare.part"
  fi
  write_summary "$1" > "$summary.part" && mv "$summary.part" "$summary"
  [ -n "$outdir" ] || return 0
  cp "$summary" "$outdir/.summary.part" && mv "$outdir/.summary.part" "$outdir/$(basename "$summary")"
  local files tables f
  files=$(find "$results" -type f -newer "$marker" ! -name "gpu-check-$stamp*" ! -name '*.part' | LC_ALL=C sort)
  [ -n "$files" ] || return 0
  echo "$files" | tar -czf "$outdir/.results.part" -T - 2>/dev/null &&
    mv "$outdir/.results.part" "$outdir/gpu-check-$stamp-results.tar.gz"
  rm -f "$outdir/.results.part"
  # Up to four tables, by what to read first: the side-by-side step table, the step
  # benchmark as shipped and with the previous kernels, conditioning, then any other (all
  # are in the archive); named after their folders (step-cuda-<stamp>/step.md ->
  # step-cuda-<stamp>-step.md).
  tables=$( { echo "$files" | grep -F "$(basename "$compare")"; echo "$files" | grep -F "/step-$be-$stamp/step.md";
    echo "$files" | grep -F "/step-previous-$be-$stamp/step.md"; echo "$files" | grep '/conditioning-[^/]*/[^/]*\.md$';
    echo "$files" | grep '\.md$'; } | awk '!seen[$0]++' | head -4)
  local name names=()
  for f in $tables; do
    if [ "$(dirname "$f")" = "$results" ]; then name=$(basename "$f"); else name="$(basename "$(dirname "$f")")-$(basename "$f")"; fi
    names+=("$name")
    cp "$f" "$outdir/.table.part" && mv "$outdir/.table.part" "$outdir/$name"
  done
  # Tables copied earlier that are no longer among the four go (8 files at most come back).
  local old
  while read -r old; do
    [ -n "$old" ] && ! printf '%s\n' "${names[@]}" | grep -qxF "$old" && rm -f "$outdir/$old"
  done < "$tablesfile"
  printf '%s\n' "${names[@]}" > "$tablesfile"
  rm -f "$outdir"/.*.part
}

# step NAME CAP_SECONDS CMD...: runs CMD under a timeout of min(CAP, budget left - 20 s).
step() {
  local name=$1 cap=$2
  shift 2
  if ! want "$group"; then skip "$name" "not in GPU_CHECK_STEPS"; return 0; fi
  local t=$(( $(left) - 20 ))
  (( t > cap )) && t=$cap
  if (( t < 10 )); then
    echo "== $name: skipped (budget spent)"
    row "$name" "skipped (budget spent)" 0
    publish "running"
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
  row "$name" "$status" "$secs"
  publish "running"
  return $rc
}

# skip NAME REASON: a row that says why a step did not run.
skip() {
  echo "== $1: skipped ($2)"
  row "$1" "skipped ($2)" 0
  publish "running"
}

# bench_step NAME CAP LABEL DIR [ENV=VALUE ...] -- [bench step args]: a step benchmark run,
# listed in the side-by-side table under LABEL.
bench_step() {
  local name=$1 cap=$2 label=$3 dir=$4
  shift 4
  local envs=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do envs+=("$1"); shift; done
  shift
  if ! want "$group"; then skip "$name" "not in GPU_CHECK_STEPS"; return 0; fi
  if [ ! -f dist/lib/cli/main.js ]; then skip "$name" "dist/lib/cli/main.js not built"; return 0; fi
  echo "$label=$dir" >> "$specsfile"
  step "$name" "$cap" env "${envs[@]}" node dist/lib/cli/main.js bench step --backend "$be" --no-png --out "$dir" "$@"
}

# Everything the run needs from the dev machine; exits non-zero with what is missing.
check_carry() {
  local missing=()
  for f in dist/lib/index.js dist/bench/gpu-ops.js dist/test/support/gpu_op_cases.js dist/lib/cli/main.js; do
    [ -f "$f" ] || missing+=("$f (carry dist, compiled by bash scripts/gpu-check.sh --prepare)")
  done
  [ -f node_modules/node-addon-api/napi.h ] ||
    missing+=("node_modules/node-addon-api/napi.h (carry node_modules/node-addon-api)")
  if ! command -v node > /dev/null 2>&1 && [ ! -f .device-carry/node.xz ]; then
    missing+=("node: none on PATH and no .device-carry/node.xz (carry .device-carry, from ../shared/device/pack.sh)")
  fi
  # A node with its Node-API headers beside it (as here) builds against those; the carried
  # one has none, so the headers must come from the carry (as scripts/build-cuda.js reads them).
  local own_headers=0
  if command -v node > /dev/null 2>&1 && [ -n "$(node scripts/nodedir.js 2> /dev/null)" ]; then own_headers=1; fi
  if (( ! own_headers )) && [ ! -f .device-carry/include/node_api.h ]; then
    missing+=(".device-carry/include/node_api.h (this node has no Node-API headers beside it; carry .device-carry)")
  fi
  if (( ${#missing[@]} )); then
    echo "carry check: missing, nothing was run:"
    printf '  - %s\n' "${missing[@]}"
    carry_missing=$(printf '%s; ' "${missing[@]%% (*}")
    return 1
  fi
  local want have
  want=$(sources_hash)
  have=$(cat "$stamp_file" 2>/dev/null || echo none)
  if [ "$want" = "$have" ]; then
    echo "carry check: ok (dist compiled from these sources: $have)"
  else
    echo "carry check: WARNING: dist stamp $have, sources $want: dist may be compiled from other sources" \
      "(bash scripts/gpu-check.sh --prepare compiles and stamps it)"
    row "dist matches the sources" "WARNING: stamp $have, sources $want" 0
  fi
  if [ "$self" = 1 ]; then
    local dc=ready
    [ -f .device-carry/node.xz ] && [ -f .device-carry/include/node_api.h ] || dc="not prepared (bash scripts/gpu-check.sh --prepare)"
    echo "carry check (self-test): .device-carry for the device: $dc"
  fi
  return 0
}

# compute-sanitizer: on PATH, else beside the toolkit the build used (its bin/, or its
# compute-sanitizer/ folder), the system toolkits, the PyPI wheels' folder. Prints the path,
# or the places looked at (and returns 1).
find_sanitizer() {
  local tk c looked=(PATH)
  if c=$(command -v compute-sanitizer 2> /dev/null); then echo "$c"; return 0; fi
  tk=$(sed -n 's/^\[kradagrad\] CUDA toolkit: \(.*\) ([^)]*)$/\1/p' "$log" | head -1)
  local wheels=${KRAD_CUDA_WHEELS_DIR:-$root/.cache/cuda13}/nvidia/cu13
  for d in ${tk:+"$tk"} /usr/local/cuda-13.0 /usr/local/cuda "$wheels"; do
    [[ " ${looked[*]} " == *" $d/bin "* ]] && continue
    for c in "$d/bin/compute-sanitizer" "$d/compute-sanitizer/compute-sanitizer"; do
      [ -x "$c" ] && { echo "$c"; return 0; }
    done
    looked+=("$d/bin")
  done
  echo "${looked[*]}" | sed 's/ /, /g'
  return 1
}

main() {
  echo "== gpu-check $stamp in $root (self-test: $self, budget ${budget}s)"
  # 1. what was carried, node and the device
  if ! check_carry; then row "carry check" "FAILED: missing ${carry_missing%; }" 0; return 1; fi
  row "carry check" ok 0
  if ! command -v node > /dev/null 2>&1; then
    xz -dc .device-carry/node.xz > /tmp/node && chmod +x /tmp/node && export PATH=/tmp:$PATH
  fi
  echo "node $(node --version) at $(command -v node)"
  if command -v nvidia-smi >/dev/null 2>&1; then
    gpu=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | head -1)
  else
    gpu="none (nvidia-smi not found)"
  fi
  echo "GPU: $gpu"
  publish "running"

  # 2. build both addons (the CPU addon too: node-gyp is not on that machine)
  local cuda_root=()
  for d in /usr/local/cuda-13.0 /usr/local/cuda; do
    if [ -x "$d/bin/nvcc" ]; then cuda_root=(--cuda-root="$d"); break; fi
  done
  step "build (cmake, $(nproc) jobs)" 240 node scripts/build-cuda.js --force --plain-cmake \
    --targets=kradagrad_cuda,kradagrad_cpu --jobs="$(nproc)" "${cuda_root[@]}" || return 1
  export KRADAGRAD_CUDA_ADDON=$root/build-cuda/Release/kradagrad_cuda.node
  export KRADAGRAD_CPU_ADDON=$root/build-cuda/Release/kradagrad_cpu.node

  # 3. every op on CUDA vs CPU, the eigensolver paths' timings and the solver lanes
  group=ops
  if [ "$self" = 1 ]; then
    step "ops: CPU inside the CUDA addon vs CPU addon (self-test); eigh timings, sizes / 8" 200 \
      node dist/bench/gpu-ops.js --self --out="$results" --bench-eigh
  else
    step "ops: CUDA vs CPU, float32 + float64; eigh timings; 1/4/12 lanes on 12 x 1024" 200 \
      node dist/bench/gpu-ops.js --out="$results" --bench-eigh
  fi

  # 3b. NCCL device collectives and the sharded step on CUDA (its own build of kradagrad_nccl.so)
  group=nccl
  if [ "$self" = 1 ]; then
    step "NCCL: build and emulated device path (self-test)" 240 env GPU_CHECK_PARENT=1 GPU_CHECK_SELF=1 \
      GPU_CHECK_RESULTS="$results" bash scripts/gpu-check-nccl.sh
  else
    step "NCCL: device collectives and the sharded step, np 1 (np 2 with 2 GPUs)" 240 env GPU_CHECK_PARENT=1 \
      GPU_CHECK_RESULTS="$results" bash scripts/gpu-check-nccl.sh
  fi

  # 4. golden replay
  group=golden
  if [ -f dist/lib/cli/main.js ]; then
    step "golden replay ($be)" 120 node dist/lib/cli/main.js golden test/fixtures/golden-reference.json \
      --backend "$be" --json "$results/golden-$be-$stamp.json"
  else
    skip "golden replay ($be)" "dist/lib/cli/main.js not built"
  fi

  # 5. the step benchmark as shipped, then one switch at a time (same machine, same run).
  #    "fused off" (KRADAGRAD_CUDA_NO_FUSED_MULTI): multi-tensor ops, allFiniteMany,
  #    boxesMany and the one-launch inverseUpdate go back to one launch per tensor / the
  #    three-launch update; "syrk off" (KRADAGRAD_CUDA_NO_SYRK): Gram products by the batched
  #    gemm; lanes (KRADAGRAD_CUDA_EIGH_STREAMS): 1 = one syevd at a time, 12 = all twelve
  #    1024 factors of a dim at once; "previous kernels": all three off together.
  local sets=resnet32,mlp mlp=mlp asshipped=() opts=adam,shampoo32,kradstar32
  if [ "$self" = 1 ]; then sets=tiny; mlp=tiny; asshipped=(--sets resnet32,tiny); fi  # the CPU takes minutes per MLP run
  group=step
  bench_step "step benchmark, as shipped ($be)" 240 "as shipped" "$results/step-$be-$stamp" -- "${asshipped[@]}"
  group=variants
  bench_step "step benchmark, previous kernels: fused off, syrk off, 1 lane ($be)" 90 "previous kernels" \
    "$results/step-previous-$be-$stamp" KRADAGRAD_CUDA_NO_FUSED_MULTI=1 KRADAGRAD_CUDA_NO_SYRK=1 \
    KRADAGRAD_CUDA_EIGH_STREAMS=1 -- --sets "$sets" --optimizers "$opts"
  bench_step "step benchmark, fused kernels off ($be)" 90 "fused off" "$results/step-nofused-$be-$stamp" \
    KRADAGRAD_CUDA_NO_FUSED_MULTI=1 -- --sets "$sets" --optimizers "$opts"
  bench_step "step benchmark, syrk off ($be)" 60 "syrk off" "$results/step-nosyrk-$be-$stamp" \
    KRADAGRAD_CUDA_NO_SYRK=1 -- --sets "$mlp" --optimizers "$opts"
  bench_step "step benchmark, 1 solver lane ($be)" 60 "1 lane" "$results/step-lanes1-$be-$stamp" \
    KRADAGRAD_CUDA_EIGH_STREAMS=1 -- --sets "$mlp" --optimizers "$opts"
  bench_step "step benchmark, 12 solver lanes ($be)" 60 "12 lanes" "$results/step-lanes12-$be-$stamp" \
    KRADAGRAD_CUDA_EIGH_STREAMS=12 -- --sets "$mlp" --optimizers "$opts"
  bench_step "step benchmark, rootMethod newton ($be)" 120 "newton roots" "$results/step-newton-$be-$stamp" \
    -- --sets "$sets" --optimizers shampoo32,kradstar32 --root-method newton

  # 6. conditioning
  group=conditioning
  if [ -f dist/lib/cli/main.js ]; then
    step "conditioning benchmark ($be)" 90 node dist/lib/cli/main.js bench conditioning --backend "$be" --no-png \
      --out "$results/conditioning-$be-$stamp"
  fi

  # 7. compute-sanitizer memcheck, last. First: the case filter still selects every group
  #    named above (case names change; a filter that matches nothing would pass vacuously).
  group=sanitizer
  step "sanitizer case filter covers every kernel group" 30 node -e '
    const { opCases } = require("./dist/test/support/gpu_op_cases");
    const re = new RegExp(process.argv[1]);
    const names = opCases().map((c) => c.name).filter((n) => re.test(n));
    const groups = process.argv.slice(2);
    for (const g of groups) console.log(`${g}: ${names.filter((n) => new RegExp(g).test(n)).length} cases`);
    const missing = groups.filter((g) => !names.some((n) => new RegExp(g).test(n)));
    console.log(`filter ${process.argv[1]}: ${names.length} cases selected`);
    if (missing.length) { console.log(`no selected case for: ${missing.join(", ")}`); process.exit(1); }' \
    "$san_filter" "${san_groups[@]}"
  local san
  if ! want sanitizer; then
    skip "compute-sanitizer memcheck" "not in GPU_CHECK_STEPS"
  elif [ "$self" = 1 ]; then
    if san=$(find_sanitizer); then skip "compute-sanitizer memcheck" "self-test, no GPU; found $san"
    else skip "compute-sanitizer memcheck" "self-test, no GPU; not found in $san"; fi
  elif san=$(find_sanitizer); then
    step "compute-sanitizer memcheck ($san)" 180 "$san" --tool memcheck --error-exitcode 1 \
      node dist/bench/gpu-ops.js --filter="$san_filter"
  else
    skip "compute-sanitizer memcheck" "not found in $san"
  fi
  return 0
}

if [ -n "$outdir" ]; then
  main 2>&1 | tee "$log" "$outdir/$(basename "$log")"
else
  main 2>&1 | tee "$log"
fi
rc=${PIPESTATUS[0]}
# A failed or timed-out step fails the check.
if (( rc == 0 )) && grep -qE '\| (FAILED|TIMED OUT)' "$rowsfile"; then rc=1; fi
publish "finished: exit status $rc"
cat "$summary"
[ -n "$outdir" ] && echo "in \$OUT: $(ls "$outdir" | tr '\n' ' ')"
rm -f "$marker" "$rowsfile" "$specsfile" "$tablesfile"
exit "$rc"
