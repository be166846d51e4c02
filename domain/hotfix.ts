// Hotfix file names and Names, per the vendor procedure:
//   sshmgr-<version>-hotfix_<component>_<description>_<issue_id>.gz
// Name = hotfix_<component>_<description>; issue id = the last `_` token.

export const COMPONENTS = ['frontend', 'backend', 'common'] as const;
export type Component = (typeof COMPONENTS)[number];

export interface HotfixFileName {
  fileName: string;
  version: string;
  /** What Key Manager lists under System → Hotfixes, e.g. hotfix_common_fix_tags_and_stats. */
  name: string;
  component: Component;
  description: string;
  issueId: string;
}

const VERSION = /^\d+(?:\.\d+){1,3}$/;
// Words of a description: letters, digits, dots and dashes between underscores.
const DESCRIPTION = /^[A-Za-z0-9][A-Za-z0-9.-]*(?:_[A-Za-z0-9][A-Za-z0-9.-]*)*$/;
const ISSUE_ID = /^[A-Za-z][A-Za-z0-9]*-\d+$/;
const NAME = /^hotfix_(frontend|backend|common)_[A-Za-z0-9][A-Za-z0-9.-]*(?:_[A-Za-z0-9][A-Za-z0-9.-]*)*$/;

/** The longest file name Linux allows (NAME_MAX, bytes; the grammar is ASCII): a hotfix's Name comes from its file's name. */
export const FILE_NAME_MAX = 255;
/** The longest Name: what the shortest version and issue id leave of a file name (sshmgr-1.0-<Name>_A-1.gz). */
export const HOTFIX_NAME_MAX = FILE_NAME_MAX - 'sshmgr-1.0-_A-1.gz'.length;

/**
 * What is wrong with a description (the words between the component and the
 * issue id), said so a person can fix it; undefined when nothing is.
 */
export function descriptionProblem(description: string): string | undefined {
  if (description === '') return 'the description is empty: give words such as fix_queue_stall';
  const what = `description '${description}'`;
  const bad = /[^A-Za-z0-9._-]/.exec(description);
  if (bad)
    return `${what} has ${JSON.stringify(bad[0])}: use only letters, digits, '.', '-' and '_' (e.g. fix_queue_stall)`;
  const joined = description
    .split('_')
    .filter((w) => w !== '')
    .join('_');
  if (description.endsWith('_'))
    return `${what} ends with '_': '_' only goes between two words, so drop it${joined ? ` (${joined})` : ''}`;
  if (description.startsWith('_'))
    return `${what} starts with '_': '_' only goes between two words, so drop it${joined ? ` (${joined})` : ''}`;
  if (description.includes('__')) return `${what} has '__': '_' goes between two words, one at a time (${joined})`;
  const word = description.split('_').find((w) => !/^[A-Za-z0-9]/.test(w));
  if (word) return `${what} has the word '${word}': each word between '_' must start with a letter or a digit`;
  return undefined;
}

export class HotfixNameError extends Error {
  override name = 'HotfixNameError';
}

const EXAMPLE = 'sshmgr-3.0.0-hotfix_common_fix_tags_and_stats_UKM-1291.gz';

/** Parse a hotfix file name (a path is allowed; only its last part counts). */
export function parseHotfixFileName(pathOrName: string): HotfixFileName {
  const fileName = pathOrName.split('/').pop() ?? pathOrName;
  const fail = (why: string): never => {
    throw new HotfixNameError(
      `'${fileName}' is not a hotfix file name (${why}); expected sshmgr-<version>-hotfix_<component>_<description>_<issue_id>.gz, e.g. ${EXAMPLE}`,
    );
  };
  if (fileName.length > FILE_NAME_MAX)
    fail(`it is longer than ${FILE_NAME_MAX} characters, the longest file name there is`);
  if (!fileName.startsWith('sshmgr-')) fail("it must start with 'sshmgr-'");
  if (!fileName.endsWith('.gz')) fail("it must end with '.gz'");
  const body = fileName.slice('sshmgr-'.length, -'.gz'.length);
  const dash = body.indexOf('-hotfix_');
  if (dash < 0) fail("'-hotfix_' must follow the version");
  const version = body.slice(0, dash);
  if (!VERSION.test(version)) fail(`'${version}' is not a version such as 3.0.0`);
  const tokens = body.slice(dash + 1).split('_'); // ['hotfix', component, ...description, issue]
  if (tokens.length < 4) fail('it needs a component, a description and an issue id');
  const component = tokens[1] as Component;
  if (!COMPONENTS.includes(component)) fail(`component '${tokens[1]}' must be frontend, backend or common`);
  const issueId = tokens[tokens.length - 1];
  if (!ISSUE_ID.test(issueId)) fail(`'${issueId}' is not an issue id such as UKM-1291`);
  const description = tokens.slice(2, -1).join('_');
  if (!DESCRIPTION.test(description))
    fail(
      descriptionProblem(description) ?? `'${description}' is not a description of letters, digits, '.', '-' and '_'`,
    );
  return { fileName, version, name: `hotfix_${component}_${description}`, component, description, issueId };
}

export function isHotfixName(name: string): boolean {
  return name.length <= HOTFIX_NAME_MAX && NAME.test(name);
}

/** Validate a hotfix Name such as hotfix_backend_fix_queue_stall; it reaches a shell, so the grammar is strict. */
export function parseHotfixName(name: string): { name: string; component: Component } {
  if (!isHotfixName(name)) {
    // The right prefix and length: say what is wrong with the description itself.
    const prefix = /^hotfix_(frontend|backend|common)_/.exec(name);
    const why = prefix && name.length <= HOTFIX_NAME_MAX ? descriptionProblem(name.slice(prefix[0].length)) : undefined;
    if (why) throw new HotfixNameError(`'${name}' is not a hotfix Name: its ${why}`);
    throw new HotfixNameError(
      `'${name}' is not a hotfix Name: expected hotfix_<frontend|backend|common>_<description> of letters, digits, '.', '-' and '_', at most ${HOTFIX_NAME_MAX} characters (e.g. hotfix_common_fix_tags_and_stats)`,
    );
  }
  return { name, component: name.split('_')[1] as Component };
}

export function componentOf(name: string): Component {
  return parseHotfixName(name).component;
}

export function hotfixFileName(p: {
  version: string;
  component: Component;
  description: string;
  issueId: string;
}): string {
  return `sshmgr-${p.version}-hotfix_${p.component}_${p.description}_${p.issueId}.gz`;
}
