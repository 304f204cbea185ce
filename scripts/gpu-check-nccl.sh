#!/usr/bin/env bash
# The NCCL check for the GPU machine (see ../shared/GPU.md and bench/results/gpu-next-run.md):
# kradagrad/distributed's device collectives and the sharded optimizers on CUDA with NCCL,
# one rank per GPU. Prepared on a machine without a GPU; it has not run on one yet.
#
# Alone (through the device tool; carry .device-carry, dist, node_modules/node-addon-api and,
# for nccl.h in case Python's NCCL wheel lacks it, .cache/cuda13/nvidia/nccl/include):
#     bash scripts/gpu-check-nccl.sh
# or as the "nccl" group of scripts/gpu-check.sh (which sets GPU_CHECK_PARENT=1).
#
# Steps:
#   1. node (from .device-carry when not on PATH); the GPUs (nvidia-smi -L)
#   2. NCCL: $KRAD_NCCL_ROOT, else Python's nvidia-nccl-cu13 wheel (PyTorch brings one), with
#      the carried nccl.h when that wheel has no header; the CUDA toolkit: /usr/local/cuda-13.0
#   3. build kradagrad_cuda.node, kradagrad_cpu.node and kradagrad_nccl.so (plain cmake),
#      and the MPI addon when mpicc exists
#   4. under `mpirun -np 1` (OpenMPI present) or with a stand-in world of one (no MPI there):
#      node test/distributed/nccl_ranks.js gpu: initNccl; device allReduce (sum, mean) /
#      allGather (equal and unequal lengths) / broadcast against the host results; coded
#      errors; the sharded optimizers (KrADagrad* fp32/fp64, KrADagrad, Shampoo fp32/fp64,
#      Adam) on CUDA through NCCL against the same on CUDA through host memory, 8 steps each:
#      parameters bitwise equal. With two GPUs or more and OpenMPI, the same at -np 2.
# Results: $GPU_CHECK_RESULTS (default bench/results)/nccl-gpu-<stamp>-np<N>.json and
# nccl-gpu-<stamp>-log.txt; alone, also copied to $OUT.
#
# GPU_CHECK_SELF=1 (no GPU, e.g. here): steps 1-3 with whatever toolkit build-cuda.js finds
# (the PyPI wheels), then the emulated scenario instead of step 4: it checks this script.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
stamp=$(date -u +%Y%m%dT%H%M%SZ)
results=${GPU_CHECK_RESULTS:-bench/results}
self=${GPU_CHECK_SELF:-0}
mkdir -p "$results"
log=$results/nccl-gpu-$stamp-log.txt
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1

