#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# On the offline GPU host (Ubuntu 24.04, CUDA 13, Python torch; no container engine, no apt): runs
# the build stage of docker/Dockerfile as written there (its RUN command for `make -o deps build`
# and docker/stage-runtime.sh, taken from the Dockerfile itself), with the distribution packages
# replaced by the unpacked Debian packages of ../shared/gpu/env.sh and the wheel's LibTorch by the
# host's. Then it runs the staged binaries with the staged LibTorch and CUDA libraries alone (the
# host's copies moved aside), loads a tiny checkpoint on cuda:0 and scrapes /metrics.
#   usage: tests/deploy/gpu_image_stage.sh DEBS_DIR ENV_SH TOKENIZER_JSON      (results in $OUT)
set -uo pipefail
debs=${1:?usage: gpu_image_stage.sh DEBS_DIR ENV_SH TOKENIZER_JSON}
env_sh=${2:?usage}
tokenizer=$(realpath "${3:?usage}")
out=${OUT:-/tmp/cpm-gpu-out}
mkdir -p "$out"
exec > >(tee "$out/gpu-image-stage.log") 2>&1

# shellcheck source=/dev/null
source "$env_sh" "$debs"
echo "== host"; date -u
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
echo "-- /proc/devices (systemd DeviceAllow names):"; grep -i nvidia /proc/devices
echo "-- cuDNN headers:"; ls /usr/include/cudnn*.h /usr/include/x86_64-linux-gnu/cudnn*.h /usr/local/cuda/include/cudnn*.h 2>/dev/null | head -3
python3 -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda)'

# The Dockerfile's interpreter path, pointing at the host's Python with torch.
mkdir -p /opt/torch/bin && ln -sf "$(command -v python3)" /opt/torch/bin/python
torch_lib=$(/opt/torch/bin/python -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
site=$(dirname "$(dirname "$torch_lib")")

echo "== the Dockerfile's build command"
cmd=$(awk '/^RUN --mount=type=cache,target=\/root\/.cache\/ccache/ {on=1; next} on {print; if ($0 !~ /\\$/) exit}' docker/Dockerfile)
echo "$cmd"
rm -rf /build /stage
# The host has no OpenCV (see ../shared/gpu/README.md): the image's CPM_WITH_OPENCV=OFF variant.
time env CPM_WITH_OPENCV=OFF JOBS=16 bash -c "set -e; $cmd" > "$out/stage-build.log" 2>&1
rc=$?
tail -n 25 "$out/stage-build.log"
if [ $rc -ne 0 ]; then
  # Expected on this host alone: the unpacked Debian packages under /opt/cpm-deps belong to no
  # installed package. Anything else is a real failure.
  unresolved=$(awk '/^stage-runtime: unresolved/ {on=1; next} on && /^  / {print}' "$out/stage-build.log")
  if [ -n "$unresolved" ] && ! grep -v '/opt/cpm-deps/' <<<"$unresolved" | grep -q .; then
    echo "stage-runtime: only /opt/cpm-deps libraries unresolved (expected here, no package list written)"
    [ -x /stage/opt/cpmd/bin/cpmd ] || { echo "FAILED: nothing staged"; exit 1; }
  else
    echo "FAILED: build stage command (rc $rc)"; exit 1
  fi
fi
du -sh /stage; ls -la /stage/opt/cpmd/bin /stage/opt/cpmd/lib; cat /stage/etc/ld.so.conf.d/cpmd.conf
echo "-- DT_NEEDED libcuda anywhere in the staged tree (the driver's, mounted by the container runtime):"
find /stage -name '*.so*' -type f -exec sh -c 'readelf -d "$1" 2>/dev/null | grep -q "NEEDED.*libcuda.so" && echo "$1"' _ {} \; | head

echo "== the staged binaries with the staged LibTorch and CUDA libraries only"
mv "$site/torch/lib" "$site/torch/lib.host"
[ -d "$site/nvidia" ] && mv "$site/nvidia" "$site/nvidia.host"
export LD_LIBRARY_PATH=/stage/opt/cpmd/lib:/stage$torch_lib:$LD_LIBRARY_PATH
bin=/stage/opt/cpmd/bin
$bin/cpmd --version
$bin/cpm-tool mkmodel --out /tmp/tiny --preset tiny --tokenizer "$tokenizer" || exit 1
data=$(mktemp -d)
$bin/cpmd --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --data-dir "$data" --model /tmp/tiny \
  --device cuda >"$out/cpmd.log" 2>&1 &
pid=$!
for _ in $(seq 100); do grep -q 'cpmd ready' "$out/cpmd.log" && break; sleep 0.1; done
port=$(sed -n 's/.*msg="grpc listening".* port=\([0-9]*\).*/\1/p' "$out/cpmd.log")
mport=$(sed -n 's/.*msg="metrics listening".* port=\([0-9]*\).*/\1/p' "$out/cpmd.log")
for _ in $(seq 300); do $bin/cpmctl --server "127.0.0.1:$port" health --service cpm.v1.Ocr >/dev/null 2>&1 && break; sleep 0.1; done
$bin/cpmctl --server "127.0.0.1:$port" health --service cpm.v1.Ocr; echo "health cpm.v1.Ocr rc=$?"
$bin/cpmctl --server "127.0.0.1:$port" info
curl -s "http://127.0.0.1:$mport/metrics" > "$out/metrics-cuda.txt"
echo "-- GPU series in the scrape:"; grep -E '^cpm_gpu_|^cpm_build_info' "$out/metrics-cuda.txt"
kill -TERM "$pid"; wait "$pid"; echo "cpmd exit code on SIGTERM: $?"
mv "$site/torch/lib.host" "$site/torch/lib"
[ -d "$site/nvidia.host" ] && mv "$site/nvidia.host" "$site/nvidia"
cp /stage/opt/cpmd/share/runtime-packages.txt "$out/" 2>/dev/null
echo "== done"
