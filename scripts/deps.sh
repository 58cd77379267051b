#!/usr/bin/env bash
# deps.sh: installs and runs the real local services that core-dict and its tests talk to.
#
# usage:
#   scripts/deps.sh up     [SERVICE ...]   install what is missing, start, wait until each answers
#   scripts/deps.sh down   [SERVICE ...]   stop what deps.sh started (by the pid it recorded)
#   scripts/deps.sh status [SERVICE ...]   one line per service: up/down and address (exit 3 if any is down)
#   scripts/deps.sh db NAME                create database NAME (owned by coredict) if missing and print
#                                          its DATABASE_URL on stdout (nothing else goes to stdout)
#
# SERVICE is postgres, redis, pulsar, jaeger or prometheus. Without names: postgres, redis and pulsar, plus
# jaeger when DEPS_JAEGER=1 (its first build takes about 6 minutes on 2 cores) and prometheus when
# DEPS_PROMETHEUS=1; `down` and `status` also cover jaeger and prometheus when deps.sh started them.
#
# Addresses (loopback only) and the defaults the code and tests use:
#   postgres  127.0.0.1:5432   DATABASE_URL=postgres://coredict_app:coredict_app@127.0.0.1:5432/coredict?sslmode=disable
#                              MIGRATE_DATABASE_URL=postgres://coredict:coredict@127.0.0.1:5432/coredict?sslmode=disable
#                              (coredict owns the databases and tables; coredict_app is the service's role)
#   redis     127.0.0.1:6379   REDIS_URL=redis://127.0.0.1:6379/0
#   pulsar    127.0.0.1:6650   PULSAR_URL=pulsar://127.0.0.1:6650, admin http://127.0.0.1:8080
#   jaeger    OTLP 127.0.0.1:4317 (gRPC) and 127.0.0.1:4318 (HTTP), query API http://127.0.0.1:16686
#   prometheus http://127.0.0.1:9095 (Debian's prometheus and promtool; scrapes deploy/prometheus.yml's
#             targets: core-dict's metrics on :9091 and dictsim's on :9092, every DEPS_PROMETHEUS_SCRAPE)
#
# State lives under .deps/ in the repository (git-ignored): pid files, logs, the Pulsar jars and data, the
# Jaeger binary. PostgreSQL is Debian's cluster (`main` of the installed major version, 15 on bookworm)
# with its data in /var/lib/postgresql and its log in /var/log/postgresql; deps.sh adds a conf.d file.
#
# Settings (environment):
#   DEPS_JAEGER=1                    include jaeger in the default set
#   DEPS_REDIS_PORT=6390             act on a separate Redis on that port (own pid/log files) instead of 6379
#   DEPS_PULSAR_PORT=6652            act on a separate (private) Pulsar standalone with that binary port instead
#                                    of 6650: its own config, data, tmp, pid and log files under .deps/pulsar-PORT/
#                                    (the jars are shared), the same tenants and namespaces (deduplication on).
#                                    Its other ports are the shared ones shifted by PORT-6650: admin/web 8080+d
#                                    (DEPS_PULSAR_HTTP_PORT overrides), bookie 3181+d (DEPS_PULSAR_BOOKIE_PORT
#                                    overrides), ZooKeeper 2181+d (only with PULSAR_STANDALONE_USE_ZOOKEEPER=1),
#                                    stream storage 4181+d (never started: -nss). A private up/down takes a lock of
#                                    its own, so it does not wait for (or hold up) the shared services.
#   DEPS_PULSAR_TIMEOUT=180          seconds to wait for Pulsar to answer
#   DEPS_JAEGER_TIMEOUT=60           seconds to wait for Jaeger to answer
#   DEPS_PROMETHEUS=1                include prometheus in the default set
#   DEPS_PROMETHEUS_SCRAPE=5s        prometheus' scrape and evaluation interval (deploy/prometheus.yml says 15s)
#   PULSAR_STANDALONE_USE_ZOOKEEPER=1  run Pulsar's metadata on an in-process ZooKeeper instead of RocksDB
#   PULSAR_JVM_MEM                   default "-Xms512m -Xmx1024m -XX:MaxDirectMemorySize=512m"
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEPS="$ROOT/.deps"

PG_HOST=127.0.0.1
PG_PORT=5432
PG_CLUSTER=main
PG_USER=coredict
PG_PASSWORD=coredict
PG_DB=coredict
# The service's role: owns nothing, does not bypass row-level security (schema/00010_rls.sql grants it
# read and write on the tables). PG_USER owns the tables and runs the migrations.
PG_APP_USER=coredict_app
PG_APP_PASSWORD=coredict_app

REDIS_HOST=127.0.0.1
# DEPS_REDIS_PORT starts a separate Redis (its own pid and log files) on another port, e.g. for the tests that
# stop and start Redis to prove the fallbacks without disturbing the shared one on 6379.
REDIS_PORT=${DEPS_REDIS_PORT:-6379}

PULSAR_HOST=127.0.0.1
PULSAR_PORT=6650
PULSAR_HTTP_PORT=8080
# The shared broker's jars, data and files live in .deps/pulsar; a private one (DEPS_PULSAR_PORT) has its own
# directory and shares only the jars.
PULSAR_LIB="$DEPS/pulsar/lib"
PULSAR_DIR="$DEPS/pulsar"
PULSAR_CONF="$ROOT/deploy/pulsar/standalone.conf"
PULSAR_PATTERN=PulsarStandaloneStarter
PULSAR_PRIVATE=0
if [ -n "${DEPS_PULSAR_PORT:-}" ] && [ "$DEPS_PULSAR_PORT" != 6650 ]; then
	PULSAR_PRIVATE=1
	PULSAR_PORT=$DEPS_PULSAR_PORT
