#!/usr/bin/env bash
# PostgreSQL server binaries for the PostgreSQL-backed instance test (tests/test_postgres_instance.py).
#
# The test starts its own throwaway server (initdb + pg_ctl on 127.0.0.1, a free port, a temporary folder) from
# /usr/lib/postgresql/<version>/bin, the Debian package `postgresql`. This script installs that package when it
# is missing, as root with apt-get only, and without creating or starting Debian's system cluster (`main`): only
# the binaries are needed. Otherwise it prints a note and the test skips itself. It never fails the build.
#
#   bash deploy/postgres_local.sh          (`make postgres-deps`)
set -u

if compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  exit 0
fi

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "note: PostgreSQL server binaries (/usr/lib/postgresql/*/bin/initdb) missing: install the Debian package" \
       "postgresql as root (or run this script as root): the PostgreSQL-backed instance test will be skipped"
  exit 0
fi

echo "installing postgresql (apt-get) for the PostgreSQL-backed instance test; no cluster is created or started"
export DEBIAN_FRONTEND=noninteractive
apt_install() {
  apt-get install -y -qq --no-install-recommends -o Dpkg::Options::=--force-confdef \
    -o Dpkg::Options::=--force-confold "$@" >/dev/null
}
{
  apt-get update -qq \
    && apt_install postgresql-common \
    && if [ -f /etc/postgresql-common/createcluster.conf ]; then
         # the packages' postinst would otherwise create (and start) the cluster `main` on port 5432
         sed -ri 's/^#?[[:space:]]*create_main_cluster[[:space:]]*=.*$/create_main_cluster = false/' \
           /etc/postgresql-common/createcluster.conf
       fi \
    && apt_install postgresql
} || echo "note: apt-get could not install postgresql: the PostgreSQL-backed instance test will be skipped"

if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  echo "note: still no /usr/lib/postgresql/*/bin/initdb: the PostgreSQL-backed instance test will be skipped"
fi
exit 0
