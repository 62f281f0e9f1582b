#!/usr/bin/env bash
# A real S3 endpoint for the tests: a single-node Ceph (1 mon, 1 memstore OSD, no mgr,
# auth none) and radosgw on loopback, all state under one folder.
#   tests/rgw.sh start DIR   starts it (or reuses the one already running in DIR) and writes
#                            DIR/env: CAIRN_TEST_S3_ENDPOINT, CAIRN_TEST_S3_ACCESS_KEY,
#                            CAIRN_TEST_S3_SECRET_KEY, CAIRN_TEST_S3_DIR (source it)
#   tests/rgw.sh stop DIR    stops radosgw, then the OSD, then the mon (this order: with the
#                            mon gone first radosgw hangs 120 s)
#   tests/rgw.sh stop-rgw DIR / start-rgw DIR   only radosgw (fault tests)
# Exit 77 with "SKIP ..." when Ceph is not installed. See ../shared/notes/s3-ceph-rgw.md.
set -uo pipefail

cmd=${1:-}; dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: rgw.sh start|stop|start-rgw|stop-rgw DIR" >&2; exit 2; }

for b in ceph ceph-mon ceph-osd radosgw radosgw-admin monmaptool ceph-authtool; do
    command -v "$b" >/dev/null || { echo "SKIP rgw: $b is not installed (tools/deps.sh build)" >&2; exit 77; }
done

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# pid_alive FILE: the process named in a pid file runs.
pid_alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# stop_pid FILE SECONDS: TERM, wait, then KILL.
stop_pid() {
    local f=$1 t=${2:-30} p i
    [ -s "$f" ] || return 0
    p=$(cat "$f")
    kill -0 "$p" 2>/dev/null || { rm -f "$f"; return 0; }
    kill -TERM "$p" 2>/dev/null
    for ((i = 0; i < t * 10; i++)); do
        kill -0 "$p" 2>/dev/null || { rm -f "$f"; return 0; }
        sleep 0.1
    done
    echo "rgw.sh: $f ($p) ignored TERM for ${t}s; killing it" >&2
    kill -KILL "$p" 2>/dev/null
    rm -f "$f"
}

rgw_up() {
    local port i
    port=$(cat "$dir/rgw.port")
    for ((i = 0; i < 600; i++)); do
        curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$port/" && return 0
        pid_alive "$dir/run/rgw.pid" || [ $i -lt 50 ] || break
        sleep 0.1
    done
    echo "rgw.sh: radosgw did not answer on 127.0.0.1:$port; log tail:" >&2
    tail -n 20 "$dir/log/rgw.log" >&2
    return 1
}

start_rgw() {
    local port
    port=$(cat "$dir/rgw.port")
    # -f: foreground, so its pid is ours; setsid: a test's Ctrl-C does not reach it.
    setsid radosgw -f -c "$dir/ceph.conf" -n client.rgw.a \
        --rgw-frontends="beast endpoint=127.0.0.1:$port" >>"$dir/log/rgw.out" 2>&1 &
    echo $! >"$dir/run/rgw.pid"
    rgw_up
}

start() {
    if [ -s "$dir/env" ] && pid_alive "$dir/run/rgw.pid" && pid_alive "$dir/run/osd.pid" &&
        pid_alive "$dir/run/mon.pid"; then
        return 0
    fi
    rm -rf "$dir"
    mkdir -p "$dir"/{run,log,mon,osd}
    local fsid uuid monport rgwport id key secret
    fsid=$(uuidgen); uuid=$(uuidgen)
    monport=$(free_port); rgwport=$(free_port)
    echo "$rgwport" >"$dir/rgw.port"
    cat >"$dir/ceph.conf" <<EOF
[global]
fsid = $fsid
mon host = v2:127.0.0.1:$monport
public addr = 127.0.0.1
ms bind ipv6 = false
auth cluster required = none
auth service required = none
auth client required = none
ms mon client mode = crc
ms client mode = crc
ms service mode = crc
ms mon service mode = crc
ms mon cluster mode = crc
ms cluster mode = crc
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
osd pool default pg autoscale mode = off
osd pool default pg num = 8
mon max pg per osd = 1000
osd crush chooseleaf type = 0
osd objectstore = memstore
memstore device bytes = $(( ${CAIRN_RGW_MEMSTORE_MIB:-2048} << 20 ))
run dir = $dir/run
admin socket = $dir/run/\$name.asok
log file = $dir/log/\$name.log
pid file = $dir/run/\$name.pid
keyring = $dir/keyring
mon data = $dir/mon/\$id
osd data = $dir/osd/\$id
[mon.a]
pid file = $dir/run/mon.pid
[osd]
pid file = $dir/run/osd.pid
[client.rgw.a]
log file = $dir/log/rgw.log
rgw dns name = 127.0.0.1
rgw thread pool size = 64
EOF
    {
        ceph-authtool --create-keyring "$dir/keyring" --gen-key -n mon. --cap mon 'allow *' &&
        monmaptool --create --addv a "[v2:127.0.0.1:$monport]" --fsid "$fsid" "$dir/monmap" &&
        ceph-mon -c "$dir/ceph.conf" --mkfs -i a --monmap "$dir/monmap" --keyring "$dir/keyring" &&
        ceph-mon -c "$dir/ceph.conf" -i a
    } >>"$dir/log/setup.log" 2>&1 || { echo "rgw.sh: the mon did not start:" >&2; tail "$dir/log/setup.log" >&2; stop; return 1; }
    id=$(timeout 60 ceph -c "$dir/ceph.conf" osd new "$uuid" 2>>"$dir/log/setup.log") ||
        { echo "rgw.sh: ceph osd new failed" >&2; tail "$dir/log/setup.log" >&2; stop; return 1; }
    mkdir -p "$dir/osd/$id"
    {
        ceph-osd -c "$dir/ceph.conf" -i "$id" --mkfs --osd-uuid "$uuid" &&
        ceph-osd -c "$dir/ceph.conf" -i "$id"
    } >>"$dir/log/setup.log" 2>&1 || { echo "rgw.sh: the OSD did not start:" >&2; tail "$dir/log/setup.log" >&2; stop; return 1; }
    start_rgw || { stop; return 1; }
    key=CAIRNTEST$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n' | tr a-f A-F)
    secret=$(od -An -N20 -tx1 /dev/urandom | tr -d ' \n')
    timeout 60 radosgw-admin -c "$dir/ceph.conf" -n client.rgw.a user create --uid=cairn \
        --display-name=cairn --access-key="$key" --secret="$secret" >>"$dir/log/setup.log" 2>&1 ||
        { echo "rgw.sh: radosgw-admin user create failed" >&2; tail "$dir/log/setup.log" >&2; stop; return 1; }
    cat >"$dir/env" <<EOF
export CAIRN_TEST_S3_DIR=$dir
export CAIRN_TEST_S3_ENDPOINT=127.0.0.1:$rgwport
export CAIRN_TEST_S3_ACCESS_KEY=$key
export CAIRN_TEST_S3_SECRET_KEY=$secret
EOF
}

stop() {
    stop_pid "$dir/run/rgw.pid" 30
    stop_pid "$dir/run/osd.pid" 30
    stop_pid "$dir/run/mon.pid" 30
}

case $cmd in
    start) start ;;
    stop) stop ;;
    start-rgw) pid_alive "$dir/run/rgw.pid" || start_rgw ;;
    stop-rgw) stop_pid "$dir/run/rgw.pid" 30 ;;
    *) echo "rgw.sh: unknown command $cmd" >&2; exit 2 ;;
esac
