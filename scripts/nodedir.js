'use strict';
// Node's own headers ship beside the binary (<prefix>/include/node). Building against them
// keeps node-gyp and cmake-js from downloading headers, which fails offline.
const path = require('path');
const fs = require('fs');

function nodeDir() {
  const prefix = path.resolve(process.execPath, '../..');
  if (fs.existsSync(path.join(prefix, 'include', 'node', 'node_api.h'))) return prefix;
  return null;
}

/**
 * Whether a built addon speaks the ABI that package.json (next to `root`) names: a build
 * newer than its sources is still stale when the ABI number moved on. Read in a child
 * process, so a binary that cannot load here cannot take the build script down.
 */
function abiIsCurrent(addonFile, root) {
  let want;
  try {
    want = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')).kradagrad.abi;
  } catch {
    return true; // no ABI number to compare with: the timestamps decide
  }
  const r = require('child_process').spawnSync(process.execPath, ['-e', 'process.stdout.write(String(require(process.argv[1]).abiVersion))', addonFile], { encoding: 'utf8' });
  return r.status === 0 && r.stdout === String(want);
}

module.exports = { nodeDir, abiIsCurrent };
if (require.main === module) console.log(nodeDir() || '');
