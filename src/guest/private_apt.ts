import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { GuestError } from "./guest_error.js";

/**
 * apt-get and apt-cache run on a private state: our own sources.list, lists, archive cache and an
 * empty dpkg status, all under one directory of Vessel's cache, selected with `-o Dir::...`
 * options (apt.conf(5)). The host's apt configuration and package lists are never written.
 * The mirror is the one this host already uses (its sources.list), so a host behind a local
 * mirror or proxy keeps working.
 */

export interface AptSource {
  uri: string;
  suite: string;
  signedBy?: string;
}

const DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg";

/** True for URIs of a Debian archive (deb.debian.org, a mirror's /debian, debian-security, snapshot). */
function isDebianUri(uri: string): boolean {
  return /debian\.org|\/debian(-security|-ports)?\/?$|\/debian(-security)?\//.test(uri);
}

/** Parses one-line ("deb [opts] uri suite comps") and deb822 (.sources) files into Debian sources. */
export function parseAptSources(files: readonly { name: string; text: string }[]): AptSource[] {
  const out: AptSource[] = [];
  const add = (uri: string, suite: string, components: string[], signedBy?: string): void => {
    if (!isDebianUri(uri) || !components.includes("main")) return;
    if (out.some((s) => s.uri === uri && s.suite === suite)) return;
    out.push(signedBy === undefined ? { uri, suite } : { uri, suite, signedBy });
  };
  for (const { name, text } of files) {
    if (name.endsWith(".sources")) {
      for (const stanza of text.split(/\n\s*\n/)) {
        const fields = new Map<string, string>();
        let last = "";
        for (const line of stanza.split("\n")) {
          if (line.startsWith("#")) continue;
          const m = /^([A-Za-z-]+):\s*(.*)$/.exec(line);
          if (m) {
            last = m[1]!.toLowerCase();
            fields.set(last, m[2]!.trim());
          } else if (/^\s/.test(line) && last) fields.set(last, `${fields.get(last)} ${line.trim()}`);
        }
        if (fields.get("enabled")?.toLowerCase() === "no") continue;
        if (!(fields.get("types") ?? "").split(/\s+/).includes("deb")) continue;
        const comps = (fields.get("components") ?? "").split(/\s+/);
        const signedBy = fields.get("signed-by");
        for (const uri of (fields.get("uris") ?? "").split(/\s+/).filter(Boolean)) {
          for (const suite of (fields.get("suites") ?? "").split(/\s+/).filter(Boolean)) {
            add(uri, suite, comps, signedBy?.startsWith("/") ? signedBy : undefined);
          }
        }
      }
    } else {
      for (const raw of text.split("\n")) {
        const line = raw.replace(/#.*/, "").trim();
        const m = /^deb\s+(?:\[([^\]]*)\]\s+)?(\S+)\s+(\S+)\s+(.*)$/.exec(line);
        if (!m) continue;
        const signed = /signed-by=(\S+)/.exec(m[1] ?? "")?.[1];
        add(m[2]!, m[3]!, m[4]!.split(/\s+/), signed);
      }
    }
  }
  return out;
}

/** The Debian sources of this host (or VESSEL_DEBIAN_MIRROR / VESSEL_DEBIAN_SUITE, or deb.debian.org). */
export function hostDebianSources(etc = "/etc/apt"): AptSource[] {
  const files: { name: string; text: string }[] = [];
  const read = (path: string, name: string): void => {
    try {
      files.push({ name, text: readFileSync(path, "utf8") });
    } catch {
      /* absent */
    }
  };
  read(join(etc, "sources.list"), "sources.list");
  try {
    for (const f of readdirSync(join(etc, "sources.list.d")).sort()) {
      if (f.endsWith(".list") || f.endsWith(".sources")) read(join(etc, "sources.list.d", f), f);
    }
  } catch {
    /* absent */
  }
  const env = process.env.VESSEL_DEBIAN_MIRROR;
  let sources = env ? [] : parseAptSources(files);
  if (sources.length === 0) {
    let suite = process.env.VESSEL_DEBIAN_SUITE;
    if (suite === undefined) {
      try {
        suite = /^VERSION_CODENAME=(\S+)/m.exec(readFileSync("/etc/os-release", "utf8"))?.[1];
      } catch {
        /* no os-release */
      }
    }
    sources = [{ uri: env ?? "http://deb.debian.org/debian", suite: suite ?? "bookworm" }];
  }
  return sources;
}

