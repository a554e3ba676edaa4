#!/usr/bin/env bash
# Fetches libchdb.so, the embedded ClickHouse engine the default audit store runs on, into
# .cache/chdb/<version>/libchdb.so (git-ignored). `npm pack` downloads the package tarball
# without running any install script. Idempotent: does nothing when the library is already there.
set -euo pipefail

version="${CHDB_VERSION:-26.7.3-stable.1}"
package="@chdb/lib-linux-x64-gnu@${version}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="${root}/.cache/chdb/${version}"
lib="${dir}/libchdb.so"

if [[ -s "${lib}" ]]; then
	echo "chdb: ${lib#"${root}"/} already present"
	exit 0
fi

command -v npm >/dev/null || { echo "chdb: npm is needed to fetch ${package} (apt-get install npm)" >&2; exit 1; }

tmp="$(mktemp -d "${root}/.cache/chdb.XXXXXX" 2>/dev/null || { mkdir -p "${root}/.cache"; mktemp -d "${root}/.cache/chdb.XXXXXX"; })"
trap 'rm -rf "${tmp}"' EXIT

echo "chdb: downloading ${package} (about 178 MB)"
(cd "${tmp}" && npm pack --silent "${package}" >/dev/null)
tarball="$(ls "${tmp}"/*.tgz)"

echo "chdb: unpacking $(basename "${tarball}")"
tar -xzf "${tarball}" -C "${tmp}"
found="$(find "${tmp}/package" -name libchdb.so -type f | head -n 1)"
if [[ -z "${found}" ]]; then
	echo "chdb: ${package} holds no libchdb.so; its layout changed, update hack/chdb.sh" >&2
	exit 1
fi

mkdir -p "${dir}"
# Move into place last, so an interrupted run never leaves a partial library behind.
mv "${found}" "${lib}.tmp"
mv "${lib}.tmp" "${lib}"
echo "chdb: ready at ${lib#"${root}"/}"
echo "chdb: tests and the gateway find it with CHDB_LIB_PATH=${lib#"${root}"/} (or make chdb)"
