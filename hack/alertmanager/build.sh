#!/usr/bin/env bash
# Builds the real Alertmanager and amtool from the module pinned in hack/alertmanager/go.mod into
# $1 (a bin dir). Alertmanager's web UI is built by npm and committed to no module zip, so
# `go build` of the published module fails on `//go:embed app/dist`. The build copies the
# verified module source out of the module cache, adds a one-page placeholder for the UI
# (the API, which kaccess and the tests use, is untouched) and builds it with a copy of go.mod that
# replaces the module by that directory. Nothing else of Alertmanager is changed.
set -euo pipefail

bin="${1:?usage: build.sh BIN_DIR}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
go="${GO:-go}"
cd "${here}"
"${go}" mod download github.com/prometheus/alertmanager
src="$("${go}" list -m -f '{{.Dir}}' github.com/prometheus/alertmanager)"
version="$("${go}" list -m -f '{{.Version}}' github.com/prometheus/alertmanager)"

work="${bin}/.src/alertmanager-${version}"
rm -rf "${work}"
rmdir "${bin}/.src" 2>/dev/null || true
mkdir -p "${work}"
cp -r "${src}" "${work}/alertmanager"
chmod -R u+w "${work}/alertmanager"
for ui in elm mantine; do
	mkdir -p "${work}/alertmanager/ui/app/dist/${ui}"
	cat >"${work}/alertmanager/ui/app/dist/${ui}/index.html" <<'HTML'
<!doctype html>
<title>Alertmanager</title>
<p>This Alertmanager was built from its Go module, which holds no web UI assets. Use the API (/api/v2) or amtool.</p>
HTML
done
# -modfile: this module's go.mod and go.sum with one replace, so the module graph is the one
# go.mod pins and only the source directory of Alertmanager differs.
cp go.mod "${work}/go.mod"
cp go.sum "${work}/go.sum"
"${go}" mod edit -modfile="${work}/go.mod" -replace="github.com/prometheus/alertmanager=${work}/alertmanager"

"${go}" build -modfile="${work}/go.mod" -ldflags "-X github.com/prometheus/common/version.Version=${version#v}" -o "${bin}/alertmanager" github.com/prometheus/alertmanager/cmd/alertmanager
"${go}" build -modfile="${work}/go.mod" -ldflags "-X github.com/prometheus/common/version.Version=${version#v}" -o "${bin}/amtool" github.com/prometheus/alertmanager/cmd/amtool
rm -rf "${work}"
rmdir "${bin}/.src" 2>/dev/null || true
