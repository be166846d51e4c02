// `a && b && c`: the one shell list the benchmarks' peers (parallel-ssh,
// Ansible `raw`) send as a single remote command. Split on `&&` outside
// quotes; each part is then parsed as one simple command (shell.ts), so
// everything else a shell would interpret is still refused.

/** The parts of an `&&` list, or undefined when the line has no unquoted `&&`. */
export function splitAndList(line: string): string[] | undefined {
  const parts: string[] = [];
  let start = 0;
  let quote: '"' | "'" | undefined;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (quote) {
      if (c === '\\' && quote === '"') i++;
      else if (c === quote) quote = undefined;
    } else if (c === '\\') i++;
    else if (c === '"' || c === "'") quote = c;
    else if (c === '&' && line[i + 1] === '&') {
      parts.push(line.slice(start, i).trim());
      start = i + 2;
      i++;
    }
  }
  if (parts.length === 0) return undefined;
  parts.push(line.slice(start).trim());
  return parts;
}
