#!/usr/bin/env bash
# Build the light kubectl plugin distribution from this tree, without the operator's
# dependencies (packaging/kubectl-miosa):
#
#   dist/plugin/kubectl_miosa-<version>-py3-none-any.whl   pip install it (needs only PyYAML)
#   dist/plugin/kubectl-miosa                               a zipapp with a pure-Python PyYAML: runs with any python3 >= 3.11
#   dist/plugin/kubectl-miosa.tar.gz                        the krew archive (zipapp, completion, LICENSE)
#   dist/plugin/miosa.yaml                                  its krew manifest (uri: $MIOSA_PLUGIN_URI or the local file)
#
#   hack/build-plugin.sh [OUT_DIR]
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
PY="${PYTHON:-$REPO/.venv/bin/python}"
PACKAGING="$REPO/packaging/kubectl-miosa"
OUT="$(mkdir -p "${1:-$REPO/dist/plugin}" && cd "${1:-$REPO/dist/plugin}" && pwd)"
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT

version="$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$REPO/operator/miosa_operator/__init__.py")"

# The sources, exactly the listed modules.
mkdir -p "$stage/dist/src" "$stage/app"
grep -v -e '^#' -e '^$' "$PACKAGING/files.txt" | while read -r file; do
  mkdir -p "$stage/dist/src/$(dirname "$file")" "$stage/app/$(dirname "$file")"
  cp "$REPO/operator/$file" "$stage/dist/src/$file"
  cp "$REPO/operator/$file" "$stage/app/$file"
done
sed "s/@VERSION@/$version/" "$PACKAGING/pyproject.toml" >"$stage/dist/pyproject.toml"
printf 'kubectl-miosa %s\n\nLicensed under the Apache License, Version 2.0 (SPDX: Apache-2.0):\nhttps://www.apache.org/licenses/LICENSE-2.0\n' \
  "$version" >"$stage/LICENSE"
cp "$stage/LICENSE" "$stage/dist/LICENSE"

# 1. The wheel.
rm -f "$OUT"/kubectl_miosa-*.whl
"$PY" -m pip wheel --no-deps --no-build-isolation -q -w "$OUT" "$stage/dist"

# 2. The zipapp: the plugin plus PyYAML's pure-Python modules (its C extension cannot load
#    from a zip; PyYAML falls back to Python by itself).
yaml_dir="$("$PY" -c 'import os, yaml; print(os.path.dirname(yaml.__file__))')"
mkdir -p "$stage/app/yaml"
find "$yaml_dir" -maxdepth 1 -name '*.py' -exec cp {} "$stage/app/yaml/" \;
cat >"$stage/app/__main__.py" <<'PY'
import sys

from miosa_operator.plugin.__main__ import run

sys.exit(run())
PY
find "$stage/app" -name '__pycache__' -prune -exec rm -rf {} +
"$PY" -m zipapp "$stage/app" -o "$OUT/kubectl-miosa" -p "/usr/bin/env python3"
cp "$OUT/kubectl-miosa" "$OUT/kubectl_complete-miosa"  # the zipapp completes when called by this name

# 3. The krew archive and manifest.
tar -C "$OUT" -czf "$stage/kubectl-miosa.tar.gz" --owner=0 --group=0 --mtime='2020-01-01' \
  kubectl-miosa kubectl_complete-miosa -C "$stage" LICENSE
mv "$stage/kubectl-miosa.tar.gz" "$OUT/"
sha="$(sha256sum "$OUT/kubectl-miosa.tar.gz" | cut -d' ' -f1)"
uri="${MIOSA_PLUGIN_URI:-file://$OUT/kubectl-miosa.tar.gz}"
sed -e "s/@VERSION@/$version/g" -e "s|@URI@|$uri|" -e "s/@SHA256@/$sha/" "$PACKAGING/krew.yaml" >"$OUT/miosa.yaml"
echo "built kubectl-miosa $version in $OUT" >&2
