#!/usr/bin/env bash
# Makes headless Chromium available to the browser test (tests/test_report_html.py): nothing when a browser is on
# PATH; as root with apt, installs Debian's `chromium` quietly; otherwise says why the test will be skipped.
# Always exits 0: a missing browser skips one test, it does not fail the suite.
set -u
for name in chromium chromium-browser google-chrome; do
    if command -v "$name" >/dev/null 2>&1; then
        exit 0
    fi
done
if [ "$(id -u)" != 0 ]; then
    echo "ensure_chromium: no chromium on PATH and not root: the headless-browser test will be skipped" \
         "(install Debian's chromium package to run it)" >&2
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure_chromium: no chromium on PATH and no apt-get: the headless-browser test will be skipped" >&2
    exit 0
fi
echo "ensure_chromium: installing Debian's chromium for the headless-browser test" >&2
if ! { DEBIAN_FRONTEND=noninteractive apt-get update -qq \
       && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; } >/dev/null; then
    echo "ensure_chromium: apt-get could not install chromium: the headless-browser test will be skipped" >&2
fi
exit 0
