#!/usr/bin/env bash
# Collects the photographic Debian wallpapers (mate-backgrounds' nature set
# and the photographs among plasma-workspace-wallpapers) into one folder of
# symlinks, one file per picture (the largest size). They are JPEGs, so
# train on them downscaled: --data DIR@2.
# usage: scripts/wallpapers.sh [DIR]   (default runs/wallpapers)
set -euo pipefail
dir=${1:-runs/wallpapers}
mkdir -p "$dir"
n=0
for f in /usr/share/backgrounds/mate/nature/*.jpg; do
  [ -f "$f" ] && ln -sf "$f" "$dir/mate-$(basename "$f")" && n=$((n + 1))
done
for w in Autumn BytheWater ColdRipple ColorfulCups FallenLeaf OneStandsOut Path; do
  f=$(ls -S /usr/share/wallpapers/$w/contents/images/*.jpg 2>/dev/null | head -1 || true)
  [ -n "$f" ] && ln -sf "$f" "$dir/plasma-$w.jpg" && n=$((n + 1))
done
[ "$n" -gt 0 ] || { echo "no wallpapers found: apt-get install mate-backgrounds plasma-workspace-wallpapers" >&2; exit 1; }
echo "$n wallpapers in $dir" >&2
