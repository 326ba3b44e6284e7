import { parseArgs } from "node:util";
import {
  parseDiskFlag,
  parseNetFlag,
  parseVsockFlag,
  type VirtioDeviceSpec,
} from "../devices/virtio/device_spec.js";
import { UsageError } from "../errors.js";
import { DEFAULT_CMDLINE, ensureDefaultGuest, type GuestArch } from "../guest/default_guest.js";
import { guestCommandParam } from "../guest/init_script.js";
import { cachedRootfs, ROOT_CMDLINE } from "../guest/rootfs_image.js";
import { formatParavirtStats } from "../vm/paravirt_report.js";
import {
  type EngineName,
  parseCpus,
  parseEngine,
  parseMemSize,
  parseTechnique,
  type VmConfig,
} from "../vm/config.js";
import { DEFAULT_SOFT_TECHNIQUE } from "../engines/soft/technique.js";
import type { BtStats } from "../engines/soft/bt/bt_stats.js";
import { CONSOLE_HELP, ConsoleEscape } from "../vm/console_escape.js";
import { isPvm } from "../engines/kvm/system.js";
import { probeEngine } from "../vm/engine_probe.js";
import { Vm, type VmResult } from "../vm/vm.js";

const HELP = `usage: vessel vm run [options] [-- command...]

Boots a virtual machine: the default guest (built on first use), or your own kernel.
With a command, the guest runs it instead of a shell and Vessel exits with its status.

  --engine kvm|soft   execution engine (default: KVM if it can boot Linux here, else soft)
  --kernel PATH       a Linux bzImage (default: the default guest's kernel)
  --initrd PATH       an initramfs (default: the default guest's, with the default kernel)
  --cmdline TEXT      the kernel command line (default: the default guest's)
  --mem SIZE          guest memory, e.g. 256M, 1G (default 256M)
  --cpus N            virtual CPUs (KVM engine; default 1)
  --stats             print statistics when the VM stops (VM exits by reason, ...)
  --technique interp|bt
                      soft engine: interpret guest code (interp, the reference) or translate
                      it into JavaScript blocks at run time (bt) (default ${DEFAULT_SOFT_TECHNIQUE})
  --no-decompress     soft engine: run the bzImage's own decompressor instead of loading the
                      kernel decompressed by Vessel (slower boot; for comparisons)
  --timeout SECONDS   stop the VM after this long
  --disk PATH[,ro][,serial=ID]      a virtio-blk disk (raw image); repeatable
  --net tap[,name=IF][,mac=MAC][,host-ip=CIDR][,bridge=BR]   a virtio-net NIC on a TAP; repeatable
  --vsock cid=N,uds=PATH            a virtio-vsock device (host side: a Unix socket)
  --rng                             a virtio-rng device
  --virtio-console                  a virtio console (hvc0); add console=hvc0 to --cmdline to use it
  --rootfs debian[,rw]              boot the Debian root filesystem image (vessel guest build
                                    --rootfs debian) as /dev/vda, read-only unless ",rw"

Console: Ctrl-A x leaves (stops the VM), Ctrl-A p pauses/resumes, Ctrl-A h for help.
Environment: VESSEL_KVM_PATH overrides /dev/kvm.
`;

interface RunOptions {
  engine?: string;
  kernel?: string;
  initrd?: string;
  cmdline?: string;
  mem?: string;
  cpus?: string;
  stats?: boolean;
  "no-decompress"?: boolean;
  technique?: string;
  timeout?: string;
  disk?: string[];
  net?: string[];
  vsock?: string;
  rng?: boolean;
  "virtio-console"?: boolean;
  rootfs?: string;
  help?: boolean;
}

