#!/bin/sh
# Build the gensim C client (a static library) and its example solver heat2d.
# Usage: clients/c/build.sh [output folder]   (default: clients/c/build)
# Needs a C11 compiler, libzmq and OpenSSL 3 development files
# (Debian: apt-get install gcc libzmq3-dev libssl-dev).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/build}
mkdir -p "$out"
cc=${CC:-cc}
flags="-std=c11 -D_DEFAULT_SOURCE -O2 -Wall -Wextra -Werror"
$cc $flags -c "$here/gensim_client.c" -o "$out/gensim_client.o"
ar rcs "$out/libgensim_client.a" "$out/gensim_client.o"
$cc $flags -I"$here" "$here/examples/heat2d.c" -o "$out/heat2d" -L"$out" -lgensim_client -lzmq -lcrypto -lm
echo "built $out/libgensim_client.a and $out/heat2d"