fi
PULSAR_ADMIN="http://$PULSAR_HOST:$PULSAR_HTTP_PORT/admin/v2"
PULSAR_CLUSTER=standalone
# tenant/namespace pairs created after Pulsar answers; deduplication is switched on for each namespace.
PULSAR_NAMESPACES=(dict/events lb-conn/dict core-dict/dlq)

JAEGER_VERSION_MODULE=github.com/jaegertracing/jaeger/cmd/jaeger

log() { printf 'deps: %s\n' "$*" >&2; }
die() {
	printf 'deps: error: %s\n' "$*" >&2
	exit 1
}

usage() {
	sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
	exit 2
}

# ---------------------------------------------------------------------------------------------------------
# helpers

as_root() {
	if [ "$(id -u)" = 0 ]; then
		"$@"
	elif command -v sudo >/dev/null 2>&1; then
		sudo "$@"
	else
		die "need root for: $* (run as root or install sudo)"
	fi
}

APT_UPDATED=0
apt_install() {
	local missing=() p
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	if [ "$APT_UPDATED" = 0 ]; then
		log "apt-get update"
		as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -q >&2
		APT_UPDATED=1
	fi
	log "apt-get install -y ${missing[*]}"
	as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q \
		--no-install-recommends "${missing[@]}" >&2
}

need_cmd() { # need_cmd COMMAND PACKAGE
	command -v "$1" >/dev/null 2>&1 || apt_install "$2"
	command -v "$1" >/dev/null 2>&1 || die "$1 is still missing after installing $2"
}

# pid_alive PID PATTERN: the process exists and its command line contains PATTERN (guards against pid reuse).
pid_alive() {
	local pid=$1 pattern=$2
	[ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
	tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$pattern"
}

read_pid() { if [ -f "$1" ]; then tr -dc '0-9' <"$1"; fi; }

# started_pid PIDFILE PATTERN: records $! (a service just started in the background) in PIDFILE, then
# waits, 10 s at most, until it has exec'd its command (its command line contains PATTERN) or is gone.
# Until the exec its command line is this script's, and a start-up check of pid_alive made in that window
# took the service for dead: deps.sh gave up while the service came up anyway, without its pid file.
started_pid() {
	local pid=$! pidfile=$1 pattern=$2 i
	echo "$pid" >"$pidfile"
	for ((i = 0; i < 100; i++)); do
		if pid_alive "$pid" "$pattern" || [ ! -d "/proc/$pid" ]; then return 0; fi
		sleep 0.1
	done
}

# stop_pid NAME PIDFILE PATTERN TIMEOUT
stop_pid() {
	local name=$1 pidfile=$2 pattern=$3 timeout=$4 pid i
	pid=$(read_pid "$pidfile")
	if [ -z "$pid" ]; then
		log "$name: not started by deps.sh (no pid file); nothing to stop"
		return 0
	fi
	if ! pid_alive "$pid" "$pattern"; then
		log "$name: recorded pid $pid is not running"
		rm -f "$pidfile"
		return 0
	fi
	log "$name: stopping pid $pid"
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < timeout * 5; i++)); do
		pid_alive "$pid" "$pattern" || break
		sleep 0.2
	done
	if pid_alive "$pid" "$pattern"; then
		log "$name: pid $pid still running after ${timeout}s; sending SIGKILL"
		kill -KILL "$pid" 2>/dev/null || true
		sleep 0.5
	fi
	rm -f "$pidfile"
	log "$name: stopped"
}

tcp_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

log_tail() { # log_tail FILE [LINES]
	local f=$1 n=${2:-40}
	if [ -r "$f" ]; then
		printf -- '---- last %s lines of %s ----\n' "$n" "$f" >&2
		tail -n "$n" "$f" >&2 || true
		printf -- '---- end of %s ----\n' "$f" >&2
	fi
}

since() { echo $(($(date +%s) - $1)); }

# ---------------------------------------------------------------------------------------------------------
# PostgreSQL: Debian's cluster, started with pg_ctlcluster.

pg_version() {
	local v
	v=$(ls /usr/lib/postgresql 2>/dev/null | sort -V | tail -n 1)
	if [ -n "$v" ] && [ -x "/usr/lib/postgresql/$v/bin/postgres" ]; then echo "$v"; fi
}
pg_datadir() { pg_lsclusters -h 2>/dev/null | awk -v v="$1" -v c="$PG_CLUSTER" '$1==v && $2==c {print $6}'; }
pg_logfile() { echo "/var/log/postgresql/postgresql-$1-$PG_CLUSTER.log"; }
pg_ready() { pg_isready -q -h "$PG_HOST" -p "$PG_PORT" -t 2 >/dev/null 2>&1; }
pg_pidfile() { echo "$DEPS/postgres/postgres.pid"; }
pg_running_pid() { # the postmaster pid of our cluster, if it runs
	local d
	d=$(pg_datadir "$1")
	[ -n "$d" ] && as_root head -n 1 "$d/postmaster.pid" 2>/dev/null | tr -dc '0-9' || true
}
as_postgres() { # runs a command as the postgres OS user (peer authentication on the local socket)
	if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else sudo -u postgres "$@"; fi
}
psql_super() { as_postgres psql -X -q -v ON_ERROR_STOP=1 -p "$PG_PORT" -d postgres "$@"; }
psql_app() { PGPASSWORD="$PG_PASSWORD" psql -X -q -v ON_ERROR_STOP=1 -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d postgres "$@"; }

pg_url() { echo "postgres://$PG_USER:$PG_PASSWORD@$PG_HOST:$PG_PORT/$1?sslmode=disable"; }

postgres_install() {
	if [ -z "$(pg_version)" ] || ! command -v pg_ctlcluster >/dev/null 2>&1; then
		apt_install postgresql
	fi
	[ -n "$(pg_version)" ] || die "postgres: no server under /usr/lib/postgresql after installing postgresql"
}

