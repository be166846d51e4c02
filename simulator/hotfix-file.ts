// Sample hotfix files for the simulator: a gzip of a small JSON manifest.
// The checksums are SHA-1 hex (40 characters), like the vendor's message.
// A file's checksum on a server derives only from (installed KM version,
// path), so a hotfix built for version X applies exactly on servers running X.
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import { Component, COMPONENTS, hotfixFileName, parseHotfixFileName, parseHotfixName } from '../domain/hotfix';

export interface HotfixManifestFile {
  path: string;
  /** SHA-1 of the file the hotfix expects to replace. */
  expectedOnDisk: string;
  /** SHA-1 of the file after the hotfix. */
  replacement: string;
}

export interface HotfixManifest {
  name: string;
  version: string;
  component: Component;
  description: string;
  issueId: string;
  files: HotfixManifestFile[];
}

export interface MakeHotfixOptions {
  component: Component;
  /** Key Manager version the hotfix is built for, e.g. '3.0.0'. */
  version: string;
  description: string;
  issueId: string;
  /** Folder to write into; without it nothing is written (only the bytes are returned). */
  outDir?: string;
  /** Files it replaces (default: one per component under /opt/sshmgr). */
  files?: string[];
}

const SHA1 = /^[0-9a-f]{40}$/;

/** The checksum a server running `kmVersion` has on disk for `filePath`. */
export function installedChecksum(kmVersion: string, filePath: string): string {
  return createHash('sha1').update(`sshmgr ${kmVersion} ${filePath}`).digest('hex');
}

function replacementChecksum(version: string, name: string, filePath: string): string {
  return createHash('sha1').update(`sshmgr ${version} ${name} ${filePath}`).digest('hex');
}

const DEFAULT_FILES: Record<Component, string[]> = {
  frontend: ['/opt/sshmgr/frontend/static/app.js'],
  backend: ['/opt/sshmgr/api/v2/operations.pyc'],
  common: ['/opt/sshmgr/common/tags.pyc', '/opt/sshmgr/common/stats.pyc'],
};

/** Build a hotfix file; writes it to outDir when given. */
export async function makeHotfix(
  opts: MakeHotfixOptions,
): Promise<{ fileName: string; path?: string; bytes: Buffer; manifest: HotfixManifest }> {
  // hotfixFileName only formats; parsing it back validates every part (throws HotfixNameError).
  const fileName = hotfixFileName(opts);
  const parsed = parseHotfixFileName(fileName);
  const files = (opts.files ?? DEFAULT_FILES[opts.component]).map((p) => ({
    path: p,
    expectedOnDisk: installedChecksum(parsed.version, p),
    replacement: replacementChecksum(parsed.version, parsed.name, p),
  }));
  const manifest: HotfixManifest = {
    name: parsed.name,
    version: parsed.version,
    component: parsed.component,
    description: parsed.description,
    issueId: parsed.issueId,
    files,
  };
  // mtime 0 in the gzip header: the same inputs always give the same bytes.
  const bytes = gzipSync(Buffer.from(JSON.stringify(manifest, null, 2) + '\n'));
  bytes.writeUInt32LE(0, 4);
  if (!opts.outDir) return { fileName, bytes, manifest };
  await fs.mkdir(opts.outDir, { recursive: true });
  const out = path.join(opts.outDir, fileName);
  await fs.writeFile(out, bytes, { mode: 0o644 });
  return { fileName, path: out, bytes, manifest };
}

export class ManifestError extends Error {
  override name = 'ManifestError';
}

/** Read a hotfix file's manifest; throws ManifestError saying what is wrong. */
export function readManifest(bytes: Buffer): HotfixManifest {
  let doc: unknown;
  try {
    doc = JSON.parse(gunzipSync(bytes).toString('utf8'));
  } catch {
    throw new ManifestError('is not a valid hotfix archive (expected a gzip-compressed manifest)');
  }
  const m = doc as Partial<HotfixManifest> | null;
  if (
    !m ||
    typeof m !== 'object' ||
    typeof m.name !== 'string' ||
    typeof m.version !== 'string' ||
    !Array.isArray(m.files)
  ) {
    throw new ManifestError('has a malformed manifest (needs name, version and files)');
  }
  try {
    parseHotfixName(m.name);
  } catch {
    throw new ManifestError(`names an invalid hotfix '${m.name}'`);
  }
  if (!COMPONENTS.includes(m.component as Component))
    throw new ManifestError(`has an unknown component '${String(m.component)}'`);
  for (const f of m.files as unknown[]) {
    const file = f as Partial<HotfixManifestFile> | null;
    if (
      !file ||
      typeof file.path !== 'string' ||
      !SHA1.test(String(file.expectedOnDisk)) ||
      !SHA1.test(String(file.replacement))
    ) {
      throw new ManifestError('has a malformed file entry (needs path and two 40-hex SHA-1 checksums)');
    }
  }
  return m as HotfixManifest;
}
