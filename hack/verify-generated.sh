#!/usr/bin/env bash
# Fails when the committed code under api/gen is not what hack/generate.sh makes from
# api/proto today (a proto edited without regenerating, or generated code edited by hand), when
# buf lint fails, or when api/proto breaks compatibility with the protos on main (buf breaking,
# FILE rules; AGAINST=<git ref> to compare with another). It regenerates into a temporary folder
# and compares; the work tree is not touched.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

"$ROOT/hack/generate.sh" --out "$tmp"

# Breaking-change check (buf, FILE rules) against the protos on AGAINST (default: main). buf's
# own `--against '.git#branch=main'` cannot be used: the workspace's second module, the fetched
# third-party protos, is not in git. So the old protos are taken from git, the same fetched
# protos are put beside them, and buf compares the two builds.
against="${AGAINST:-main}"
if ! git rev-parse --verify --quiet "$against^{commit}" >/dev/null; then
	echo ">> verify-generated: no git ref $against here; skipping the breaking-change check"
elif [ -z "$(git ls-tree -r --name-only "$against" -- api/proto)" ]; then
	echo ">> verify-generated: $against has no protos yet; nothing to check for breaking changes"
else
	echo ">> verify-generated: buf breaking against $against"
	mkdir -p "$tmp/against/.cache/proto"
	git archive "$against" buf.yaml api/proto | tar -x -C "$tmp/against"
	cp -R "$ROOT/.cache/proto/include" "$tmp/against/.cache/proto/include"
	"${GO:-go}" run github.com/bufbuild/buf/cmd/buf@v1.75.0 breaking --against "$tmp/against"
fi
echo ">> verify-generated: comparing api/gen with freshly generated code"
if ! diff -ru "$ROOT/api/gen" "$tmp/api/gen"; then
	echo "verify-generated: api/gen is stale; run hack/generate.sh (make generate) and commit the result" >&2
	exit 1
fi
echo ">> verify-generated: api/gen is up to date"
