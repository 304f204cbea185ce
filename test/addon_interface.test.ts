/**
 * The JS <-> native seam in one place and checked: the names the addon exports are exactly
 * those the `NativeAddon` interface of lib/native.ts declares (read from its source with
 * the TypeScript compiler), and the ABI number is the one package.json holds.
 */
import * as fs from 'fs';
import * as path from 'path';
import * as ts from 'typescript';
import { getBackend } from '../lib';

function interfaceMembers(file: string, name: string): string[] {
  const src = ts.createSourceFile(file, fs.readFileSync(file, 'utf8'), ts.ScriptTarget.ES2022, true);
  const out: string[] = [];
  src.forEachChild((n) => {
    if (ts.isInterfaceDeclaration(n) && n.name.text === name) {
      for (const m of n.members) if (m.name && (ts.isIdentifier(m.name) || ts.isStringLiteral(m.name))) out.push(m.name.text);
    }
  });
  return out;
}

test('the CPU addon exports exactly the NativeAddon interface', () => {
  const declared = interfaceMembers(path.join(__dirname, '..', 'lib', 'native.ts'), 'NativeAddon').sort();
  expect(declared.length).toBeGreaterThan(30);
  const addon = getBackend('cpu').addon as unknown as Record<string, unknown>;
  expect(Object.keys(addon).sort()).toEqual(declared);
});

test('the addon ABI is package.json kradagrad.abi', () => {
  const pkg = JSON.parse(fs.readFileSync(path.join(__dirname, '..', 'package.json'), 'utf8'));
  expect(getBackend('cpu').addon.abiVersion).toBe(pkg.kradagrad.abi);
});

test('NativeTensor and NativeJob handles carry the methods their interfaces declare', () => {
  const file = path.join(__dirname, '..', 'lib', 'native.ts');
  const a = getBackend('cpu').addon;
  const t = a.tensor('cpu', 'float32', 1, [2]);
  for (const m of interfaceMembers(file, 'NativeTensor')) expect(m in t).toBe(true);
  a.beginJob();
  const job = a.endJob();
  for (const m of interfaceMembers(file, 'NativeJob')) expect(m in job).toBe(true);
  t.dispose();
});
