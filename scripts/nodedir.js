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

module.exports = { nodeDir };
if (require.main === module) console.log(nodeDir() || '');
