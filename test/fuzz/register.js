'use strict';
// Lets the fuzz children (plain `node`, outside Jest) run the TypeScript sources directly:
// `node -r ./test/fuzz/register.js test/fuzz/child.ts ...`. Each .ts file is transpiled
// with TypeScript's transpileModule (no type check; Jest's ts-jest does that for the test
// files) and cached under the system temp folder by a hash of its path and contents, so the
// fuzz always runs the sources as they are now, never a stale dist/, and a warm cache costs
// no TypeScript load at all.
const crypto = require('crypto');
const fs = require('fs');
const os = require('os');
const path = require('path');

const root = path.resolve(__dirname, '..', '..');
const cacheDir = path.join(os.tmpdir(), `kradagrad-fuzz-ts-${process.getuid ? process.getuid() : 'u'}`);
let ts;

function transpile(file, src) {
  ts = ts || require(path.join(root, 'node_modules', 'typescript'));
  return ts.transpileModule(src, {
    fileName: file,
    compilerOptions: {
      module: ts.ModuleKind.CommonJS,
      target: ts.ScriptTarget.ES2022,
      esModuleInterop: true,
      sourceMap: false,
      inlineSourceMap: true,
      inlineSources: true,
    },
  }).outputText;
}

require.extensions['.ts'] = (module, file) => {
  const src = fs.readFileSync(file, 'utf8');
  const key = crypto.createHash('sha1').update(file).update('\0').update(src).digest('hex');
  const cached = path.join(cacheDir, `${key}.js`);
  let out;
  try {
    out = fs.readFileSync(cached, 'utf8');
  } catch {
    out = transpile(file, src);
    try {
      fs.mkdirSync(cacheDir, { recursive: true });
      // Another child may write the same entry meanwhile: write aside, then rename.
      const tmp = `${cached}.${process.pid}.tmp`;
      fs.writeFileSync(tmp, out);
      fs.renameSync(tmp, cached);
    } catch {
      /* no cache: transpile again next time */
    }
  }
  module._compile(out, file);
};
