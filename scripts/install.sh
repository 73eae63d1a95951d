#!/usr/bin/env bash
# Installs libhydrant under a prefix:
#
#   scripts/install.sh PREFIX [--lib-dir DIR] [--keep-debug]
#
#   PREFIX/include/hydrant.h, hydrant.hpp
#   PREFIX/lib/libhydrant.so.ABI (soname), libhydrant.so -> libhydrant.so.ABI, libhydrant.a
#   PREFIX/lib/pkgconfig/hydrant.pc           shared:  cc app.c $(pkg-config --cflags --libs hydrant)
#   PREFIX/lib/pkgconfig/hydrant-static.pc    static:  ... $(pkg-config --cflags --libs hydrant-static)
#   PREFIX/lib/cmake/hydrant/                 find_package(hydrant): hydrant::hydrant (shared),
#                                             hydrant::hydrant_static
#
# Builds the libraries with `cargo build --release -p hydrant-ffi` unless --lib-dir names a folder
# that already holds libhydrant.so and libhydrant.a (a cargo target/release folder). Debug info is
# stripped from the installed libraries (a fifth of the size) unless --keep-debug. The installed
# tree is relocatable: the pkg-config and CMake files find the prefix from their own location.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { echo "usage: $0 PREFIX [--lib-dir DIR] [--keep-debug]" >&2; exit 2; }
[[ $# -ge 1 ]] || usage
prefix=$1; shift
lib_dir=""
keep_debug=false
while [[ $# -gt 0 ]]; do
  case $1 in
    --lib-dir) [[ $# -ge 2 ]] || usage; lib_dir=$2; shift 2 ;;
    --keep-debug) keep_debug=true; shift ;;
    *) usage ;;
  esac
done
if [[ $(uname -s) != Linux ]]; then
  echo "install.sh: only Linux is handled (the soname and system libraries below are Linux's)" >&2
  exit 1
fi

if [[ -z $lib_dir ]]; then
  cargo build --release -p hydrant-ffi
  lib_dir=$(cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/release
fi
for f in libhydrant.so libhydrant.a; do
  [[ -f $lib_dir/$f ]] || { echo "install.sh: $lib_dir/$f not found" >&2; exit 1; }
done

# One place for the numbers: the ABI version (soname) and the package version.
abi=$(sed -n 's/^pub const HYDRANT_ABI_VERSION: u32 = \([0-9]*\);/\1/p' ffi/src/abi.rs)
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
[[ -n $abi && -n $version ]] || { echo "install.sh: cannot read the versions" >&2; exit 1; }
# System libraries a static libhydrant needs (`rustc --print native-static-libs` on Linux).
static_libs="-lgcc_s -lutil -lrt -lpthread -lm -ldl -lc"

mkdir -p "$prefix/include" "$prefix/lib/pkgconfig" "$prefix/lib/cmake/hydrant"
prefix=$(cd "$prefix" && pwd)
install -m 644 include/hydrant.h include/hydrant.hpp "$prefix/include/"
copy() { # SOURCE DEST MODE
  rm -f "$2"
  if $keep_debug || ! command -v strip >/dev/null; then
    cp "$1" "$2"
  else
    strip --strip-debug -o "$2" "$1"
  fi
  chmod "$3" "$2"
}
copy "$lib_dir/libhydrant.so" "$prefix/lib/libhydrant.so.$abi" 755
ln -sf "libhydrant.so.$abi" "$prefix/lib/libhydrant.so"
copy "$lib_dir/libhydrant.a" "$prefix/lib/libhydrant.a" 644

pc_head="prefix=\${pcfiledir}/../..
libdir=\${prefix}/lib
includedir=\${prefix}/include

Name: hydrant
Description: Embeddable runtime for multi-task neural networks (C interface)
Version: $version
Cflags: -I\${includedir}"
cat >"$prefix/lib/pkgconfig/hydrant.pc" <<EOF
$pc_head
Libs: -L\${libdir} -lhydrant
Libs.private: $static_libs
EOF
# tract's assembly objects carry no .note.GNU-stack; they do not need an executable stack.
cat >"$prefix/lib/pkgconfig/hydrant-static.pc" <<EOF
$pc_head
Libs: \${libdir}/libhydrant.a $static_libs -Wl,-z,noexecstack
EOF

cmake_libs=$(echo "$static_libs" | sed 's/-l//g; s/ /;/g')
cat >"$prefix/lib/cmake/hydrant/hydrantConfig.cmake" <<EOF
# hydrant $version: imported targets hydrant::hydrant (shared) and hydrant::hydrant_static.
get_filename_component(_hydrant_prefix "\${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)
if(NOT TARGET hydrant::hydrant)
  add_library(hydrant::hydrant SHARED IMPORTED)
  set_target_properties(hydrant::hydrant PROPERTIES
    IMPORTED_LOCATION "\${_hydrant_prefix}/lib/libhydrant.so.$abi"
    IMPORTED_SONAME "libhydrant.so.$abi"
    INTERFACE_INCLUDE_DIRECTORIES "\${_hydrant_prefix}/include")
  add_library(hydrant::hydrant_static STATIC IMPORTED)
  set_target_properties(hydrant::hydrant_static PROPERTIES
    IMPORTED_LOCATION "\${_hydrant_prefix}/lib/libhydrant.a"
    INTERFACE_INCLUDE_DIRECTORIES "\${_hydrant_prefix}/include"
    INTERFACE_LINK_LIBRARIES "$cmake_libs"
    INTERFACE_LINK_OPTIONS "-Wl,-z,noexecstack")
endif()
unset(_hydrant_prefix)
EOF
major=${version%%.*}
minor=$(echo "$version" | cut -d. -f2)
cat >"$prefix/lib/cmake/hydrant/hydrantConfigVersion.cmake" <<EOF
# Compatible when the installed version is at least the one requested, with the same major
# version (and the same minor one while the major is 0).
set(PACKAGE_VERSION "$version")
set(PACKAGE_VERSION_COMPATIBLE TRUE)
if(PACKAGE_FIND_VERSION)
  if(PACKAGE_VERSION VERSION_LESS PACKAGE_FIND_VERSION
     OR NOT PACKAGE_FIND_VERSION_MAJOR EQUAL $major
     OR ($major EQUAL 0 AND NOT PACKAGE_FIND_VERSION_MINOR EQUAL $minor))
    set(PACKAGE_VERSION_COMPATIBLE FALSE)
  elseif(PACKAGE_VERSION VERSION_EQUAL PACKAGE_FIND_VERSION)
    set(PACKAGE_VERSION_EXACT TRUE)
  endif()
endif()
EOF
echo "installed hydrant $version (ABI $abi) under $prefix"
