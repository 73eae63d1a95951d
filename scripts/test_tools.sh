#!/usr/bin/env bash
# Tools the C interface tests use (ffi/tests/c_api.rs), installed with apt when missing.
set -euo pipefail
missing=()
for tool in gcc g++ pkg-config cmake valgrind; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if [[ ${#missing[@]} -gt 0 ]]; then
  packages=()
  for tool in "${missing[@]}"; do
    case $tool in
      gcc) packages+=(gcc libc6-dev) ;;
      *) packages+=("$tool") ;;
    esac
  done
  sudo=()
  [[ $(id -u) -eq 0 ]] || sudo=(sudo)
  echo "installing ${packages[*]} for the C interface tests" >&2
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}"
fi
