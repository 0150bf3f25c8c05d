#!/usr/bin/env bash
# Install every runtime dependency at the lowest version pyproject.toml declares
# (`name>=X` becomes `name==X`; what they pull in is pip's choice), then run the unit
# tests and a few commands with them: a declared minimum that does not work fails here.
#
# Usage: scripts/min_deps.sh [VENV]   (default: .venv-min, rebuilt when pyproject changes)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${1:-$ROOT/.venv-min}
PY=${PY:-python3}
log() { echo "min_deps: $*"; }

constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
"$PY" - "$ROOT/pyproject.toml" >"$constraints" <<'PYEOF'
import re, sys, tomllib
with open(sys.argv[1], "rb") as f:
    deps = tomllib.load(f)["project"]["dependencies"]
for dep in deps:
    m = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)\s*>=\s*([0-9][^,;\s]*)\s*", dep)
    if not m:
        sys.exit(f"min_deps: {dep!r} declares no `>=` minimum")
    print(f"{m[1]}=={m[2]}")
PYEOF
log "declared minimums: $(tr '\n' ' ' <"$constraints")"

stamp=$VENV/.installed-$(sha256sum "$ROOT/pyproject.toml" | cut -c1-16)
if [[ ! -f $stamp ]]; then
    rm -rf "$VENV"
    "$PY" -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
    "$VENV/bin/pip" install -q -c "$constraints" -e "$ROOT[test]"
    touch "$stamp"
fi
"$VENV/bin/pip" check >/dev/null
log "installed: $("$VENV/bin/pip" list --format=freeze 2>/dev/null | grep -iE "^($(cut -d= -f1 "$constraints" | paste -sd'|'))==" | tr '\n' ' ')"

cd "$ROOT"
"$VENV/bin/lowbuild" --help >/dev/null
"$VENV/bin/lowbuild" build --help >/dev/null
"$VENV/bin/lowbuild" graph --format mermaid >/dev/null
"$VENV/bin/lowbuild" schema image >/dev/null
"$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/unit
log "ok: the unit tests and the commands work with every dependency at its minimum"
