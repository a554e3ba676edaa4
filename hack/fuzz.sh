#!/usr/bin/env bash
# Runs every native Go fuzz target in the module for FUZZTIME each (go test -fuzz takes one
# target at a time). Targets are found by their declaration, so a new one is picked up without
# editing this file. A crasher is written to the package's testdata/fuzz/<Target>/ and fails
# the run; commit it with the fix, and it stays a regression test of plain `go test`.
#   FUZZTIME=10s hack/fuzz.sh            all targets
#   FUZZTIME=1m hack/fuzz.sh FuzzVerify  the targets named
set -euo pipefail

fuzztime="${FUZZTIME:-10s}"
go="${GO:-go}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${root}"

mapfile -t found < <(grep -rEo --include='*_test.go' '^func Fuzz[A-Za-z0-9_]+\(f \*testing\.F\)' cmd internal hack |
	sed -E 's|^(.*)/[^/]+_test\.go:func (Fuzz[A-Za-z0-9_]+).*|\1 \2|' | sort -u)

targets=()
for t in "${found[@]}"; do
	if [[ $# -eq 0 ]] || [[ " $* " == *" ${t#* } "* ]]; then
		targets+=("${t}")
	fi
done
[[ ${#targets[@]} -gt 0 ]] || { echo "fuzz: no target matches: $*" >&2; exit 2; }

start=${SECONDS}
i=0
for t in "${targets[@]}"; do
	i=$((i + 1))
	dir="${t% *}" name="${t#* }"
	echo ">> fuzz [${i}/${#targets[@]}] ./${dir} ${name} for ${fuzztime}"
	# -run '^$': the package's tests run in `make test`; here only the target.
	if ! "${go}" test -run '^$' -fuzz "^${name}\$" -fuzztime "${fuzztime}" -timeout 10m "./${dir}" >"${TMPDIR:-/tmp}/kaccess-fuzz.log" 2>&1; then
		cat "${TMPDIR:-/tmp}/kaccess-fuzz.log"
		echo "fuzz: ${name} failed; the input is under ./${dir}/testdata/fuzz/${name}/" >&2
		exit 1
	fi
	tail -n 1 "${TMPDIR:-/tmp}/kaccess-fuzz.log" | sed 's/^/   /'
done
echo ">> fuzz: ${#targets[@]} targets in $((SECONDS - start))s"
