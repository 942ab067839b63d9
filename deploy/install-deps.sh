#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Installs everything cpmd needs to build, test and run on Debian 12: the Debian packages listed in
# deploy/debian-packages.txt and the npm packages in deploy/npm-packages.txt (under .deps/npm).
# Idempotent: only what is missing is installed, so a second run takes a second.
# Needs root (or sudo) for apt-get.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

list() { sed -e 's/#.*//' -e 's/[[:space:]]//g' "$1" | grep -v '^$'; }

missing=()
while read -r pkg; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done < <(list "$root/deploy/debian-packages.txt")
# npm comes with Debian's nodejs + npm where the machine has no Node.js of its own.
command -v npm >/dev/null || missing+=(nodejs npm)

if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${#missing[@]} Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

npm_dir="$root/.deps/npm"
while read -r spec; do
  name=${spec%@*}
  want=${spec##*@}
  have=$(node -e "try{console.log(require('$npm_dir/node_modules/$name/package.json').version)}catch(e){}" 2>/dev/null || true)
  if [ "$have" != "$want" ]; then
    echo "install-deps: npm install $spec"
    mkdir -p "$npm_dir"
    npm install --prefix "$npm_dir" --no-audit --no-fund --loglevel=error "$spec"
  fi
done < <(list "$root/deploy/npm-packages.txt")
echo "install-deps: all dependencies present"
