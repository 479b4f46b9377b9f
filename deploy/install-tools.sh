#!/usr/bin/env bash
# The deployment tools the tests run for real, into DEST/bin (default: the project's cache):
#   prometheus, promtool  Debian's `prometheus` package, unpacked (no service, no system user)
#   helm                  built from its Go module at a pinned version (Go module proxy)
# Each is fetched once; later runs find it and return at once. Needs apt-get (Debian/Ubuntu;
# as root it runs `apt-get update` when the package lists are missing) and Go (`go` on PATH or
# /usr/local/go; a newer toolchain is fetched from the Go module proxy if helm needs one).
set -euo pipefail

DEST=${1:-${FRAUD_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/fraudstream}/tools}
HELM_VERSION=v3.19.5
mkdir -p "$DEST/bin"

if [ ! -x "$DEST/bin/promtool" ] || [ ! -x "$DEST/bin/prometheus" ]; then
    command -v apt-get >/dev/null || {
        echo "install-tools: apt-get is needed for Debian's prometheus package (promtool and" \
             "a Prometheus server for the alert tests); on other systems put promtool and" \
             "prometheus into $DEST/bin" >&2
        exit 1
    }
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    if ! (cd "$work" && apt-get download -q prometheus >/dev/null 2>&1); then
        if [ "$(id -u)" = 0 ]; then
            apt-get update -qq
            (cd "$work" && apt-get download -q prometheus >/dev/null 2>&1)
        else
            echo "install-tools: 'apt-get download prometheus' failed; run 'sudo apt-get update'" \
                 "and try again" >&2
            exit 1
        fi
    fi
    dpkg-deb -x "$work"/prometheus_*.deb "$work/root"
    install -m 0755 "$work/root/usr/bin/prometheus" "$work/root/usr/bin/promtool" "$DEST/bin/"
    "$DEST/bin/promtool" --version 2>&1 | head -1
fi

if [ ! -x "$DEST/bin/helm-$HELM_VERSION" ]; then
    GO=$(command -v go || echo /usr/local/go/bin/go)
    [ -x "$GO" ] || {
        echo "install-tools: Go is needed to build helm $HELM_VERSION from its module" \
             "(https://go.dev/doc/install, or apt-get install golang-go)" >&2
        exit 1
    }
    echo "install-tools: building helm $HELM_VERSION (once; a few minutes on 2 cores)" >&2
    gobin=$(mktemp -d)
    if ! GOBIN="$gobin" GOTOOLCHAIN=auto "$GO" install -trimpath \
        -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
        "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >"$gobin/build.log" 2>&1; then
        tail -20 "$gobin/build.log" >&2
        exit 1
    fi
    mv "$gobin/helm" "$DEST/bin/helm-$HELM_VERSION"
    rm -rf "$gobin"
fi
ln -sf "helm-$HELM_VERSION" "$DEST/bin/helm"
"$DEST/bin/helm" version --short
