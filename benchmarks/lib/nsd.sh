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

# nsd_wildcard_zone FILE ZONE writes a zone in which every name has an A record (192.0.2.1).
nsd_wildcard_zone() {
  printf '$ORIGIN %s.\n$TTL 300\n@ SOA ns hostmaster 1 3600 600 86400 300\n@ NS ns\nns A 127.0.0.1\n* A 192.0.2.1\n' "$2" > "$1"
}