# The tuning below is for the local development and test cluster only: fsync, synchronous_commit and
# full_page_writes are off, which makes tests fast and means a crash of this machine can lose or corrupt
# the cluster's data. That is acceptable for throwaway local data and never acceptable in production.
pg_conf() {
	cat <<EOF
# Written by core-dict's scripts/deps.sh: local development and test cluster only.
# fsync, synchronous_commit and full_page_writes are off for speed: a crash of this machine can lose or
# corrupt this cluster's data. Never use these settings in production.
listen_addresses = '$PG_HOST'
port = $PG_PORT
max_connections = 1000
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
}

postgres_start() {
	local v conf changed=0 t0
	v=$(pg_version)
	if [ -z "$(pg_datadir "$v")" ]; then
		log "postgres: creating cluster $v/$PG_CLUSTER"
		as_root pg_createcluster "$v" "$PG_CLUSTER" >&2
	fi
	conf="/etc/postgresql/$v/$PG_CLUSTER/conf.d/coredict.conf"
	if ! cmp -s <(pg_conf) "$conf" 2>/dev/null; then
		as_root mkdir -p "$(dirname "$conf")"
		pg_conf | as_root tee "$conf" >/dev/null
		changed=1
	fi
	mkdir -p "$DEPS/postgres"
	if pg_ready; then
		if [ "$changed" = 1 ]; then
			log "postgres: settings changed; restarting cluster $v/$PG_CLUSTER"
			as_root pg_ctlcluster "$v" "$PG_CLUSTER" restart -m fast >&2 9>&- ||
				{ log_tail "$(pg_logfile "$v")"; die "postgres: restart failed, see $(pg_logfile "$v")"; }
			# deps.sh restarted it, so `down` may stop it.
			pg_running_pid "$v" >"$(pg_pidfile)"
		else
			log "postgres: already up on $PG_HOST:$PG_PORT"
		fi
		return 0
	fi
	t0=$(date +%s)
	log "postgres: starting cluster $v/$PG_CLUSTER on $PG_HOST:$PG_PORT (log: $(pg_logfile "$v"))"
	as_root pg_ctlcluster "$v" "$PG_CLUSTER" start >&2 9>&- ||
		{ log_tail "$(pg_logfile "$v")"; die "postgres: failed to start, see $(pg_logfile "$v")"; }
	pg_running_pid "$v" >"$(pg_pidfile)"
	log "postgres: started (pid $(read_pid "$(pg_pidfile)")) in $(since "$t0")s"
}

postgres_wait() {
	local v i
	v=$(pg_version)
	for ((i = 0; i < 60; i++)); do
		pg_ready && break
		sleep 1
	done
	pg_ready || { log_tail "$(pg_logfile "$v")"; die "postgres: not answering on $PG_HOST:$PG_PORT after 60s, see $(pg_logfile "$v")"; }
	psql_super -f - <<EOF >&2
DO \$\$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_USER') THEN
    CREATE ROLE $PG_USER LOGIN CREATEDB PASSWORD '$PG_PASSWORD';
  ELSE
    ALTER ROLE $PG_USER LOGIN CREATEDB PASSWORD '$PG_PASSWORD';
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_APP_USER') THEN
    CREATE ROLE $PG_APP_USER LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS PASSWORD '$PG_APP_PASSWORD';
  ELSE
    ALTER ROLE $PG_APP_USER LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS PASSWORD '$PG_APP_PASSWORD';
  END IF;
END
\$\$;
EOF
	pg_create_db "$PG_DB"
	log "postgres: up, DATABASE_URL=$(pg_url "$PG_DB")"
}

pg_create_db() {
	local name=$1 i err=
	for ((i = 0; i < 5; i++)); do
		if [ -n "$(psql_app -At -c "SELECT 1 FROM pg_database WHERE datname = '$name'")" ]; then
			return 0
		fi
		# Two callers may race to create the same database; the loser sees it on the next look.
		if err=$(psql_app -c "CREATE DATABASE \"$name\" OWNER $PG_USER" 2>&1); then
			log "postgres: created database $name"
			return 0
		fi
		sleep 0.5
	done
	die "postgres: could not create database $name: $err"
}

postgres_stop() {
	local v pid running
	v=$(pg_version)
	pid=$(read_pid "$(pg_pidfile)")
	if [ -z "$pid" ]; then
		log "postgres: not started by deps.sh (no pid file); nothing to stop"
		return 0
	fi
	running=$([ -n "$v" ] && pg_running_pid "$v" || true)
	if [ "$running" != "$pid" ]; then
		log "postgres: recorded pid $pid is not the running postmaster (${running:-none}); nothing to stop"
		rm -f "$(pg_pidfile)"
		return 0
	fi
	log "postgres: stopping cluster $v/$PG_CLUSTER (pid $pid)"
	as_root pg_ctlcluster "$v" "$PG_CLUSTER" stop -m fast >&2
	rm -f "$(pg_pidfile)"
	log "postgres: stopped"
}

postgres_status() {
	if pg_ready; then echo "postgres up   $PG_HOST:$PG_PORT  $(pg_url "$PG_DB")"; else echo "postgres down $PG_HOST:$PG_PORT"; return 1; fi
}

# ---------------------------------------------------------------------------------------------------------
# Redis: redis-server from Debian, daemonized, no persistence.

