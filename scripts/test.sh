#!/usr/bin/env bash
# Set up (with the [test] extra) and run the whole test suite: lint, then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
.venv/bin/python -m ruff check .
.venv/bin/python -m ruff format --check . || echo "[test] note: ruff format would reformat the files above"
# the browser test drives Debian's Chromium through Playwright (never a downloaded browser build)
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || echo "[test] could not install chromium: the browser test will skip"
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
exec .venv/bin/python -m pytest -q "$@"
