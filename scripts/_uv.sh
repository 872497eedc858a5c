# Sourced by the other scripts: find uv, or install it into .tools/ with the
# machine's python3 (>= 3.11), then sync the workspace into .venv/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if command -v uv >/dev/null 2>&1; then
    UV=uv
else
    if [ ! -x .tools/bin/uv ]; then
        python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
            || { echo "firmlog needs Python >= 3.11 as python3" >&2; exit 1; }
        python3 -m venv .tools
        .tools/bin/python -m pip install --quiet --disable-pip-version-check "uv>=0.5"
    fi
    UV=.tools/bin/uv
fi
export UV_PYTHON_DOWNLOADS=never
# Trust the machine's certificate store (a TLS-inspecting proxy's CA lives there).
export UV_SYSTEM_CERTS="${UV_SYSTEM_CERTS:-1}"
"$UV" sync --quiet --locked --all-packages --python python3
