#!/usr/bin/env bash
# The Debian packages the tests drive (real tools, real servers), installed when missing.
# `make test` runs this first; it needs root for apt-get (as the tests themselves do for
# tmpfs mounts and network namespaces), and does nothing when everything is there.
set -euo pipefail

apt_packages=()
command -v mount >/dev/null || apt_packages+=(mount)
# The Ansible role is tested against a real Debian root made by debootstrap.
command -v debootstrap >/dev/null || apt_packages+=(debootstrap)
command -v systemd-analyze >/dev/null || apt_packages+=(systemd)
# Its clinical-system check reaches a provisioned daemon through a veth into a network namespace;
# the keyring backup it tests is encrypted with age.
command -v ip >/dev/null || apt_packages+=(iproute2)
command -v age >/dev/null || apt_packages+=(age)
# Revocation tests type certificate serials exactly as `openssl x509 -serial` prints them.
command -v openssl >/dev/null || apt_packages+=(openssl)
command -v mkfs.ext4 >/dev/null || apt_packages+=(e2fsprogs)
# The ATNA export is tested against a real rsyslog with TLS (gtls) as the audit record repository.
command -v rsyslogd >/dev/null || apt_packages+=(rsyslog)
compgen -G "/usr/lib/*/rsyslog/lmnsd_gtls.so" >/dev/null || apt_packages+=(rsyslog-gnutls)
# The object-store tier is tested against a real single-node Ceph with a RADOS Gateway (tests/ceph_cluster.py).
for ceph_tool in ceph-mon ceph-osd ceph-mgr radosgw; do
    command -v "$ceph_tool" >/dev/null || apt_packages+=("$ceph_tool")
done
command -v ceph >/dev/null || apt_packages+=(ceph-common)
# The share page is tested in a real headless browser: Debian's chromium, driven through chromium-driver.
command -v chromium >/dev/null || apt_packages+=(chromium)
command -v chromedriver >/dev/null || apt_packages+=(chromium-driver)
# The DIMSE door is tested against clients nobody here wrote: dcmtk's echoscu, storescu, findscu,
# movescu, getscu and storescp (tests/integration/test_dimse_*.py, bench/dimse.py).
command -v storescu >/dev/null || apt_packages+=(dcmtk)
# storescp cannot be told where to listen: the tests keep it on loopback with a small LD_PRELOAD shim they compile.
command -v cc >/dev/null || apt_packages+=(gcc libc6-dev)
# /metrics is checked with Prometheus's own linter (promtool check metrics), from Debian's prometheus;
# its service is not started by package scripts where no init runs (CI's container).
command -v promtool >/dev/null || apt_packages+=(prometheus)
if ((${#apt_packages[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "tests/system-packages.sh: missing Debian packages: ${apt_packages[*]}; run as root to install them" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q "${apt_packages[@]}"
fi
