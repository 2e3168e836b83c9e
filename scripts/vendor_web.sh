#!/usr/bin/env bash
# Re-fetch the dashboard's vendored chart library at its pinned version from the npm registry:
#   scripts/vendor_web.sh
# Writes streamer/web/static/vendor/uplot/ (minified build, CSS, LICENSE, VERSION). Needs npm and network
# access to the registry; the daemon itself never fetches anything (the files are committed and packaged).
set -euo pipefail

UPLOT_VERSION="1.6.32"

cd "$(dirname "$0")/.."
dest="streamer/web/static/vendor/uplot"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

(cd "$work" && npm pack --silent "uplot@${UPLOT_VERSION}" >/dev/null)
tar -xzf "$work/uplot-${UPLOT_VERSION}.tgz" -C "$work"
mkdir -p "$dest"
cp "$work/package/dist/uPlot.iife.min.js" "$work/package/dist/uPlot.min.css" "$work/package/LICENSE" "$dest/"
printf 'uPlot %s (MIT), https://github.com/leeoniya/uPlot, from npm: uplot@%s\n' \
  "$UPLOT_VERSION" "$UPLOT_VERSION" >"$dest/VERSION"
echo "vendored uPlot ${UPLOT_VERSION} into $dest"
