#!/usr/bin/env bash
# Render every Graphviz source in docs/diagrams/ to an SVG beside it.
#
#   bash docs/diagrams/build.sh
#
# Needs Graphviz's `dot` (Debian/Ubuntu: apt-get install graphviz). The SVGs
# are committed, so readers and CI need nothing; run this after editing a .dot
# file and commit both.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

if ! command -v dot >/dev/null 2>&1; then
    echo "error: Graphviz 'dot' not found; install it (Debian/Ubuntu: apt-get install graphviz)" >&2
    exit 1
fi

shopt -s nullglob
sources=(*.dot)
if [[ ${#sources[@]} -eq 0 ]]; then
    echo "error: no .dot files in $(pwd)" >&2
    exit 1
fi
for source in "${sources[@]}"; do
    dot -Tsvg "$source" -o "${source%.dot}.svg"
    echo "rendered ${source%.dot}.svg"
done
