#!/usr/bin/env bash
# Regenerates the gRPC API's code from api/proto: lint (buf, STANDARD), then Go messages, gRPC
# stubs, grpc-gateway handlers and one merged OpenAPI document, all under api/gen (committed).
#
# Everything comes from package registries at pinned versions, so no copy of a third-party
# proto is committed:
#   - googleapis' google/api/*.proto from the npm package google-proto-files (npm pack);
#   - grpc-gateway's protoc-gen-openapiv2/options/*.proto from its Go module;
#   - buf and the four protoc plugins from the Go module proxy.
# Fetched protos go to .cache/proto (ignored by git), plugins to bin/. Idempotent: what is
# there at the right version is reused.
#
#   hack/generate.sh              lint, then generate into api/gen
#   hack/generate.sh --out DIR    lint, then generate into DIR/api/gen (hack/verify-generated.sh)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

GO="${GO:-go}"
BUF_VERSION=v1.75.0
PROTOBUF_VERSION=v1.36.12        # protoc-gen-go (google.golang.org/protobuf)
GRPC_PLUGIN_VERSION=v1.6.2       # protoc-gen-go-grpc (google.golang.org/grpc/cmd/protoc-gen-go-grpc)
GATEWAY_VERSION=v2.33.0          # protoc-gen-grpc-gateway, protoc-gen-openapiv2, openapiv2 options
PROTO_FILES_VERSION=6.0.1        # npm google-proto-files (googleapis protos)

CACHE="$ROOT/.cache/proto"
INCLUDE="$CACHE/include"
BIN="$ROOT/bin"

out=""
while [ $# -gt 0 ]; do
	case "$1" in
	--out) out="$2"; shift 2 ;;
	*) echo "usage: $0 [--out DIR]" >&2; exit 2 ;;
	esac
done

log() { echo ">> generate: $*"; }

# plugin NAME PACKAGE VERSION builds bin/NAME unless it is already there at VERSION.
plugin() {
	local name="$1" pkg="$2" version="$3"
	if [ -x "$BIN/$name" ] && "$GO" version -m "$BIN/$name" 2>/dev/null | grep -q "^[[:space:]]*mod[[:space:]].*[[:space:]]$version\b"; then
		log "$name $version already built"
		return
	fi
	log "building $name $version into bin/"
	GOBIN="$BIN" GOFLAGS=-mod=mod "$GO" install "$pkg@$version"
}

# googleapis protos: only the files our protos import, from the pinned npm package.
fetch_googleapis() {
	local tgz="$CACHE/google-proto-files-$PROTO_FILES_VERSION.tgz"
	if [ ! -s "$tgz" ]; then
		log "fetching google-proto-files@$PROTO_FILES_VERSION from npm"
		mkdir -p "$CACHE"
		(cd "$CACHE" && npm pack --silent "google-proto-files@$PROTO_FILES_VERSION" >/dev/null)
	else
		log "google-proto-files@$PROTO_FILES_VERSION already fetched"
	fi
	local files=(google/api/annotations.proto google/api/http.proto google/api/field_behavior.proto google/api/httpbody.proto)
	local tmp
	tmp="$(mktemp -d)"
	tar -xzf "$tgz" -C "$tmp" "${files[@]/#/package/}"
	mkdir -p "$INCLUDE/google/api"
	for f in "${files[@]}"; do
		install -m 0644 "$tmp/package/$f" "$INCLUDE/$f"
	done
	rm -rf "$tmp"
}

# grpc-gateway's openapiv2 options, from the module cache (downloaded if needed).
fetch_openapiv2_options() {
	local dir
	dir="$(GOFLAGS=-mod=mod "$GO" mod download -json "github.com/grpc-ecosystem/grpc-gateway/v2@$GATEWAY_VERSION" |
		sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')"
	if [ -z "$dir" ] || [ ! -d "$dir/protoc-gen-openapiv2/options" ]; then
		echo "generate: grpc-gateway $GATEWAY_VERSION has no protoc-gen-openapiv2/options in the module cache" >&2
		exit 1
	fi
	log "openapiv2 options from grpc-gateway $GATEWAY_VERSION"
	mkdir -p "$INCLUDE/protoc-gen-openapiv2/options"
	for f in annotations.proto openapiv2.proto; do
		install -m 0644 "$dir/protoc-gen-openapiv2/options/$f" "$INCLUDE/protoc-gen-openapiv2/options/$f"
	done
}

buf() { "$GO" run "github.com/bufbuild/buf/cmd/buf@$BUF_VERSION" "$@"; }

fetch_googleapis
fetch_openapiv2_options
plugin protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go "$PROTOBUF_VERSION"
plugin protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc "$GRPC_PLUGIN_VERSION"
plugin protoc-gen-grpc-gateway github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-grpc-gateway "$GATEWAY_VERSION"
plugin protoc-gen-openapiv2 github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-openapiv2 "$GATEWAY_VERSION"

log "buf $BUF_VERSION lint"
buf lint

if [ -n "$out" ]; then
	mkdir -p "$out"
	log "buf generate into $out/api/gen"
	buf generate api/proto -o "$out"
else
	# Start from empty, so code for a removed proto file does not linger.
	log "buf generate into api/gen"
	rm -rf api/gen
	buf generate api/proto
fi
log "done"
