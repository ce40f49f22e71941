#!/bin/sh
# Make an OCI bundle whose rootfs is Debian's busybox-static:
#   scripts/busybox-bundle.sh DIR [COMMAND...]
# DIR/rootfs gets /bin/busybox and a link for every applet; DIR/config.json
# is berth-runtime's default spec running COMMAND (default: sh) without a
# terminal.
set -eu
dir=${1:?usage: busybox-bundle.sh DIR [COMMAND...]}
shift
bb=/bin/busybox
[ -x "$bb" ] || { echo "busybox-bundle.sh: $bb missing: apt-get install busybox-static" >&2; exit 1; }
here=$(cd "$(dirname "$0")/.." && pwd)
runtime=${BERTH_RUNTIME:-$here/target/x86_64-unknown-linux-gnu/release/berth-runtime}
[ -x "$runtime" ] || runtime=$here/target/x86_64-unknown-linux-gnu/debug/berth-runtime
mkdir -p "$dir/rootfs/bin" "$dir/rootfs/proc" "$dir/rootfs/sys" "$dir/rootfs/dev" \
         "$dir/rootfs/tmp" "$dir/rootfs/etc" "$dir/rootfs/root"
cp "$bb" "$dir/rootfs/bin/busybox"
for app in $("$bb" --list); do
    [ -e "$dir/rootfs/bin/$app" ] || ln -s busybox "$dir/rootfs/bin/$app"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$dir/rootfs/etc/passwd"
printf 'root:x:0:\ntty:x:5:\nnogroup:x:65534:\n' > "$dir/rootfs/etc/group"
rm -f "$dir/config.json"
"$runtime" spec --bundle "$dir"
if [ $# -gt 0 ]; then
    args=$(printf '%s\n' "$@" | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read().splitlines()))')
else
    args='["sh"]'
fi
python3 - "$dir/config.json" "$args" <<'PY'
import json, sys
path, args = sys.argv[1], json.loads(sys.argv[2])
c = json.load(open(path))
c["process"]["terminal"] = False
c["process"]["args"] = args
json.dump(c, open(path, "w"), indent=2)
PY
