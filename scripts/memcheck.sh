#!/usr/bin/env bash
# Runs the op tests (Jest, in band, one node process) under valgrind memcheck and fails on
# memory errors whose stack passes through kradagrad's native code (kradagrad_cpu.node,
# kradagrad_cuda.node when the tests load it, or a native/ source file): invalid
# reads/writes/frees, uses of uninitialised values, overlapping copies, bad syscall
# parameters, and definite leaks. Errors with no frame of ours (V8's JIT, Node, glibc's
# loader) are counted but do not fail the run.
#
#   scripts/memcheck.sh [--record] [test files...]
#       default files: test/ops.test.ts test/errors.test.ts test/tensor.test.ts test/async.test.ts
#       --record       also write the summary to bench/results/memcheck.txt
#
# Outputs in build/memcheck/: memcheck.xml (valgrind's XML), jest.log, summary.txt.
# Settings: OPENBLAS_NUM_THREADS=1 (one BLAS thread: faster under valgrind, deterministic),
# KRAD_MEMCHECK=1 (tests may shrink their largest inputs), --smc-check=all-non-file (V8
# generates code at run time), --child-silent-after-fork (Jest's helper processes).
# Suppressed (node.supp below): Node allocates a 40-byte wrapper inside
# napi_create_external (to support type tags on externals) that is freed by a V8 weak
# callback when the External is collected; Externals still alive at exit show up as
# "definitely lost" with our TensorHandle::Wrap on the stack although Node owns them.
set -euo pipefail
cd "$(dirname "$0")/.."

record=0
files=()
for a in "$@"; do
  case "$a" in
    --record) record=1 ;;
    *) files+=("$a") ;;
  esac
done
[ ${#files[@]} -eq 0 ] && files=(test/ops.test.ts test/errors.test.ts test/tensor.test.ts test/async.test.ts)

command -v valgrind >/dev/null || { echo "memcheck: valgrind is not installed (apt-get install valgrind)" >&2; exit 2; }
node scripts/build-native.js
out=build/memcheck
mkdir -p "$out"
rm -f "$out/memcheck.xml"

cat > "$out/node.supp" <<'EOF'
{
   node-napi-create-external-wrapper
   Memcheck:Leak
   match-leak-kinds: definite,indirect,possible
   fun:_Znwm
   fun:napi_create_external
}
EOF

cmd=(valgrind --tool=memcheck --smc-check=all-non-file --error-limit=no --leak-check=full
     --show-leak-kinds=definite,indirect,possible --child-silent-after-fork=yes
     --suppressions="$out/node.supp" --xml=yes --xml-file="$out/memcheck.xml"
     node node_modules/jest/bin/jest.js -i --ci "${files[@]}")
echo "memcheck: OPENBLAS_NUM_THREADS=1 KRAD_MEMCHECK=1 ${cmd[*]}"
start=$(date +%s)
set +e
OPENBLAS_NUM_THREADS=1 KRAD_MEMCHECK=1 "${cmd[@]}" 2>&1 | tee "$out/jest.log"
jest_rc=${PIPESTATUS[0]}
set -e
elapsed=$(( $(date +%s) - start ))

node - "$out/memcheck.xml" "$jest_rc" "$elapsed" "${files[*]}" > "$out/summary.txt" <<'EOF'
const fs = require('fs');
const [xmlPath, jestRc, elapsed, files] = process.argv.slice(2);
const xml = fs.readFileSync(xmlPath, 'utf8');
const tag = (s, t) => { const m = new RegExp(`<${t}>([\\s\\S]*?)</${t}>`).exec(s); return m ? m[1] : ''; };
const unxml = (s) => s.replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&amp;/g, '&').replace(/&apos;/g, "'").replace(/&quot;/g, '"');
const errors = [...xml.matchAll(/<error>([\s\S]*?)<\/error>/g)].map((m) => {
  const e = m[1];
  const stack = tag(e, 'stack');
  const frames = [...stack.matchAll(/<frame>([\s\S]*?)<\/frame>/g)].map((f) => ({
    fn: unxml(tag(f[1], 'fn')), obj: tag(f[1], 'obj'), dir: tag(f[1], 'dir'), file: tag(f[1], 'file'), line: tag(f[1], 'line'),
  }));
  const ours = frames.some((f) => /kradagrad_\w+\.node/.test(f.obj) || /(^|\/)native(\/|$)/.test(f.dir));
  const what = unxml(tag(e, 'what') || tag(tag(e, 'xwhat'), 'text'));
  return { kind: tag(e, 'kind'), what, ours, frames };
});
const failing = (k) => /^(Invalid|Mismatched|Uninit|Overlap|SyscallParam|ClientCheck|FishyValue)/.test(k) || k === 'Leak_DefinitelyLost' || k === 'Leak_IndirectlyLost';
const count = (list) => {
  const c = {};
  for (const e of list) c[e.kind] = (c[e.kind] || 0) + 1;
  return Object.entries(c).map(([k, v]) => `${k} ${v}`).join(', ') || 'none';
};
const ours = errors.filter((e) => e.ours);
const bad = ours.filter((e) => failing(e.kind));
const supp = [...tag(xml, 'suppcounts').matchAll(/<pair>\s*<count>(\d+)<\/count>\s*<name>([^<]+)<\/name>/g)].map((m) => `${m[2]} x${m[1]}`);
const lines = [
  `valgrind memcheck of the op tests (${new Date().toISOString()}, ${elapsed} s)`,
  `files: ${files}`,
  `jest exit code under valgrind: ${jestRc}`,
  `all valgrind errors: ${errors.length} (${count(errors)})`,
  `errors with a frame in kradagrad's native code: ${ours.length} (${count(ours)})`,
  `failing (invalid access / uninitialised / definite leak) from our code: ${bad.length}`,
  `suppressed: ${supp.join(', ') || 'none'}`,
];
for (const e of bad.slice(0, 20)) {
  lines.push('', `${e.kind}: ${e.what}`);
  for (const f of e.frames.slice(0, 12)) lines.push(`    ${f.fn} (${f.file ? `${f.dir}/${f.file}:${f.line}` : f.obj})`);
}
const possible = ours.filter((e) => !failing(e.kind));
if (possible.length) {
  lines.push('', 'not failing, from our code (first 5):');
  for (const e of possible.slice(0, 5)) lines.push(`  ${e.kind}: ${e.what} <- ${e.frames.slice(0, 4).map((f) => f.fn).join(' <- ')}`);
}
lines.push('', bad.length === 0 && jestRc === '0' ? 'RESULT: PASS' : 'RESULT: FAIL');
console.log(lines.join('\n'));
EOF

echo
cat "$out/summary.txt"
if [ "$record" = 1 ]; then
  {
    echo "command: scripts/memcheck.sh --record ${files[*]}"
    echo "valgrind: $(valgrind --version), node $(node --version)"
    echo
    cat "$out/summary.txt"
  } > bench/results/memcheck.txt
  echo "wrote bench/results/memcheck.txt"
fi
grep -q '^RESULT: PASS' "$out/summary.txt"
