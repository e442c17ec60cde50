#!/bin/sh
# Seeds each fuzz target's corpus with the reference LTX fixtures (both formats for every
# target: files of the other format are useful near-misses). The corpus is gitignored.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
fixtures="$here/../fixtures/ltx"
for target in decode_v1 decode_v3 detect; do
    mkdir -p "$here/corpus/$target"
    for f in "$fixtures"/v1/*.ltx "$fixtures"/v3/*.ltx; do
        cp "$f" "$here/corpus/$target/$(basename "$(dirname "$f")")-$(basename "$f")"
    done
done
echo "seeded $(ls "$here/corpus/decode_v1" | wc -l) files into each of corpus/{decode_v1,decode_v3,detect}"
