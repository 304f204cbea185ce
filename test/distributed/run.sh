#!/usr/bin/env bash
# Runs the distributed checks by hand, outside jest: the ranks.js suite under
# `mpirun -np 2` and `-np 3` (oversubscribed), then MPI singleton init (no launcher).
# The jest suite test/distributed/mpi.test.ts runs the same and the fault scenarios.
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
