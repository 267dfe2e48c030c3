#!/bin/sh
# Build the gensim Fortran binding (module gensim_client over the C client) and its example decay.
# Usage: clients/fortran/build.sh [output folder]   (default: clients/fortran/build)
# Needs gfortran besides what clients/c/build.sh needs (Debian: apt-get install gfortran).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/build}
mkdir -p "$out"
"$here/../c/build.sh" "$out" > /dev/null
fc=${FC:-gfortran}
flags="-std=f2018 -O2 -Wall -Werror -J$out"
$fc $flags -c "$here/gensim_client.f90" -o "$out/gensim_client_f.o"
$fc $flags "$here/examples/decay.f90" "$out/gensim_client_f.o" -o "$out/decay" -L"$out" -lgensim_client -lzmq -lcrypto
echo "built $out/gensim_client.mod and $out/decay"
