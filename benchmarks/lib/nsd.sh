# Shared by benchmark scripts: an NSD configuration for one synthetic zone on loopback.
# nsd_conf DIR PORT ZONE ZONEFILE writes DIR/nsd.conf (state and log files in DIR as well).
nsd_conf() {
  local dir=$1 port=$2 zone=$3 zonefile=$4
  cat > "$dir/nsd.conf" <<CONF
server:
  ip-address: 127.0.0.1@$port
  server-count: 1
  username: ""
  chroot: ""
  zonesdir: "$dir"
  database: ""
  zonelistfile: "$dir/zone.list"
  xfrdfile: "$dir/xfrd.state"
  pidfile: "$dir/nsd.pid"
  logfile: "$dir/nsd.log"
  # NSD's response rate limiting (on by default in Debian) would throttle the wildcard answers.
  rrl-ratelimit: 0
remote-control:
  control-enable: no
zone:
  name: "$zone."
  zonefile: "$zonefile"
CONF
}
