#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Collects what the runtime image needs from a finished build, into STAGE (copied to / as is):
#   STAGE/opt/cpmd/bin/{cpmd,cpmctl,cpm-tool}, STAGE/opt/cpmd/lib/libcpm_sentencepiece.so
#   STAGE<torch>/lib and the wheel's nvidia/ libraries at their build paths (their RPATHs are
#     relative to each other), STAGE/etc/ld.so.conf.d/cpmd.conf naming the LibTorch directory
#   STAGE/opt/cpmd/share/runtime-packages.txt: the distribution packages that own every other
#     shared library the binaries load (from ldd + dpkg -S), so the runtime stage installs exactly
#     those (apt brings their own dependencies) and no list is kept by hand.
#
#   docker/stage-runtime.sh BUILD_DIR STAGE [TORCH_LIB_DIR]
#
# Without TORCH_LIB_DIR (a CPU build against Debian's libtorch-dev) LibTorch is a package like
# any other. Libraries that the NVIDIA container runtime mounts from the host (libcuda,
# libnvidia-*) are expected to be missing at build time and are skipped.
set -euo pipefail
build=${1:?usage: stage-runtime.sh BUILD_DIR STAGE [TORCH_LIB_DIR]}
stage=${2:?usage: stage-runtime.sh BUILD_DIR STAGE [TORCH_LIB_DIR]}
torch_lib=${3:-}

mkdir -p "$stage/opt/cpmd/bin" "$stage/opt/cpmd/lib" "$stage/opt/cpmd/share"
for b in cpmd cpmctl cpm-tool; do
  install -m 0755 "$build/bin/$b" "$stage/opt/cpmd/bin/$b"
done
# cpm_core opens the SentencePiece module from ../lib beside the executable.
install -m 0644 "$build/lib/libcpm_sentencepiece.so" "$stage/opt/cpmd/lib/"

elves=("$stage/opt/cpmd/bin/cpmd" "$stage/opt/cpmd/bin/cpmctl" "$stage/opt/cpmd/bin/cpm-tool"
       "$stage/opt/cpmd/lib/libcpm_sentencepiece.so")
private=()  # directories whose libraries travel as files, not as packages
if [ -n "$torch_lib" ]; then
  torch_lib=$(realpath "$torch_lib")
  site=$(dirname "$(dirname "$torch_lib")")          # .../site-packages
  mkdir -p "$stage$site/torch"
  cp -a "$torch_lib" "$stage$site/torch/"
  private+=("$site/torch/")
  if [ -d "$site/nvidia" ]; then                      # the wheel's CUDA libraries (cuBLAS, cuDNN, NCCL...)
    cp -a "$site/nvidia" "$stage$site/"
    private+=("$site/nvidia/")
  fi
  mkdir -p "$stage/etc/ld.so.conf.d"
  printf '%s\n%s\n' /opt/cpmd/lib "$torch_lib" > "$stage/etc/ld.so.conf.d/cpmd.conf"
  while IFS= read -r -d '' f; do elves+=("$f"); done < <(find "$torch_lib" -name '*.so*' -type f -print0)
fi

is_private() {
  local p
  for p in "${private[@]}" "$stage/" "$(realpath "$build")/"; do
    [[ $1 == "$p"* ]] && return 0
  done
  return 1
}

# Direct dependencies only (DT_NEEDED): apt installs what those packages need in turn.
declare -A paths=()
missing=()
for elf in "${elves[@]}"; do
  needed=$(readelf -d "$elf" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
  resolved=$(LD_LIBRARY_PATH="$stage/opt/cpmd/lib${torch_lib:+:$torch_lib}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ldd "$elf" 2>/dev/null || true)
  for soname in $needed; do
    line=$(grep -F "$soname =>" <<<"$resolved" | head -n1 || true)
    case $line in
      *"=> /"*)
        path=${line#*=> }; path=${path%% (*}
        is_private "$path" || paths[$path]=1 ;;
      *)
        case $soname in
          ld-linux*) ;;                                     # the loader: in the base image
          libcuda.so*|libnvidia*|libnvcuvid*) ;;            # the host driver's, mounted at run time
          *) missing+=("$elf needs $soname: not found") ;;
        esac ;;
    esac
  done
done

declare -A packages=()
for path in "${!paths[@]}"; do
  pkg=""
  for cand in "$path" "$(realpath "$path")"; do
    for spelling in "$cand" "/usr$cand" "${cand#/usr}"; do
      pkg=$(dpkg-query -S "$spelling" 2>/dev/null | head -n1 | cut -d: -f1) && [ -n "$pkg" ] && break 2
    done
  done
  if [ -n "$pkg" ]; then packages[$pkg]=1; else missing+=("$path: no package owns it"); fi
done
if [ ${#missing[@]} -gt 0 ]; then
  printf 'stage-runtime: unresolved shared libraries:\n' >&2
  printf '  %s\n' "${missing[@]}" | sort -u >&2
  exit 1
fi
# The base image has the C and C++ runtimes; listing them anyway is harmless.
printf '%s\n' "${!packages[@]}" | sort > "$stage/opt/cpmd/share/runtime-packages.txt"
echo "stage-runtime: $(wc -l < "$stage/opt/cpmd/share/runtime-packages.txt") runtime packages, $(du -sh "$stage" | cut -f1) staged"