/**
 * The start of the names apt gives the list files of a source (apt-pkg's URItoFileName: the URI
 * without its scheme and user, the characters of QuoteString's set as %xx, '/' turned into '_'):
 * "http://deb.debian.org/debian" -> "deb.debian.org_debian_". apt's update exits 0 when a mirror
 * is unreachable (warnings only) and keeps older lists, so lists are told apart by this prefix.
 */
export function aptListPrefix(uri: string): string {
  return `${uri
    .replace(/^[a-z0-9+.-]+:\/\//i, "")
    .replace(/^[^@/]*@/, "")
    .replace(/\/+$/, "")
    .replace(/[\\|{}[\]<>"^~_=!@#$%&*]/g, (c) => `%${c.charCodeAt(0).toString(16).padStart(2, "0")}`)
    .replace(/\//g, "_")}_`;
}

export interface PackageInfo {
  name: string;
  version: string;
  size: number;
  depends: string;
  filename?: string;
}

/** apt on a private state directory for one architecture. */
export class PrivateApt {
  readonly root: string;
  readonly arch: string;
  readonly sources: AptSource[];

  constructor(root: string, arch: string, sources: AptSource[] = hostDebianSources()) {
    this.root = root;
    this.arch = arch;
    this.sources = sources;
  }

  /** The -o options that point apt at our state (apt.conf(5) Dir::* and APT::Architecture). */
  options(): string[] {
    const r = this.root;
    const opts = [
      `Dir::State=${r}/state`,
      `Dir::State::status=${r}/state/status`,
      `Dir::Cache=${r}/cache`,
      `Dir::Etc::SourceList=${r}/sources.list`,
      `Dir::Etc::SourceParts=${r}/sources.list.d`,
      `Dir::Etc::Preferences=${r}/preferences`,
      `Dir::Etc::PreferencesParts=${r}/preferences.d`,
      `APT::Architecture=${this.arch}`,
      `APT::Architectures::=${this.arch}`,
      "Acquire::Languages=none",
      "Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled=false",
    ];
    // As root, apt downloads as user _apt, which cannot write into a root-owned private cache.
    if (process.getuid?.() === 0) opts.push("APT::Sandbox::User=root");
    return opts.flatMap((o) => ["-o", o]);
  }

  /** Creates the directory tree and our sources.list. */
  prepare(): void {
    const r = this.root;
    for (const d of ["state/lists/partial", "cache/archives/partial", "sources.list.d", "preferences.d"]) {
      mkdirSync(join(r, d), { recursive: true });
    }
    if (!existsSync(join(r, "state/status"))) writeFileSync(join(r, "state/status"), "");
    const lines = this.sources.map((s) => {
      const key = s.signedBy ?? (existsSync(DEBIAN_KEYRING) ? DEBIAN_KEYRING : undefined);
      return `deb ${key ? `[signed-by=${key}] ` : ""}${s.uri} ${s.suite} main`;
    });
    writeFileSync(
      join(r, "sources.list"),
      `# written by Vessel (src/guest/private_apt.ts)\n${lines.join("\n")}\n`,
    );
  }

  private run(
    tool: "apt-get" | "apt-cache",
    args: string[],
    cwd?: string,
  ): { status: number; stdout: string; stderr: string } {
    const r = spawnSync(tool, [...this.options(), ...args], {
      encoding: "utf8",
      cwd: cwd ?? this.root,
      maxBuffer: 64 * 1024 * 1024,
      env: { ...process.env, DEBIAN_FRONTEND: "noninteractive", LC_ALL: "C" },
    });
    if (r.error) {
      const code = (r.error as NodeJS.ErrnoException).code;
      if (code === "ENOENT") {
        throw new GuestError(
          "GUEST_NO_APT",
          `${tool} is not installed: the default guest is built from Debian packages with apt. On a Debian or Ubuntu host install apt; elsewhere bring your own kernel and initramfs with --kernel and --initrd`,
          { tool },
          r.error,
        );
      }
      throw new GuestError(
        "GUEST_APT_FAILED",
        `could not run ${tool}: ${r.error.message}`,
        { tool },
        r.error,
      );
    }
    return { status: r.status ?? 1, stdout: r.stdout, stderr: r.stderr };
  }

