#!/usr/bin/env bash
# Installs what the browser, JavaScript and alerting tests need, from Debian's
# packages, when it is missing: chromium + chromium-driver (selenium drives them,
# nothing is downloaded at run time), nodejs (node --test), prometheus (promtool
# and a real Prometheus for the alert test). TypeScript comes from the npm
# registry into .node/ (tsc checks static/squall.d.ts), pinned in static/package.json.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing Debian packages: ${need[*]}" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  # apt may be busy (another apt-get): wait for its lock instead of failing
  for _ in $(seq 1 60); do
    if $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
      -o DPkg::Lock::Timeout=120 "${need[@]}" >/dev/null; then
      break
    fi
    sleep 5
  done
  # the package starts a system Prometheus on :9090; the tests run their own
  if [[ " ${need[*]} " == *" prometheus "* ]]; then
    ($SUDO systemctl disable --now prometheus prometheus-node-exporter 2>/dev/null || true)
  fi
fi
for tool in chromium chromedriver node npm promtool prometheus; do
  command -v "$tool" >/dev/null || { echo "missing $tool after install" >&2; exit 1; }
done
TSC_VERSION=$(sed -n 's/.*"typescript": "\([0-9.]*\)".*/\1/p' static/package.json)
if [ ! -x .node/node_modules/.bin/tsc ] || ! .node/node_modules/.bin/tsc --version | grep -q "$TSC_VERSION"; then
  mkdir -p .node
  (cd .node && npm install --silent --no-audit --no-fund --no-save "typescript@$TSC_VERSION" >/dev/null)
fi
