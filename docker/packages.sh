#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Prints, one per line, the Debian/Ubuntu packages of the named sections of
# deploy/debian-packages.txt, the list deploy/install-deps.sh installs (one source of truth: the
# Dockerfile installs through this script and names no package of that list itself).
#
#   docker/packages.sh LIST SECTION... [--except PKG...]
#
# A section starts at a comment line that follows a blank line (`# toolchain`, `# libraries
# (build + run)`, `# tests: ...`) and is named by its first word. The list is read as
# install-deps.sh reads it: `#` starts a comment, blanks are ignored. Fails when a section or an
# excepted package is not in the list, so that a renamed section cannot silently empty an image.
set -euo pipefail
list=${1:?usage: packages.sh LIST SECTION... [--except PKG...]}
shift
sections=()
except=()
while [ $# -gt 0 ]; do
  case $1 in
    --except) shift; except=("$@"); break ;;
    *) sections+=("$1"); shift ;;
  esac
done
[ ${#sections[@]} -gt 0 ] || { echo "packages.sh: name at least one section" >&2; exit 2; }

# "section<TAB>package" for every package line.
tagged=$(awk '
  /^[[:space:]]*$/ { blank = 1; next }
  /^[[:space:]]*#/ { if (blank) { s = $0; sub(/^[[:space:]]*#[[:space:]]*/, "", s); split(s, w, /[^A-Za-z0-9_-]/); section = w[1] }
                     blank = 0; next }
  { blank = 0; line = $0; sub(/#.*/, "", line); gsub(/[[:space:]]/, "", line); if (line != "") print section "\t" line }
' "$list")

for s in "${sections[@]}"; do
  grep -q "^$s	" <<<"$tagged" || { echo "packages.sh: no section '$s' in $list" >&2; exit 1; }
done
for p in "${except[@]}"; do
  grep -q "	$p\$" <<<"$tagged" || { echo "packages.sh: '$p' (--except) is not in $list" >&2; exit 1; }
done
while IFS=$'\t' read -r section pkg; do
  for s in "${sections[@]}"; do
    if [ "$section" = "$s" ]; then
      skip=0
      for p in "${except[@]}"; do [ "$p" = "$pkg" ] && skip=1; done
      [ $skip -eq 1 ] || echo "$pkg"
    fi
  done
done <<<"$tagged"
