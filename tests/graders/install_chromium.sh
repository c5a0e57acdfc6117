#!/bin/sh
# Installs the headless browser that tests/graders/test_eval_report.py opens report.html in
# (Debian/Ubuntu; run as root or with sudo). Without it, that test is skipped with this reason.
set -e
apt-get update
apt-get install -y --no-install-recommends chromium
chromium --headless --no-sandbox --version 2>/dev/null || chromium --version
