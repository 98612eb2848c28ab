#!/usr/bin/env bash
# Formats every C++ / CUDA source with the repository's .clang-format (Debian 12's clang-format 14).
#   bash tools/format.sh           # rewrite the files in place
#   bash tools/format.sh --check   # list the files that differ and exit 1 (CI)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v clang-format > /dev/null || { echo "format: clang-format not found (tools/install-deps.sh installs it)"; exit 1; }
mapfile -t files < <(git ls-files '*.cpp' '*.h' '*.cu' '*.cuh')
if [ "${1:-}" = --check ]; then
  bad=()
  for f in "${files[@]}"; do
    clang-format --style=file "$f" | cmp -s - "$f" || bad+=("$f")
  done
  if [ ${#bad[@]} -gt 0 ]; then
    printf 'format: %s differs from clang-format\n' "${bad[@]}"
    echo "format: ${#bad[@]} file(s) not formatted; run bash tools/format.sh"
    exit 1
  fi
  echo "format: ${#files[@]} files formatted"
else
  clang-format --style=file -i "${files[@]}"
fi