function parse(args: string[]): { values: RunOptions; command: string[] } {
  const dash = args.indexOf("--");
  const own = dash < 0 ? args : args.slice(0, dash);
  const command = dash < 0 ? [] : args.slice(dash + 1);
  try {
    const { values, positionals } = parseArgs({
      args: own,
      allowPositionals: true,
      strict: true,
      options: {
        engine: { type: "string" },
        kernel: { type: "string" },
        initrd: { type: "string" },
        cmdline: { type: "string" },
        mem: { type: "string" },
        cpus: { type: "string" },
        stats: { type: "boolean" },
        "no-decompress": { type: "boolean" },
        technique: { type: "string" },
        timeout: { type: "string" },
        disk: { type: "string", multiple: true },
        net: { type: "string", multiple: true },
        vsock: { type: "string" },
        rng: { type: "boolean" },
        "virtio-console": { type: "boolean" },
        rootfs: { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    });
    if (positionals.length > 0) {
      throw new UsageError(
        "USAGE",
        `unexpected argument "${positionals[0]}": put the guest command after --\n${HELP}`,
      );
    }
    return { values, command };
  } catch (err) {
    if (err instanceof UsageError) throw err;
    throw new UsageError("USAGE", `${(err as Error).message}\n${HELP}`);
  }
}

/** Turns the flags into a machine config (and builds the default guest if it is needed). */
export function resolveConfig(values: RunOptions, command: string[], log: (line: string) => void): VmConfig {
  const kvmPath = process.env.VESSEL_KVM_PATH ?? "/dev/kvm";
  let engine: EngineName;
  if (values.engine !== undefined) {
    engine = parseEngine(values.engine);
    // A forced KVM engine on PVM runs, but a stock kernel makes no progress there: say so up front.
    if (
      engine === "kvm" &&
      values.kernel === undefined &&
      isPvm(process.env.VESSEL_SYS_MODULE_DIR ?? "/sys/module")
    ) {
      log(
        `vessel: warning: ${kvmPath} is PVM, a nested software hypervisor that cannot boot stock kernels; ` +
          "expect no console output (use --engine soft, or a host with hardware KVM)",
      );
    }
  } else {
    const choice = probeEngine(kvmPath, process.env.VESSEL_SYS_MODULE_DIR ?? "/sys/module");
    engine = choice.engine;
    log(`vessel: ${choice.reason}`);
  }
  const technique = values.technique === undefined ? undefined : parseTechnique(values.technique);
  if (technique !== undefined && engine === "kvm") {
    throw new UsageError(
      "VM_TECHNIQUE_ON_KVM",
      `--technique ${technique} chooses how the soft engine runs guest code; the KVM engine runs it on the host CPU: drop --technique, or add --engine soft`,
    );
  }
  const memBytes = parseMemSize(values.mem ?? "256M");
  const cpus = parseCpus(values.cpus ?? "1");
  if (engine === "soft" && cpus > 1) {
    throw new UsageError(
      "VM_SOFT_CPUS",
      `the soft engine runs one CPU: drop --cpus ${cpus}, or use --engine kvm on a KVM host`,
    );
  }
  if (values.initrd !== undefined && values.kernel === undefined) {
    throw new UsageError(
      "VM_INITRD_WITHOUT_KERNEL",
      "--initrd needs --kernel (the default guest brings its own initrd)",
    );
  }
  const arch: GuestArch = engine === "kvm" ? "amd64" : "i386";
  let kernel: string;
  let initrd: string | undefined;
  let cmdline: string;
  if (values.kernel !== undefined) {
    kernel = values.kernel;
    initrd = values.initrd;
    cmdline = values.cmdline ?? DEFAULT_CMDLINE[arch];
  } else {
    const guest = ensureDefaultGuest(arch, log);
    kernel = guest.kernel;
    initrd = guest.initrd;
    cmdline = values.cmdline ?? guest.cmdline;
  }
  const rootfs = values.rootfs === undefined ? undefined : rootfsDisk(values.rootfs, arch);
  if (rootfs !== undefined) cmdline = `${cmdline} ${rootfs.cmdline}`;
  if (command.length > 0) cmdline = `${cmdline} ${guestCommandParam(command)}`;
  let timeoutMs: number | undefined;
  if (values.timeout !== undefined) {
    const s = Number(values.timeout);
    if (!Number.isFinite(s) || s <= 0)
      throw new UsageError("USAGE", `--timeout "${values.timeout}" must be a positive number of seconds`);
    timeoutMs = s * 1000;
  }
  const virtio: VirtioDeviceSpec[] = [
    ...(rootfs === undefined ? [] : [rootfs.disk]),
    ...(values.disk ?? []).map(parseDiskFlag),
    ...(values.net ?? []).map(parseNetFlag),
    ...(values.vsock === undefined ? [] : [parseVsockFlag(values.vsock)]),
    ...(values.rng === true ? [{ kind: "rng" as const }] : []),
    ...(values["virtio-console"] === true ? [{ kind: "console" as const }] : []),
  ];
  return {
    engine,
    kernel,
    ...(virtio.length === 0 ? {} : { virtio }),
    ...(initrd === undefined ? {} : { initrd }),
    cmdline,
    memBytes,
    cpus,
    kvmPath,
    ...(timeoutMs === undefined ? {} : { timeoutMs }),
    ...(values["no-decompress"] === true ? { decompress: false } : {}),
    ...(technique === undefined ? {} : { technique }),
  };
}

/**
 * `--rootfs debian[,rw]`: the cached Debian image (src/guest/rootfs_image.ts) as the first virtio
 * disk, mounted as / by the initramfs. Read-only unless asked, so runs do not change the cached
 * image (Vessel's init needs no writable root: /run and /tmp are tmpfs).
 */
function rootfsDisk(text: string, arch: GuestArch): { disk: VirtioDeviceSpec; cmdline: string } {
  const [name, ...opts] = text.split(",");
  if (name !== "debian" || opts.some((o) => o !== "rw")) {
    throw new UsageError(
      "USAGE",
      `--rootfs ${text}: the only root filesystem is "debian" (--rootfs debian[,rw])`,
    );
  }
  const image = cachedRootfs(arch);
  if (image === undefined) {
    throw new UsageError(
      "VM_ROOTFS_MISSING",
      `no Debian ${arch} root filesystem image yet: build it with \`vessel guest build --arch ${arch} --rootfs debian\` (debootstrap, a few minutes)`,
    );
  }
  const rw = opts.includes("rw");
  return {
    disk: { kind: "blk", path: image.image, readOnly: !rw, serial: "vessel-root" },
    cmdline: rw ? ROOT_CMDLINE : ROOT_CMDLINE.replace(/\brw\b/, "ro"),
  };
}

/** The --stats report. */
export function formatStats(r: VmResult): string {
  const lines = [
    `engine        ${r.engine}`,
    `ended         ${r.reason}${r.timedOut ? " (time limit)" : ""}`,
  ];
  lines.push(`wall time     ${(r.wallMs / 1000).toFixed(3)} s`);
  if (r.bootToUserspaceMs !== undefined) lines.push(`to userspace  ${r.bootToUserspaceMs.toFixed(1)} ms`);
  if (r.instructions !== undefined) {
    lines.push(`instructions  ${r.instructions} (${(r.instructions / r.wallMs / 1000).toFixed(1)} MIPS)`);
  }
  if (r.exits !== undefined) {
    const total = Object.values(r.exits).reduce((a, b) => a + b, 0);
    lines.push(`VM exits      ${total}`);
    for (const [name, n] of Object.entries(r.exits).sort((a, b) => b[1] - a[1])) {
      lines.push(`  ${name.padEnd(16)} ${n}`);
    }
  }
  if (r.exitsByDevice !== undefined && r.exitsByDevice.length > 0) {
    lines.push("I/O exits by device");
    for (const d of r.exitsByDevice) lines.push(`  ${d.what.padEnd(30)} ${d.count}`);
  }
  const u = r.unclaimed;
  lines.push(
    `unclaimed     ports ${u.portReads} reads / ${u.portWrites} writes, MMIO ${u.mmioReads} / ${u.mmioWrites}`,
  );
  lines.push(`console       ${r.uart.txBytes} bytes out, ${r.uart.rxBytes} in`);
  if (r.technique !== undefined) lines.push(`technique     ${r.technique}`);
  if (r.bt !== undefined) lines.push(...formatBtStats(r.bt, r.instructions ?? 0));
  lines.push(...formatParavirtStats(r.virtio, r.paravirt));
  return `${lines.join("\n")}\n`;
}

/** The binary translator's counters (engines/soft/bt/bt_stats.ts). */
export function formatBtStats(bt: BtStats, instructions: number): string[] {
  const lines = [
    `bt blocks     ${bt.blocksTranslated} translated (${bt.guestBytesTranslated} bytes of guest code), ${bt.cacheBlocks} cached`,
    `bt dropped    ${bt.blocksInvalidated} by code writes, ${bt.blocksEvicted} evicted`,
    `bt runs       ${bt.blockExecutions} block executions, ${bt.translatedInstructions} instructions (${instructions > 0 ? ((100 * bt.translatedInstructions) / instructions).toFixed(1) : "0"} %) in compiled code`,
    `bt translate  ${(bt.translateNs / 1e6).toFixed(1)} ms`,
  ];
  const calls = Object.entries(bt.vmmCalls).sort((a, b) => b[1] - a[1]);
  const total = calls.reduce((a, [, n]) => a + n, 0);
  lines.push(`bt VMM calls  ${total}`);
  for (const [kind, n] of calls) lines.push(`  ${kind.padEnd(16)} ${n}`);
  return lines;
}

export async function run(args: string[]): Promise<number> {
  const { values, command } = parse(args);
  if (values.help === true) {
    process.stdout.write(HELP);
    return 0;
  }
  const log = (line: string) => process.stderr.write(`${line}\n`);
  const config = resolveConfig(values, command, log);
  const vm = Vm.start(config, { onOutput: (b) => process.stdout.write(b) });

  const stdin = process.stdin;
  // A terminal gets the raw console with the Ctrl-A escape (with or without a command: the command
  // may be interactive); piped input is passed to the guest's console as it is.
  const interactive = stdin.isTTY === true;
  const escaper = new ConsoleEscape();
  let paused = false;
  const onData = (chunk: Buffer) => {
    if (!interactive) {
      vm.sendInput(chunk);
      return;
    }
    const r = escaper.feed(chunk);
    if (r.forward.length > 0) vm.sendInput(r.forward);
    if (r.help) process.stderr.write(CONSOLE_HELP);
    if (r.togglePause) {
      paused = !paused;
      if (paused) vm.pause();
      else vm.resume();
      process.stderr.write(paused ? "\r\n[vessel: paused; C-a p resumes]\r\n" : "\r\n[vessel: resumed]\r\n");
    }
    if (r.quit) vm.stop();
  };
  if (interactive) stdin.setRawMode(true);
  stdin.on("data", onData);
  stdin.resume();
  const onSignal = () => vm.stop();
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  try {
    const result = await vm.wait();
    if (values.stats === true) process.stderr.write(`\n${formatStats(result)}`);
    if (result.reason === "exit") return command.length > 0 ? (result.exitStatus ?? 0) : 0;
    if (result.reason === "stopped") {
      if (result.timedOut) log(`vessel: ${result.detail}`);
      return command.length > 0 ? 1 : result.timedOut ? 1 : 0;
    }
    log(`vessel: ${result.detail}`);
    return result.reason === "reset" && command.length === 0 ? 0 : 1;
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    if (interactive) stdin.setRawMode(false);
    stdin.off("data", onData);
    stdin.pause();
  }
}