  /**
   * apt-get update on the private state. A partial failure (one suite's index mid-sync on the
   * mirror) is reported as a warning when other lists arrived; no list at all is an error.
   */
  update(): string[] {
    this.prepare();
    const r = this.run("apt-get", ["-q", "update"]);
    const errors = r.stderr
      .split("\n")
      .filter((l) => /^(E|W|Err):/.test(l))
      .map((l) => l.trim());
    // apt keeps the lists of an earlier update when this one fails: count only our sources' lists
    // (a mirror changed with VESSEL_DEBIAN_MIRROR must not be served from another's old lists).
    const lists = readdirSync(join(this.root, "state/lists"))
      .filter((f) => /_Packages(\.[a-z0-9]+)?$/.test(f))
      .filter((f) => this.sources.some((s) => f.startsWith(aptListPrefix(s.uri))));
    if (lists.length === 0) {
      const uris = this.sources.map((s) => s.uri).join(", ");
      throw new GuestError(
        "GUEST_MIRROR_UNREACHABLE",
        `could not fetch package lists from the Debian mirror (${uris}): ${errors.slice(0, 3).join("; ") || r.stderr.trim()}. Check the network, or set VESSEL_DEBIAN_MIRROR to a reachable mirror`,
        { sources: this.sources, stderr: r.stderr },
      );
    }
    return r.status === 0 ? [] : errors;
  }

  /** The candidate version's record (apt-cache show --no-all-versions). */
  show(pkg: string): PackageInfo {
    const r = this.run("apt-cache", ["show", "--no-all-versions", pkg]);
    if (r.status !== 0 || !/^Package:/m.test(r.stdout)) {
      throw new GuestError(
        "GUEST_PACKAGE_NOT_FOUND",
        `package ${pkg} (${this.arch}) is not in the Debian mirror's lists (${this.sources.map((s) => `${s.uri} ${s.suite}`).join(", ")}): ${r.stderr.trim() || "no record"}`,
        { pkg, arch: this.arch },
      );
    }
    const field = (f: string): string => new RegExp(`^${f}: (.*)$`, "m").exec(r.stdout)?.[1]?.trim() ?? "";
    const info: PackageInfo = {
      name: field("Package"),
      version: field("Version"),
      size: Number(field("Size")) || 0,
      depends: field("Depends"),
    };
    const filename = field("Filename");
    if (filename) info.filename = filename;
    return info;
  }

  /** Downloads packages (name or name=version) into `dir`; returns the .deb paths. */
  download(pkgs: readonly PackageInfo[], dir: string): string[] {
    mkdirSync(dir, { recursive: true });
    const fileOf = (p: PackageInfo): string | undefined => {
      const ver = p.version.replace(/:/g, "%3a");
      const f = readdirSync(dir).find((x) => x.startsWith(`${p.name}_${ver}_`) && x.endsWith(".deb"));
      return f === undefined ? undefined : join(dir, f);
    };
    // A package already downloaded whole (same version, the size the index gives) is kept.
    const needed = pkgs.filter((p) => {
      const f = fileOf(p);
      return f === undefined || (p.size > 0 && statSync(f).size !== p.size);
    });
    if (needed.length === 0) return pkgs.map((p) => fileOf(p)!);
    const r = this.run("apt-get", ["-q", "download", ...needed.map((p) => `${p.name}=${p.version}`)], dir);
    if (r.status !== 0) {
      throw new GuestError(
        "GUEST_DOWNLOAD_FAILED",
        `apt-get download ${pkgs.map((p) => p.name).join(" ")} failed: ${r.stderr.trim().split("\n").slice(-3).join("; ")}`,
        { pkgs: pkgs.map((p) => p.name), stderr: r.stderr },
      );
    }
    return pkgs.map((p) => {
      const f = fileOf(p);
      if (f === undefined) {
        throw new GuestError(
          "GUEST_DOWNLOAD_FAILED",
          `apt-get did not leave ${p.name} ${p.version} in ${dir}`,
          {
            pkg: p.name,
          },
        );
      }
      return f;
    });
  }
}
