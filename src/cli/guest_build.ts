import { parseArgs } from "node:util";
import { UsageError } from "../errors.js";
import {
  buildDefaultGuest,
  cachedGuest,
  type GuestArch,
  guestPaths,
  parseGuestArch,
} from "../guest/default_guest.js";

const HELP = `usage: vessel guest build [--arch amd64|i386] [--force]

Builds the default guest: Debian's kernel package and busybox-static, downloaded with apt-get on
a private apt state (the host's apt configuration is not touched), and an initramfs written by
Vessel. Cached under \${XDG_CACHE_HOME:-~/.cache}/vessel/guest/<arch>/.

  --arch amd64|i386   guest architecture (default amd64; i386 is the 686 kernel for --engine soft)
  --force             rebuild even if the cache holds a guest
`;

export async function run(args: string[]): Promise<number> {
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse(args);
  } catch (err) {
    throw new UsageError("USAGE", `${(err as Error).message}\n${HELP}`);
  }
  if (parsed.values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  if (parsed.positionals.length > 0)
    throw new UsageError("USAGE", `unexpected argument "${parsed.positionals[0]}"\n${HELP}`);
  let arch: GuestArch;
  try {
    arch = parseGuestArch(parsed.values.arch ?? "amd64");
  } catch (err) {
    throw new UsageError("USAGE", (err as Error).message);
  }
  const progress = (m: string): void => {
    process.stderr.write(`${m}\n`);
  };
  const cached = cachedGuest(arch);
  if (cached !== undefined && parsed.values.force !== true) {
    progress(`the ${arch} guest is already built in ${guestPaths(arch).dir} (--force rebuilds it)`);
  } else {
    buildDefaultGuest(arch, { progress, force: true });
  }
  const g = cachedGuest(arch)!;
  process.stdout.write(`kernel  ${g.kernel}\ninitrd  ${g.initrd}\ncmdline ${g.cmdline}\n`);
  return 0;
}

function parse(args: string[]) {
  return parseArgs({
    args,
    options: {
      arch: { type: "string" },
      force: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
    allowPositionals: true,
    strict: true,
  });
}
