// Hotfix files kept in the orchestrator database, keyed by (sha256, file
// name), so a workflow carries only the digest and the name, and the worker
// streams the bytes. The same bytes stored under a wrong name first never
// stand in for the right name.
import { createHash } from 'node:crypto';
import type { Sql } from 'postgres';
import { parseHotfixFileName, HotfixFileName } from '../domain/hotfix';
import { HARD_MAX_BYTES } from '../domain/input-limits';

export interface StoredHotfixFile extends HotfixFileName {
  sha256: string;
  size: number;
  storedAt: Date;
  storedBy: string;
}

/** What PostgreSQL's bytea holds; the CLI's own (configurable) limit is lower, see domain/input-limits. */
export const MAX_HOTFIX_BYTES = HARD_MAX_BYTES;

export function sha256Hex(content: Buffer): string {
  return createHash('sha256').update(content).digest('hex');
}

/** Store a file (its name must parse); storing the same bytes under the same name again is a no-op. */
export async function storeHotfixFile(
  sql: Sql,
  fileName: string,
  content: Buffer,
  storedBy: string,
): Promise<StoredHotfixFile> {
  const parsed = parseHotfixFileName(fileName);
  if (content.length === 0) throw new Error(`${fileName} is empty: download the hotfix again`);
  if (content.length > MAX_HOTFIX_BYTES)
    throw new Error(`${fileName} is larger than ${MAX_HOTFIX_BYTES / 1024 / 1024} MiB: that is no hotfix file`);
  const sha256 = sha256Hex(content);
  await sql`
    INSERT INTO hotfix_file (sha256, file_name, name, version, component, issue_id, size, content, stored_by)
    VALUES (${sha256}, ${parsed.fileName}, ${parsed.name}, ${parsed.version}, ${parsed.component}, ${parsed.issueId}, ${content.length}, ${content}, ${storedBy})
    ON CONFLICT (sha256, file_name) DO NOTHING`;
  const stored = await hotfixFileInfo(sql, sha256, parsed.fileName);
  if (!stored) throw new Error(`hotfix file ${sha256} vanished while being stored`);
  return stored;
}

type Row = { sha256: string; file_name: string; size: number; stored_at: Date; stored_by: string };

function toInfo(r: Row): StoredHotfixFile {
  return {
    ...parseHotfixFileName(r.file_name),
    sha256: r.sha256,
    size: r.size,
    storedAt: r.stored_at,
    storedBy: r.stored_by,
  };
}

/** A stored file by digest and name; without a name (workflows started before names were kept), the latest stored with that digest. */
export async function hotfixFileInfo(
  sql: Sql,
  sha256: string,
  fileName?: string,
): Promise<StoredHotfixFile | undefined> {
  const rows = fileName
    ? await sql<
        Row[]
      >`SELECT sha256, file_name, size, stored_at, stored_by FROM hotfix_file WHERE sha256 = ${sha256} AND file_name = ${fileName}`
    : await sql<
        Row[]
      >`SELECT sha256, file_name, size, stored_at, stored_by FROM hotfix_file WHERE sha256 = ${sha256} ORDER BY stored_at DESC LIMIT 1`;
  return rows[0] ? toInfo(rows[0]) : undefined;
}

export async function hotfixFileContent(sql: Sql, sha256: string): Promise<Buffer> {
  const rows = await sql<{ content: Buffer }[]>`SELECT content FROM hotfix_file WHERE sha256 = ${sha256} LIMIT 1`;
  if (!rows[0]) throw new Error(`hotfix file ${sha256} is not stored: upload it again with 'km-hotfix upload FILE'`);
  return rows[0].content;
}

/** Forget a file that Key Manager refused to register: it must not be offered again under that name. */
export async function deleteHotfixFile(sql: Sql, sha256: string, fileName: string): Promise<void> {
  await sql`DELETE FROM hotfix_file WHERE sha256 = ${sha256} AND file_name = ${fileName}`;
}

/** The most recently stored file for a hotfix Name. */
export async function latestHotfixFileByName(sql: Sql, name: string): Promise<StoredHotfixFile | undefined> {
  const rows = await sql<
    Row[]
  >`SELECT sha256, file_name, size, stored_at, stored_by FROM hotfix_file WHERE name = ${name} ORDER BY stored_at DESC LIMIT 1`;
  return rows[0] ? toInfo(rows[0]) : undefined;
}

/** The file a rollout of `name` with this digest is about: the same bytes may be stored under several names. */
export async function hotfixFileOf(sql: Sql, sha256: string, name: string): Promise<StoredHotfixFile | undefined> {
  const rows = await sql<
    Row[]
  >`SELECT sha256, file_name, size, stored_at, stored_by FROM hotfix_file WHERE sha256 = ${sha256} AND name = ${name} ORDER BY stored_at DESC LIMIT 1`;
  return rows[0] ? toInfo(rows[0]) : undefined;
}
