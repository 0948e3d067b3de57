#!/bin/sh
# Builds the wheelhouse the pacsvault_appliance role installs from: the
# pacsvault wheel of this checkout and a wheel of every dependency. Run it on
# the controller (with network access, e.g. at the office) before going to
# site; the appliances then install with --no-index and need no internet.
#
#   ansible/build-wheelhouse.sh [OUT_DIR]     (default: ansible/wheelhouse)
#
# The wheels must fit the appliance's Python, CPython 3.11 on Debian 12, so
# this runs pip of a Python 3.11 on x86-64 Linux: $PYTHON, default python3.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
out=${1:-$here/wheelhouse}
python=${PYTHON:-python3}

version=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [ "$version" != "3.11" ]; then
    echo "build-wheelhouse: $python is Python $version; the appliances run 3.11." >&2
    echo "build-wheelhouse: set PYTHON to a Python 3.11, e.g. PYTHON=python3.11 $0" >&2
    exit 2
fi

# A fresh folder: a stale pacsvault wheel beside the new one would be ambiguous.
rm -rf "$out"
mkdir -p "$out"
"$python" -m pip wheel --quiet --wheel-dir "$out" "$repo"
echo "build-wheelhouse: $(ls "$out" | wc -l) wheels in $out"
