#!/usr/bin/env bash
# Creates .venv and installs vidparse into it (editable). Pass "test" to add the test tools and the
# system packages the tests use (FFmpeg's tools, a GStreamer RTSP server, Chromium and its driver for the web page
# test, Prometheus's promtool for the metrics test); those need root or sudo.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == "test" ]]; then
  packages=(ffmpeg python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good
            gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly chromium chromium-driver prometheus)
  missing=()
  for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if ((${#missing[@]})); then
    sudo=""; [[ $(id -u) -ne 0 ]] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi
[[ -x .venv/bin/python ]] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch is pinned to the CPU build (torch==2.13.0 in pyproject); pip finds it without pulling CUDA packages.
# The tests run `vidparse batch` on a real Ray cluster: "test" installs the ray extra too.
if [[ "${1:-}" == "test" ]]; then
  .venv/bin/python -m pip install -q -e ".[test,ray]"
else
  .venv/bin/python -m pip install -q -e ".[test]"
fi
