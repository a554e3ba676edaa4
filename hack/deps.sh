#!/usr/bin/env bash
# Installs the Debian packages the integration tests run for real: a Samba AD domain controller
# (samba with its AD provisioning files, smbclient, winbind, krb5-user), OpenLDAP (slapd),
# the LDAP command-line tools (ldap-utils), and a ClickHouse server with its client
# (clickhouse-server, clickhouse-client: Debian's 18.16, for the audit writer's tests).
# Idempotent: installed packages are skipped, and `apt-get update` runs only when something is
# missing. The packaged services are not used (tests run private instances), so they are stopped
# and disabled where systemd runs them.
set -euo pipefail

# samba-ad-provision (the AD schema files), samba-dsdb-modules and samba-vfs-modules are only
# "Recommends" of samba, but `samba-tool domain provision` of a DC cannot run without them.
PACKAGES=(samba samba-ad-provision samba-dsdb-modules samba-vfs-modules smbclient winbind krb5-user ldap-utils slapd clickhouse-server clickhouse-client)

missing=()
for p in "${PACKAGES[@]}"; do
	if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
		echo ">> deps: $p already installed"
	else
		missing+=("$p")
	fi
done
# npm fetches libchdb.so (make chdb) and googleapis' protos (make generate). Any npm will do;
# Debian's is installed only when there is none, so a Node.js from elsewhere is left alone.
if command -v npm >/dev/null; then
	echo ">> deps: npm already installed"
else
	missing+=(npm)
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
	SUDO=(sudo)
fi

if [ "${#missing[@]}" -eq 0 ]; then
	echo ">> deps: all test packages present"
else
	if [ "${#SUDO[@]}" -gt 0 ] && ! command -v sudo >/dev/null; then
		echo "deps: need root (or sudo) to install: ${missing[*]}" >&2
		exit 1
	fi
	export DEBIAN_FRONTEND=noninteractive
	echo ">> deps: installing ${missing[*]} (apt-get update first)"
	"${SUDO[@]}" apt-get update -q
	# krb5-user asks for a default realm; noninteractive takes the default (none), which is
	# fine: the tests never use Kerberos.
	"${SUDO[@]}" apt-get install -y -q "${missing[@]}"
fi

# The packages may start their own samba/slapd, which would hold ports 389/636 that the test
# domain controller needs, and clickhouse-server, which would hold 9000/8123 for nothing (the
# tests start private servers on free ports). Stop them where systemd runs them; elsewhere
# (containers without an init system nothing is started) only warn when 389/636 are taken.
for svc in samba-ad-dc smbd nmbd winbind slapd clickhouse-server; do
	if command -v systemctl >/dev/null && systemctl is-active --quiet "$svc" 2>/dev/null; then
		echo ">> deps: stopping and disabling the packaged $svc service"
		"${SUDO[@]}" systemctl disable --now "$svc" >/dev/null 2>&1 || true
	fi
done
if command -v ss >/dev/null && ss -ltnH '( sport = :389 or sport = :636 )' 2>/dev/null | grep -q .; then
	echo ">> deps: warning: something listens on port 389 or 636; the test Samba AD needs them free:" >&2
	ss -ltnpH '( sport = :389 or sport = :636 )' >&2 || true
fi
echo ">> deps: done"