redis_pidfile() { if [ "$REDIS_PORT" = 6379 ]; then echo "$DEPS/redis/redis.pid"; else echo "$DEPS/redis/redis-$REDIS_PORT.pid"; fi; }
redis_logfile() { if [ "$REDIS_PORT" = 6379 ]; then echo "$DEPS/redis/redis.log"; else echo "$DEPS/redis/redis-$REDIS_PORT.log"; fi; }
redis_ready() { [ "$(redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]; }

redis_install() {
	command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1 || apt_install redis-server
}

redis_start() {
	local t0
	mkdir -p "$DEPS/redis"
	if redis_ready; then
		log "redis: already up on $REDIS_HOST:$REDIS_PORT"
		return 0
	fi
	if tcp_open "$REDIS_HOST" "$REDIS_PORT"; then
		die "redis: $REDIS_HOST:$REDIS_PORT is taken by something that does not answer PING"
	fi
	t0=$(date +%s)
	log "redis: starting on $REDIS_HOST:$REDIS_PORT (log: $(redis_logfile))"
	redis-server --bind "$REDIS_HOST" --port "$REDIS_PORT" --protected-mode yes \
		--save '' --appendonly no \
		--daemonize yes --pidfile "$(redis_pidfile)" --logfile "$(redis_logfile)" --dir "$DEPS/redis" >&2 9>&- ||
		{ log_tail "$(redis_logfile)"; die "redis: failed to start, see $(redis_logfile)"; }
	REDIS_T0=$t0
}

redis_wait() {
	local i
	for ((i = 0; i < 150; i++)); do
		redis_ready && break
		sleep 0.2
	done
	redis_ready || { log_tail "$(redis_logfile)"; die "redis: not answering on $REDIS_HOST:$REDIS_PORT after 30s, see $(redis_logfile)"; }
	if [ -n "${REDIS_T0:-}" ]; then log "redis: up (pid $(read_pid "$(redis_pidfile)")) in $(since "$REDIS_T0")s"; fi
}

redis_stop() { stop_pid redis "$(redis_pidfile)" redis-server 20; }

redis_status() {
	if redis_ready; then echo "redis    up   $REDIS_HOST:$REDIS_PORT  redis://$REDIS_HOST:$REDIS_PORT/0"; else echo "redis    down $REDIS_HOST:$REDIS_PORT"; return 1; fi
}

# ---------------------------------------------------------------------------------------------------------
# Pulsar: standalone broker from Maven Central jars (deploy/pulsar/pom.xml), run with java.

# pulsar_private_ports: for DEPS_PULSAR_PORT, derives and checks the private broker's other ports and paths.
pulsar_private_ports() {
	[ "$PULSAR_PRIVATE" = 1 ] || return 0
	[[ $PULSAR_PORT =~ ^[0-9]+$ ]] || die "DEPS_PULSAR_PORT=$PULSAR_PORT is not a port number"
	local d=$((PULSAR_PORT - 6650)) p seen=" 6650 8080 3181 2181 4181 "
	PULSAR_HTTP_PORT=${DEPS_PULSAR_HTTP_PORT:-$((8080 + d))}
	PULSAR_BOOKIE_PORT=${DEPS_PULSAR_BOOKIE_PORT:-$((3181 + d))}
	PULSAR_ZK_PORT=$((2181 + d))
	PULSAR_STREAM_PORT=$((4181 + d))
	for p in "$PULSAR_PORT" "$PULSAR_HTTP_PORT" "$PULSAR_BOOKIE_PORT" "$PULSAR_ZK_PORT" "$PULSAR_STREAM_PORT"; do
		[[ $p =~ ^[0-9]+$ ]] && [ "$p" -ge 1024 ] && [ "$p" -le 65535 ] ||
			die "pulsar: DEPS_PULSAR_PORT=$PULSAR_PORT gives port '$p', outside 1024-65535 (set DEPS_PULSAR_HTTP_PORT / DEPS_PULSAR_BOOKIE_PORT)"
		[[ $seen != *" $p "* ]] ||
			die "pulsar: DEPS_PULSAR_PORT=$PULSAR_PORT gives port $p, which the shared broker or another of its own ports uses (binary $PULSAR_PORT, admin $PULSAR_HTTP_PORT, bookie $PULSAR_BOOKIE_PORT, zookeeper $PULSAR_ZK_PORT, stream storage $PULSAR_STREAM_PORT)"
		seen+="$p "
	done
	PULSAR_ADMIN="http://$PULSAR_HOST:$PULSAR_HTTP_PORT/admin/v2"
	PULSAR_DIR="$DEPS/pulsar-$PULSAR_PORT"
	PULSAR_CONF="$PULSAR_DIR/standalone.conf"
	# Its own config path is on its command line: it tells this broker's process from the others.
	PULSAR_PATTERN="$PULSAR_CONF"
}
pulsar_private_ports

pulsar_pidfile() { echo "$PULSAR_DIR/pulsar.pid"; }
pulsar_logfile() { echo "$PULSAR_DIR/pulsar.log"; }
pulsar_outfile() { echo "$PULSAR_DIR/pulsar.out"; }
pulsar_ready() { [ "$(curl -s -m 10 "$PULSAR_ADMIN/brokers/health" 2>/dev/null)" = ok ]; }

pulsar_install() {
	need_cmd java openjdk-17-jre-headless
	need_cmd curl curl
	local lib="$PULSAR_LIB" stamp want t0
	want=$(cat "$ROOT/deploy/pulsar/pom.xml" "$ROOT/deploy/pulsar/settings.xml" | sha256sum | cut -d' ' -f1)
	stamp="$lib/.pom.sha256"
	if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
		return 0
	fi
	need_cmd mvn maven
	t0=$(date +%s)
	if [ "$PULSAR_PRIVATE" = 1 ]; then
		# A private up holds only its own lock; the shared jars are installed under the shared one.
		log "pulsar: the jars in $lib are missing or stale; installing them under the shared lock"
		DEPS_PULSAR_PORT='' "${BASH_SOURCE[0]}" install-pulsar-jars
		return 0
	fi
	log "pulsar: resolving jars from Maven Central into $lib (first time: a few minutes)"
	mkdir -p "$(dirname "$lib")"
	rm -rf "$lib.tmp"
	# -DoutputDirectory is absolute: a relative one is resolved against deploy/pulsar, not the repo root.
	local try
	for try in 1 2; do
		if mvn -q -B -Dstyle.color=never -s "$ROOT/deploy/pulsar/settings.xml" -f "$ROOT/deploy/pulsar/pom.xml" \
			dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$lib.tmp" >&2; then
			break
		fi
		[ "$try" = 2 ] && die "pulsar: mvn dependency:copy-dependencies failed (see above)"
		log "pulsar: mvn failed; retrying once"
		sleep 5
	done
	rm -rf "$lib"
	mv "$lib.tmp" "$lib"
	echo "$want" >"$stamp"
	log "pulsar: $(ls "$lib" | wc -l) jars in $(since "$t0")s"
}

pulsar_start() {
	local pid jvm_mem=()
	mkdir -p "$PULSAR_DIR/data"
	pid=$(read_pid "$(pulsar_pidfile)")
	if pulsar_ready; then
		# A private broker exists to be stopped and started by its owner (the outage tests): one that
		# this checkout did not start (another checkout's, a leftover) would never go down on `down`.
		if [ "$PULSAR_PRIVATE" = 1 ] && ! pid_alive "$pid" "$PULSAR_PATTERN"; then
			die "pulsar: a broker this checkout did not start answers on $PULSAR_HOST:$PULSAR_PORT; stop it (its pid: ss -ltnp | grep :$PULSAR_PORT) or choose another DEPS_PULSAR_PORT"
		fi
		log "pulsar: already up on $PULSAR_HOST:$PULSAR_PORT"
		return 0
	fi
	if pid_alive "$pid" "$PULSAR_PATTERN"; then
		log "pulsar: pid $pid is still starting"
		return 0
	fi
	rm -f "$(pulsar_pidfile)"
	if tcp_open "$PULSAR_HOST" "$PULSAR_PORT"; then
		die "pulsar: $PULSAR_HOST:$PULSAR_PORT is taken by a process that deps.sh did not start and whose admin API does not answer"
	fi
	if tcp_open "$PULSAR_HOST" "$PULSAR_HTTP_PORT"; then
		die "pulsar: $PULSAR_HOST:$PULSAR_HTTP_PORT (admin) is taken by another process"
	fi
	local private_args=()
	if [ "$PULSAR_PRIVATE" = 1 ]; then
		local p
		for p in "$PULSAR_BOOKIE_PORT" "$PULSAR_ZK_PORT"; do
			if tcp_open "$PULSAR_HOST" "$p"; then die "pulsar: $PULSAR_HOST:$p (bookie/zookeeper of the broker on $PULSAR_PORT) is taken by another process"; fi
		done
		# The shared config with this broker's two ports; the bookie, ZooKeeper and stream storage ports are
		# command-line flags of the standalone starter.
		{
			echo "# Generated by scripts/deps.sh from deploy/pulsar/standalone.conf for DEPS_PULSAR_PORT=$PULSAR_PORT; do not edit."
			sed -e "s/^brokerServicePort=.*/brokerServicePort=$PULSAR_PORT/" -e "s/^webServicePort=.*/webServicePort=$PULSAR_HTTP_PORT/" \
				"$ROOT/deploy/pulsar/standalone.conf"
		} >"$PULSAR_CONF.tmp"
		mv "$PULSAR_CONF.tmp" "$PULSAR_CONF"
		private_args=(--bookkeeper-port "$PULSAR_BOOKIE_PORT" --zookeeper-port "$PULSAR_ZK_PORT" --stream-storage-port "$PULSAR_STREAM_PORT")
	fi
	read -r -a jvm_mem <<<"${PULSAR_JVM_MEM:--Xms512m -Xmx1024m -XX:MaxDirectMemorySize=512m}"
	# JVM options follow apache/pulsar's bin/pulsar: the --add-opens flags that Java 17 needs for BookKeeper
	# and Netty, and the system properties that let the bookie keep its metadata in Pulsar's metadata store.
	local opts=(
		"${jvm_mem[@]}"
		-XX:+UseG1GC -XX:MaxGCPauseMillis=10 -XX:+ParallelRefProcEnabled -XX:+PerfDisableSharedMem
		--add-opens java.base/java.io=ALL-UNNAMED
		--add-opens java.base/java.util.zip=ALL-UNNAMED
		--add-opens java.base/java.nio=ALL-UNNAMED
		--add-opens java.base/jdk.internal.misc=ALL-UNNAMED
		--add-opens java.base/sun.net=ALL-UNNAMED
		--add-opens java.management/sun.management=ALL-UNNAMED
		-Dio.netty.tryReflectionSetAccessible=true
		-Djava.net.preferIPv4Stack=true
		-Djute.maxbuffer=10485760
		'-Dzookeeper.4lw.commands.whitelist=*'
		-Dzookeeper.snapshot.trust.empty=true
		-Dbookkeeper.metadata.bookie.drivers=org.apache.pulsar.metadata.bookkeeper.PulsarMetadataBookieDriver
		-Dbookkeeper.metadata.client.drivers=org.apache.pulsar.metadata.bookkeeper.PulsarMetadataClientDriver
		-Dlog4j.configurationFile="$ROOT/deploy/pulsar/log4j2.xml"
		-Dlog4j.shutdownHookEnabled=false
		-Dlog4j2.is.webapp=false
		-Dpulsar.log.file="$(pulsar_logfile)"
		-Dpulsar.log.level="${PULSAR_LOG_LEVEL:-info}"
		-Djava.io.tmpdir="$PULSAR_DIR/tmp"
	)
	mkdir -p "$PULSAR_DIR/tmp"
	log "pulsar: starting standalone on $PULSAR_HOST:$PULSAR_PORT, admin $PULSAR_HOST:$PULSAR_HTTP_PORT (log: $(pulsar_logfile))"
	PULSAR_T0=$(date +%s)
	(
		cd "$PULSAR_DIR"
		exec 9>&-
		exec setsid nohup java "${opts[@]}" -cp "$PULSAR_LIB/*" org.apache.pulsar.PulsarStandaloneStarter \
			--config "$PULSAR_CONF" -nfw -nss \
			--metadata-dir "$PULSAR_DIR/data/metadata" \
			--bookkeeper-dir "$PULSAR_DIR/data/bookkeeper" \
			--zookeeper-dir "$PULSAR_DIR/data/zookeeper" \
			"${private_args[@]}" \
			</dev/null >>"$(pulsar_outfile)" 2>&1
	) &
	started_pid "$(pulsar_pidfile)" "$PULSAR_PATTERN"
}

pulsar_fail() {
	log_tail "$(pulsar_logfile)" 60
	log_tail "$(pulsar_outfile)" 20
	die "pulsar: $1; logs: $(pulsar_logfile) and $(pulsar_outfile) (local data that will not load can be dropped with: rm -rf $PULSAR_DIR/data)"
}

pulsar_wait() {
	local timeout=${DEPS_PULSAR_TIMEOUT:-180} t0 pid
	t0=$(date +%s)
	pid=$(read_pid "$(pulsar_pidfile)")
	until pulsar_ready; do
		if [ -n "$pid" ] && ! pid_alive "$pid" "$PULSAR_PATTERN"; then
			rm -f "$(pulsar_pidfile)"
			pulsar_fail "the broker process (pid $pid) exited during start-up"
		fi
		if [ "$(since "$t0")" -ge "$timeout" ]; then
			if [ -n "$pid" ]; then stop_pid pulsar "$(pulsar_pidfile)" "$PULSAR_PATTERN" 30; fi
			pulsar_fail "not answering on $PULSAR_ADMIN/brokers/health after ${timeout}s (stopped it)"
		fi
		sleep 2
	done
	if [ -n "${PULSAR_T0:-}" ]; then log "pulsar: up (pid $pid) in $(since "$PULSAR_T0")s"; fi
	pulsar_namespaces
}

# admin CALL METHOD PATH [JSON]: prints the HTTP status code.
pulsar_admin() {
	local method=$1 path=$2 body=${3:-}
	if [ -n "$body" ]; then
		curl -s -o /dev/null -w '%{http_code}' -m 30 -X "$method" -H 'Content-Type: application/json' \
			--data "$body" "$PULSAR_ADMIN$path"
	else
		curl -s -o /dev/null -w '%{http_code}' -m 30 -X "$method" "$PULSAR_ADMIN$path"
	fi
}

pulsar_namespaces() {
	local ns tenant code
	for ns in "${PULSAR_NAMESPACES[@]}"; do
		tenant=${ns%%/*}
		code=$(pulsar_admin PUT "/tenants/$tenant" "{\"adminRoles\":[],\"allowedClusters\":[\"$PULSAR_CLUSTER\"]}")
		case $code in 204 | 409) ;; *) die "pulsar: creating tenant $tenant answered HTTP $code" ;; esac
		code=$(pulsar_admin PUT "/namespaces/$ns")
		case $code in 204 | 409) ;; *) die "pulsar: creating namespace $ns answered HTTP $code" ;; esac
		code=$(pulsar_admin POST "/namespaces/$ns/deduplication" true)
		case $code in 204) ;; *) die "pulsar: enabling deduplication on $ns answered HTTP $code" ;; esac
	done
	log "pulsar: namespaces ${PULSAR_NAMESPACES[*]} ready (deduplication on)"
}

pulsar_stop() { stop_pid pulsar "$(pulsar_pidfile)" "$PULSAR_PATTERN" 45; }

pulsar_status() {
	if pulsar_ready; then
		echo "pulsar   up   $PULSAR_HOST:$PULSAR_PORT  pulsar://$PULSAR_HOST:$PULSAR_PORT admin http://$PULSAR_HOST:$PULSAR_HTTP_PORT"
	elif pid_alive "$(read_pid "$(pulsar_pidfile)")" "$PULSAR_PATTERN"; then
		echo "pulsar   down $PULSAR_HOST:$PULSAR_PORT  (starting, pid $(read_pid "$(pulsar_pidfile)"))"
		return 1
	else
		echo "pulsar   down $PULSAR_HOST:$PULSAR_PORT"
		return 1
	fi
}

# ---------------------------------------------------------------------------------------------------------
# Jaeger v2: built from the tools module deploy/jaeger into .deps/bin/jaeger.

JAEGER_BIN="$DEPS/bin/jaeger"
jaeger_pidfile() { echo "$DEPS/jaeger/jaeger.pid"; }
jaeger_logfile() { echo "$DEPS/jaeger/jaeger.log"; }
jaeger_ready() { curl -sf -m 5 -o /dev/null http://127.0.0.1:16686/api/services 2>/dev/null && tcp_open 127.0.0.1 4317; }

jaeger_install() {
	need_cmd go golang-go
	need_cmd curl curl
	local stamp want t0
	want=$(cat "$ROOT/deploy/jaeger/go.mod" "$ROOT/deploy/jaeger/go.sum" | sha256sum | cut -d' ' -f1)
	stamp="$JAEGER_BIN.sha256"
	if [ -x "$JAEGER_BIN" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
		return 0
	fi
	t0=$(date +%s)
	log "jaeger: building $JAEGER_VERSION_MODULE into $JAEGER_BIN (first time: about 6 minutes on 2 cores)"
	mkdir -p "$DEPS/bin"
	go build -C "$ROOT/deploy/jaeger" -o "$JAEGER_BIN.tmp" "$JAEGER_VERSION_MODULE" >&2 ||
		die "jaeger: go build failed (see above)"
	mv "$JAEGER_BIN.tmp" "$JAEGER_BIN"
	echo "$want" >"$stamp"
	log "jaeger: built in $(since "$t0")s"
}

jaeger_start() {
	local pid
	mkdir -p "$DEPS/jaeger"
	pid=$(read_pid "$(jaeger_pidfile)")
	if jaeger_ready; then
		log "jaeger: already up (OTLP 127.0.0.1:4317/4318, query http://127.0.0.1:16686)"
		return 0
	fi
	if pid_alive "$pid" "$JAEGER_BIN"; then
		log "jaeger: pid $pid is still starting"
		return 0
	fi
	rm -f "$(jaeger_pidfile)"
	local port
	for port in 4317 4318 16686 16685 13133; do
		if tcp_open 127.0.0.1 "$port"; then die "jaeger: 127.0.0.1:$port is taken by another process"; fi
	done
	log "jaeger: starting (log: $(jaeger_logfile))"
	JAEGER_T0=$(date +%s)
	(
		cd "$DEPS/jaeger"
		exec 9>&-
		exec setsid nohup "$JAEGER_BIN" --config "$ROOT/deploy/jaeger/config.yaml" </dev/null >>"$(jaeger_logfile)" 2>&1
	) &
	started_pid "$(jaeger_pidfile)" "$JAEGER_BIN"
}

jaeger_wait() {
	local timeout=${DEPS_JAEGER_TIMEOUT:-60} t0 pid
	t0=$(date +%s)
	pid=$(read_pid "$(jaeger_pidfile)")
	until jaeger_ready; do
		if [ -n "$pid" ] && ! pid_alive "$pid" "$JAEGER_BIN"; then
			rm -f "$(jaeger_pidfile)"
			log_tail "$(jaeger_logfile)"
			die "jaeger: the process (pid $pid) exited during start-up; log: $(jaeger_logfile)"
		fi
		if [ "$(since "$t0")" -ge "$timeout" ]; then
			log_tail "$(jaeger_logfile)"
			die "jaeger: not answering on http://127.0.0.1:16686 after ${timeout}s; log: $(jaeger_logfile)"
		fi
		sleep 0.5
	done
	if [ -n "${JAEGER_T0:-}" ]; then log "jaeger: up (pid $pid) in $(since "$JAEGER_T0")s"; fi
}

jaeger_stop() { stop_pid jaeger "$(jaeger_pidfile)" "$JAEGER_BIN" 20; }

jaeger_status() {
	if jaeger_ready; then
		echo "jaeger   up   127.0.0.1:4317  OTLP grpc 127.0.0.1:4317 http 127.0.0.1:4318, query http://127.0.0.1:16686"
	else
		echo "jaeger   down 127.0.0.1:4317"
		return 1
	fi
}

# ---------------------------------------------------------------------------------------------------------
# Prometheus: Debian's package (prometheus and promtool), run by deps.sh on 127.0.0.1:9095, never as the
# package's own service (that one would listen on :9090, core-dict's API port).

PROM_HOST=127.0.0.1
PROM_PORT=9095
PROM_DIR="$DEPS/prometheus"
prometheus_pidfile() { echo "$PROM_DIR/prometheus.pid"; }
prometheus_logfile() { echo "$PROM_DIR/prometheus.log"; }
prometheus_ready() { curl -sf -m 5 -o /dev/null "http://$PROM_HOST:$PROM_PORT/-/ready" 2>/dev/null; }

prometheus_install() {
	need_cmd curl curl
	if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
		return 0
	fi
	# The package's postinst starts its service on :9090 unless policy-rc.d forbids it: forbid it for the
	# install when no policy is in place (containers usually have one that does).
	local policy=/usr/sbin/policy-rc.d made=0
	if [ ! -e "$policy" ]; then
		printf '#!/bin/sh\n# core-dict deps.sh: no service starts during this install\nexit 101\n' | as_root tee "$policy" >/dev/null
		as_root chmod 755 "$policy"
		made=1
	fi
	apt_install prometheus || { [ "$made" = 1 ] && as_root rm -f "$policy"; die "prometheus: apt-get install failed"; }
	if [ "$made" = 1 ]; then as_root rm -f "$policy"; fi
	# Under systemd the package also enables its unit for the next boot: disable it (and stop it if it runs).
	if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
		as_root systemctl disable --now prometheus >/dev/null 2>&1 || true
	fi
	command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 ||
		die "prometheus: prometheus or promtool still missing after installing the package"
}

# prometheus_config: deploy/prometheus.yml with DEPS_PROMETHEUS_SCRAPE as the scrape and evaluation interval.
prometheus_config() {
	local every=${DEPS_PROMETHEUS_SCRAPE:-5s}
	[[ $every =~ ^[0-9]+(ms|s|m)$ ]] || die "DEPS_PROMETHEUS_SCRAPE=$every: want a duration such as 5s"
	echo "# Generated by scripts/deps.sh from deploy/prometheus.yml (intervals: $every); do not edit."
	sed -E -e "s/^(  scrape_interval:).*/\1 $every/" -e "s/^(  evaluation_interval:).*/\1 $every/" "$ROOT/deploy/prometheus.yml"
}

prometheus_start() {
	local pid conf="$PROM_DIR/prometheus.yml"
	mkdir -p "$PROM_DIR/data"
	prometheus_config >"$conf.tmp"
	promtool check config "$conf.tmp" >&2 || die "prometheus: promtool check config refused the configuration generated from deploy/prometheus.yml"
	mv "$conf.tmp" "$conf"
	pid=$(read_pid "$(prometheus_pidfile)")
	if prometheus_ready; then
		if pid_alive "$pid" prometheus; then
			# Reload the (maybe changed) configuration.
			kill -HUP "$pid" 2>/dev/null || true
		fi
		log "prometheus: already up on http://$PROM_HOST:$PROM_PORT"
		return 0
	fi
	if pid_alive "$pid" prometheus; then
		log "prometheus: pid $pid is still starting"
		return 0
	fi
	rm -f "$(prometheus_pidfile)"
	if tcp_open "$PROM_HOST" "$PROM_PORT"; then die "prometheus: $PROM_HOST:$PROM_PORT is taken by another process"; fi
	log "prometheus: starting on http://$PROM_HOST:$PROM_PORT (log: $(prometheus_logfile))"
	PROM_T0=$(date +%s)
	(
		cd "$PROM_DIR"
		exec 9>&-
		exec setsid nohup prometheus --config.file="$conf" --web.listen-address="$PROM_HOST:$PROM_PORT" \
			--storage.tsdb.path="$PROM_DIR/data" --storage.tsdb.retention.time=2d \
			</dev/null >>"$(prometheus_logfile)" 2>&1
	) &
	started_pid "$(prometheus_pidfile)" prometheus
}

prometheus_wait() {
	local t0 pid
	t0=$(date +%s)
	pid=$(read_pid "$(prometheus_pidfile)")
	until prometheus_ready; do
		if [ -n "$pid" ] && ! pid_alive "$pid" prometheus; then
			rm -f "$(prometheus_pidfile)"
			log_tail "$(prometheus_logfile)"
			die "prometheus: the process (pid $pid) exited during start-up; log: $(prometheus_logfile)"
		fi
		if [ "$(since "$t0")" -ge 60 ]; then
			log_tail "$(prometheus_logfile)"
			die "prometheus: not ready on http://$PROM_HOST:$PROM_PORT after 60s; log: $(prometheus_logfile)"
		fi
		sleep 0.5
	done
	if [ -n "${PROM_T0:-}" ]; then log "prometheus: up (pid $pid) in $(since "$PROM_T0")s"; fi
}

prometheus_stop() { stop_pid prometheus "$(prometheus_pidfile)" prometheus 20; }

prometheus_status() {
	if prometheus_ready; then
		echo "prometheus up   $PROM_HOST:$PROM_PORT  http://$PROM_HOST:$PROM_PORT"
	else
		echo "prometheus down $PROM_HOST:$PROM_PORT"
		return 1
	fi
}

# ---------------------------------------------------------------------------------------------------------

SVCS=()
services_for() { # services_for COMMAND [NAMES...]: sets SVCS to the validated service list
	local cmd=$1 s
	shift
	SVCS=()
	if [ $# -gt 0 ]; then
		for s in "$@"; do
			case $s in
			postgres | redis | pulsar | jaeger | prometheus) SVCS+=("$s") ;;
			*) die "unknown service '$s' (postgres, redis, pulsar, jaeger, prometheus)" ;;
			esac
		done
		return 0
	fi
	SVCS=(postgres redis pulsar)
	if [ "${DEPS_JAEGER:-0}" = 1 ]; then
		SVCS+=(jaeger)
	elif [ "$cmd" != up ] && [ -n "$(read_pid "$(jaeger_pidfile)")" ]; then
		SVCS+=(jaeger)
	fi
	if [ "${DEPS_PROMETHEUS:-0}" = 1 ]; then
		SVCS+=(prometheus)
	elif [ "$cmd" != up ] && [ -n "$(read_pid "$(prometheus_pidfile)")" ]; then
		SVCS+=(prometheus)
	fi
}

wanted() { [[ " ${SVCS[*]} " == *" $1 "* ]]; }

# One up/down at a time. The services must not inherit the lock's descriptor (each start closes fd 9),
# or a running service would hold the lock forever. An up/down of only a private Pulsar (DEPS_PULSAR_PORT)
# takes that broker's own lock: starting one takes a while, and the shared services need not wait for it.
lock() {
	local f="$DEPS/.lock"
	if [ "$PULSAR_PRIVATE" = 1 ] && [ "${SVCS[*]}" = pulsar ]; then
		mkdir -p "$PULSAR_DIR"
		f="$PULSAR_DIR/.lock"
	fi
	mkdir -p "$DEPS"
	exec 9>"$f"
	if ! flock -n 9; then
		log "waiting for another scripts/deps.sh up/down to finish (lock $f)"
		flock -w 900 9 || die "another scripts/deps.sh held $f for 15 minutes"
	fi
}

cmd_up() {
	local s t0
	t0=$(date +%s)
	services_for up "$@"
	lock
	for s in "${SVCS[@]}"; do "${s}_install"; done
	# Pulsar and Jaeger start first: they take longest to answer, the others start meanwhile.
	for s in pulsar jaeger postgres redis prometheus; do
		if wanted "$s"; then "${s}_start"; fi
	done
	for s in postgres redis pulsar jaeger prometheus; do
		if wanted "$s"; then "${s}_wait"; fi
	done
	log "up: ${SVCS[*]} answering ($(since "$t0")s)"
	for s in "${SVCS[@]}"; do "${s}_status" >&2 || true; done
}

cmd_down() {
	local s
	services_for down "$@"
	lock
	for s in prometheus jaeger pulsar redis postgres; do
		if wanted "$s"; then "${s}_stop"; fi
	done
}

cmd_status() {
	local s rc=0
	services_for status "$@"
	for s in "${SVCS[@]}"; do "${s}_status" || rc=3; done
	return $rc
}

cmd_db() {
	[ $# -eq 1 ] || usage
	local name=$1
	[[ $name =~ ^[A-Za-z0-9_][A-Za-z0-9_-]{0,62}$ ]] ||
		die "db: '$name' is not a valid database name (letters, digits, _ and -, at most 63)"
	command -v psql >/dev/null 2>&1 || die "db: psql is missing: run scripts/deps.sh up"
	pg_ready || die "db: postgres is not answering on $PG_HOST:$PG_PORT: run scripts/deps.sh up"
	pg_create_db "$name"
	pg_url "$name"
}

main() {
	[ $# -ge 1 ] || usage
	local cmd=$1
	shift
	case $cmd in
	up) cmd_up "$@" ;;
	down) cmd_down "$@" ;;
	status) cmd_status "$@" ;;
	db) cmd_db "$@" ;;
	# internal: a private Pulsar's up installs the shared jars through this, under the shared lock.
	install-pulsar-jars)
		SVCS=(pulsar)
		lock
		pulsar_install
		;;
	-h | --help | help) usage ;;
	*) usage ;;
	esac
}

main "$@"
