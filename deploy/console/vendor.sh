#!/usr/bin/env bash
# Vendor the console's map library from the npm registry, pinned, into
# streams/tools/console/static/ (committed: the console needs no Node and no network at run time).
#   Leaflet            -> static/vendor/leaflet/ (leaflet.js, leaflet.css, images/, LICENSE)
# The map's areas and border line are the engine's own (engine/data/, deploy/geo/).
# Run again after changing a pin; `git diff` then shows what changed.
set -euo pipefail

LEAFLET_VERSION=1.9.4

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
static="$repo/streams/tools/console/static"
python="${FUSION_PYTHON:-$repo/.venv/bin/python}"
[ -x "$python" ] || python=python3
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

fetch() {  # name version -> unpacked in $work/name, its version checked
  local name=$1 version=$2
  (cd "$work" && npm pack --silent "$name@$version" >/dev/null)
  mkdir -p "$work/$name"
  tar xzf "$work/$name-$version.tgz" -C "$work/$name" --strip-components=1
  local got
  got="$("$python" -c 'import json,sys; print(json.load(open(sys.argv[1]))["version"])' \
    "$work/$name/package.json")"
  if [ "$got" != "$version" ]; then
    echo "vendor: $name is $got, expected $version" >&2
    exit 1
  fi
  echo "vendor: $name $got"
}

fetch leaflet "$LEAFLET_VERSION"
dest="$static/vendor/leaflet"
rm -rf "$dest"
mkdir -p "$dest/images"
cp "$work/leaflet/dist/leaflet.js" "$work/leaflet/dist/leaflet.css" "$work/leaflet/LICENSE" "$dest/"
cp "$work/leaflet/dist/images/"*.png "$dest/images/"
# The minified build names a source map the console does not ship.
sed -i '/^\/\/# sourceMappingURL=/d' "$dest/leaflet.js"
grep -q "\"$LEAFLET_VERSION\"" "$dest/leaflet.js" || {
  echo "vendor: leaflet.js does not carry version $LEAFLET_VERSION" >&2
  exit 1
}
echo "$LEAFLET_VERSION" >"$dest/VERSION"

echo "vendor: done"
