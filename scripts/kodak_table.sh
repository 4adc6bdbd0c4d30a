#!/usr/bin/env bash
# The README's Kodak table: bits per subpixel and mean encode / decode
# seconds per image for tfc and the classical lossless codecs, every file
# decoded and compared with the original pixels.
# usage: scripts/kodak_table.sh DIR [MODEL] [codec ...]
#   codecs: tfc png webp jxl7 jxl9 (default: all). MODEL defaults to the
#   built-in one; pass "" to keep it while naming codecs.
# env: TFC (binary, default target/release/tfc)
set -euo pipefail
dir=$1; model=${2:-}; shift $(( $# >= 2 ? 2 : 1 ))
codecs=${*:-tfc png webp jxl7 jxl9}
tfc=${TFC:-target/release/tfc}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
now() { date +%s.%N; }
pixels() { convert "$1" ppm:- | md5sum | cut -d' ' -f1; }
echo "| codec | bits per subpixel | encode s/image | decode s/image |"
echo "|---|---|---|---|"
for c in $codecs; do
  bits=0; subpx=0; enc=0; dec=0; n=0
  for f in "$dir"/*.png; do
    read -r w h ch < <(python3 - "$f" <<'PY'
import sys,struct
d=open(sys.argv[1],'rb').read(33); w,h=struct.unpack('>II',d[16:24]); ct=d[25]
print(w,h,{0:1,2:3,4:2,6:4}.get(ct,3))
PY
)
    t0=$(now)
    case $c in
      tfc)  "$tfc" -q compress ${model:+--model "$model"} -f "$f" -o "$tmp/o.tfc"; out=$tmp/o.tfc;;
      png)  zopflipng -y --iterations=15 "$f" "$tmp/o.png" >/dev/null 2>&1; out=$tmp/o.png;;
      jxl7) cjxl -d 0 -e 7 "$f" "$tmp/o.jxl" >/dev/null 2>&1; out=$tmp/o.jxl;;
      jxl9) cjxl -d 0 -e 9 "$f" "$tmp/o.jxl" >/dev/null 2>&1; out=$tmp/o.jxl;;
      webp) cwebp -quiet -lossless -z 9 "$f" -o "$tmp/o.webp"; out=$tmp/o.webp;;
      *) echo "unknown codec $c" >&2; exit 2;;
    esac
    t1=$(now)
    case $c in
      tfc)  "$tfc" -q decompress ${model:+--model "$model"} -f "$out" -o "$tmp/d.png";;
      png)  convert "$out" ppm:- > /dev/null; cp "$out" "$tmp/d.png";;
      jxl*) djxl "$out" "$tmp/d.png" >/dev/null 2>&1;;
      webp) dwebp -quiet "$out" -o "$tmp/d.png";;
    esac
    t2=$(now)
    [ "$(pixels "$f")" = "$(pixels "$tmp/d.png")" ] || { echo "$c: $f does not round-trip" >&2; exit 1; }
    bits=$((bits + $(stat -c %s "$out") * 8)); subpx=$((subpx + w*h*ch)); n=$((n + 1))
    enc=$(python3 -c "print($enc + $t1 - $t0)"); dec=$(python3 -c "print($dec + $t2 - $t1)")
  done
  python3 -c "print('| $c | %.3f | %.2f | %.2f |' % ($bits/$subpx, $enc/$n, $dec/$n))"
done
