#!/usr/bin/env bash
# Runs the distributed checks by hand, outside jest: the ranks.js suite under
# `mpirun -np 2` and `-np 3` (oversubscribed), then MPI singleton init (no launcher), then
# the sharded optimizers (shard.js: equivalence at np 2 and 3, checkpoints saved at 3 and
# loaded at 2, tfjs at 2). The jest suites test/distributed/mpi.test.ts and shard.test.ts
# run the same and the fault scenarios.
#   bash test/distributed/run.sh [extra mpirun arguments]
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v mpirun >/dev/null || { echo "mpirun not found: apt-get install openmpi-bin libopenmpi-dev" >&2; exit 1; }
node scripts/build-mpi.js --quiet
[ -f dist/lib/distributed/index.js ] || node node_modules/typescript/bin/tsc -p tsconfig.build.json
if [ "$(id -u)" = 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
export OPENBLAS_NUM_THREADS=1
for np in 2 3; do
  echo "== mpirun -np $np"
  mpirun --oversubscribe --bind-to none --mca btl_vader_single_copy_mechanism none "$@" \
    -np "$np" node test/distributed/ranks.js suite | grep -E '^(done|ok finalize)' | sort
done
echo "== singleton"
env -u OMPI_ALLOW_RUN_AS_ROOT -u OMPI_ALLOW_RUN_AS_ROOT_CONFIRM node test/distributed/ranks.js singleton
M=(mpirun --oversubscribe --bind-to none --mca btl_vader_single_copy_mechanism none "$@")
for np in 2 3; do
  echo "== sharded optimizers: mpirun -np $np shard.js equivalence"
  "${M[@]}" -np "$np" node test/distributed/shard.js equivalence | grep -E '^(done|info .* rank 0:)' | sort
done
ck=$(mktemp -d)
trap 'rm -rf "$ck"' EXIT
echo "== checkpoints: saved at np 3, loaded at np 2 and in one process"
"${M[@]}" -np 3 node test/distributed/shard.js ckpt-save "$ck" | grep -E '^done' | sort
"${M[@]}" -np 2 node test/distributed/shard.js ckpt-load "$ck" | grep -E '^done' | sort
echo "== tfjs data-parallel: mpirun -np 2"
"${M[@]}" -np 2 node test/distributed/shard.js tfjs | grep -E '^(done|info)' | sort
