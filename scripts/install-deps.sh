#!/usr/bin/env bash
# Installs the Debian packages the project runs against, when missing:
#   postgresql  - the server binaries for the embedded default and the test databases
#   prometheus  - Debian's Prometheus 2.42: the real remote-write client and the benchmark reference
#   curl
# and for the tests (`install-deps.sh test`) also:
#   openssl     - service-account keys of the test kube-apiserver
#   buildah, podman, runc - build and run the container images offline (no Docker engine here)
# Services are not started by the packages here; the project starts its own instances.
set -euo pipefail

missing=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v curl >/dev/null 2>&1 || missing+=(curl)
if [ "${1:-}" = "test" ]; then
  command -v openssl >/dev/null 2>&1 || missing+=(openssl)
  command -v buildah >/dev/null 2>&1 || missing+=(buildah)
  command -v podman >/dev/null 2>&1 || missing+=(podman)
  command -v runc >/dev/null 2>&1 || [ -x /usr/sbin/runc ] || missing+=(runc)
fi

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "installing Debian packages: ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
$sudo apt-get update -qq
# --no-install-recommends keeps node-exporter and friends out; a policy-rc.d (present in
# container images) keeps the packages from starting their services.
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
