// Size of the browser bundle (dist/tradecast.min.js, built by `npm run build`):
// minified, and minified + `gzip -9` (the gzip tool when present, else zlib level 9).
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';

const file = fileURLToPath(new URL('../dist/tradecast.min.js', import.meta.url));
const min = readFileSync(file);
let gz;
let how = 'gzip -9';
try {
  gz = execFileSync('gzip', ['-9', '-c', file]).length;
} catch {
  gz = gzipSync(min, { level: 9 }).length;
  how = 'zlib level 9';
}
console.log(`dist/tradecast.min.js: ${min.length} bytes minified, ${gz} bytes minified + ${how}`);