main() {
  echo "== gpu-check-nccl $stamp in $root (self-test: $self)"
  if ! command -v node > /dev/null 2>&1; then
    [ -f .device-carry/node.xz ] || { echo "no node and no .device-carry/node.xz (carry .device-carry)"; return 1; }
    xz -dc .device-carry/node.xz > /tmp/node && chmod +x /tmp/node && export PATH=/tmp:$PATH
  fi
  echo "node $(node --version)"
  [ -f dist/lib/distributed/nccl.js ] || { echo "dist/lib/distributed/nccl.js missing: compile the TypeScript here first and carry dist"; return 1; }
  local ngpu=0
  if command -v nvidia-smi > /dev/null 2>&1; then
    nvidia-smi -L
    ngpu=$(nvidia-smi -L | grep -c '^GPU ')
  fi
  echo "GPUs: $ngpu"

  # 2. NCCL and the toolkit
  if [ -z "${KRAD_NCCL_ROOT:-}" ] && [ ! -f .cache/cuda13/nvidia/nccl/lib/libnccl.so.2 ]; then
    local py
    py=$(python3 -c "import importlib.util as u; s=u.find_spec('nvidia.nccl'); print(list(s.submodule_search_locations)[0] if s else '')" 2>/dev/null)
    echo "Python's NCCL: ${py:-none}"
    if [ -n "$py" ] && ls "$py"/lib/libnccl.so* > /dev/null 2>&1; then
      if [ -f "$py/include/nccl.h" ]; then
        export KRAD_NCCL_ROOT=$py
      elif [ -f .cache/cuda13/nvidia/nccl/include/nccl.h ]; then
        # The wheel's library with the carried header (2.27.7's; a newer libnccl.so.2 is ABI-compatible).
        mkdir -p /tmp/krad-nccl/lib && cp -r .cache/cuda13/nvidia/nccl/include /tmp/krad-nccl/
        ln -sf "$py"/lib/libnccl.so.2 /tmp/krad-nccl/lib/libnccl.so.2
        ln -sf libnccl.so.2 /tmp/krad-nccl/lib/libnccl.so
        export KRAD_NCCL_ROOT=/tmp/krad-nccl
      fi
    fi
  fi
  echo "KRAD_NCCL_ROOT=${KRAD_NCCL_ROOT:-(build-cuda.js looks for it)}"
  local cuda_root=()
  for d in /usr/local/cuda-13.0 /usr/local/cuda; do
    if [ -x "$d/bin/nvcc" ]; then cuda_root=(--cuda-root="$d"); break; fi
  done

  # 3. build
  echo "== build"
  node scripts/build-cuda.js --plain-cmake --require-nccl --targets=kradagrad_cuda,kradagrad_cpu,kradagrad_nccl \
    --jobs="$(nproc)" "${cuda_root[@]}" || { echo "build FAILED"; return 1; }
  export KRADAGRAD_CUDA_ADDON=$root/build-cuda/Release/kradagrad_cuda.node
  export KRADAGRAD_CPU_ADDON=$root/build-cuda/Release/kradagrad_cpu.node
  readelf -d build-cuda/Release/kradagrad_nccl.so | grep -E 'NEEDED|RUNPATH'
  local mpi=0
  if command -v mpicc > /dev/null 2>&1 && command -v mpirun > /dev/null 2>&1; then
    node scripts/build-mpi.js --quiet && mpi=1
  fi
  echo "OpenMPI: $([ $mpi = 1 ] && mpirun --version | head -1 || echo 'not available: a stand-in world of one')"

  # 4. the checks
  local rc=0
  if [ "$self" = 1 ]; then
    echo "== self-test (no GPU): the emulated scenario"
    if [ $mpi = 1 ]; then
      timeout 300 mpirun --oversubscribe --bind-to none --mca btl_vader_single_copy_mechanism none -np 2 \
        node test/distributed/nccl_ranks.js emulated || rc=1
    else
      echo "no MPI here: nothing more to run in the self-test"
    fi
    return $rc
  fi
  local json=$results/nccl-gpu-$stamp-np1.json
  echo "== np 1"
  if [ $mpi = 1 ]; then
    timeout 300 mpirun --bind-to none -np 1 node test/distributed/nccl_ranks.js gpu --json "$json" || rc=1
  else
    timeout 300 node test/distributed/nccl_ranks.js gpu --self-mpi --json "$json" || rc=1
  fi
  if [ $mpi = 1 ] && (( ngpu >= 2 )); then
    echo "== np 2 (one GPU per rank)"
    timeout 300 mpirun --bind-to none -np 2 node test/distributed/nccl_ranks.js gpu --json "$results/nccl-gpu-$stamp-np2.json" || rc=1
  else
    echo "== np 2: skipped ($ngpu GPU(s), OpenMPI $([ $mpi = 1 ] && echo present || echo absent))"
  fi
  return $rc
}

main 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
echo "gpu-check-nccl: exit status $rc; results in $results/nccl-gpu-$stamp-*" | tee -a "$log"
if [ -n "${OUT:-}" ] && [ "${GPU_CHECK_PARENT:-0}" != 1 ]; then
  cp "$results"/nccl-gpu-"$stamp"-* "$OUT"/ 2> /dev/null
fi
exit "$rc"
