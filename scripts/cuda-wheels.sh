#!/usr/bin/env bash
# Installs the pinned CUDA 13.0 toolkit pieces that NVIDIA publishes on PyPI into
# .cache/cuda13 (or $KRAD_CUDA_WHEELS_DIR), enough to compile and link the CUDA addon on a
# machine without a GPU or a system CUDA. Idempotent: a stamp file records the pins, and a
# second run with the same pins only re-checks the links. Prints the toolkit root
# (usable as CUDAToolkit_ROOT) on its last line; NCCL is in <that>/../nccl.
#
# The versions match the GPU machine's CUDA 13.0 (update 1). The wheels land in
# <target>/nvidia/cu13/{bin,include,lib,nvvm}. cuSOLVER needs cuSPARSE and nvJitLink at
# load time (and CMake's CUDA::cusolver target lists cuSPARSE), so those are pinned too,
# to their CUDA 13.0 update 1 versions; pip would otherwise pick the newest.
# NCCL (for the device collectives of kradagrad/distributed: the kradagrad_nccl library
# beside the CUDA addon) is its own wheel, in <target>/nvidia/nccl/{include,lib}: 2.27.7
# is the release built for CUDA 13.0 (pip lists 2.27.7 to 2.32.6 for cu13); a newer
# libnccl.so.2 found at run time is ABI-compatible with what is compiled against it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
target=${KRAD_CUDA_WHEELS_DIR:-$root/.cache/cuda13}
pins=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-cuda-runtime==13.0.96
  nvidia-cuda-crt==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-cccl==13.0.85
  nvidia-cublas==13.1.0.3
  nvidia-cusolver==12.0.4.66
  nvidia-cusparse==12.6.3.3
  nvidia-nvjitlink==13.0.88
  nvidia-nccl-cu13==2.27.7
)
want=$(printf '%s\n' "${pins[@]}")
cu=$target/nvidia/cu13

if [ -f "$target/.pins" ] && [ "$(cat "$target/.pins")" = "$want" ] && [ -x "$cu/bin/nvcc" ]; then
  echo "[cuda-wheels] CUDA 13.0 wheels already in ${target#"$root"/}" >&2
else
  py=$(command -v python3 || command -v python || true)
  [ -n "$py" ] || { echo "[cuda-wheels] python3 with pip is needed to fetch the CUDA wheels" >&2; exit 1; }
  echo "[cuda-wheels] installing ${#pins[@]} pinned CUDA 13.0 wheels into ${target#"$root"/} (about 1 GB download)" >&2
  start=$(date +%s)
  rm -rf "$target.tmp"
  mkdir -p "$(dirname "$target")"
  # --no-deps: the pins above are the whole closure; nothing else may sneak in.
  PIP_ROOT_USER_ACTION=ignore "$py" -m pip install --quiet --disable-pip-version-check --no-deps --no-compile \
    --target "$target.tmp" "${pins[@]}" >&2
  rm -rf "$target"
  mv "$target.tmp" "$target"
  echo "$want" > "$target/.pins"
  echo "[cuda-wheels] done in $(( $(date +%s) - start )) s" >&2
fi

[ -x "$cu/bin/nvcc" ] || { echo "[cuda-wheels] $cu/bin/nvcc missing after install" >&2; exit 1; }
nccl=$target/nvidia/nccl
[ -f "$nccl/include/nccl.h" ] && [ -f "$nccl/lib/libnccl.so.2" ] || { echo "[cuda-wheels] NCCL (nccl.h, libnccl.so.2) missing under $nccl after install" >&2; exit 1; }
# The wheels ship only versioned sonames (libcublas.so.13, libnccl.so.2); the linker and
# CMake's find_library look for the unversioned development names.
for f in "$cu"/lib/lib*.so.* "$nccl"/lib/lib*.so.*; do
  dir=${f%/*}
  base=${f##*/}
  dev=${base%%.so.*}.so
  [ -e "$dir/$dev" ] || ln -s "$base" "$dir/$dev"
done
# Some tools look in lib64.
[ -e "$cu/lib64" ] || ln -s lib "$cu/lib64"
echo "$cu"
