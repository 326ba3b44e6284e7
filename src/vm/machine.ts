import type { IrqLine } from "../bus/device.js";
import { MmioBus } from "../bus/mmio_bus.js";
import { PortBus } from "../bus/port_bus.js";
import { DebugExit } from "../devices/debug_exit.js";
import { I8042 } from "../devices/i8042.js";
import type { VirtualClock } from "../devices/interrupt_source.js";
import { CmosRtc } from "../devices/rtc.js";
import { Uart16550 } from "../devices/uart16550.js";
import {
  COM1_IRQ,
  COM1_PORT,
  DEBUG_EXIT_PORT,
  I8042_AUX_IRQ,
  I8042_KBD_IRQ,
  RTC_IRQ,
  RTC_PORT,
} from "../memory/layout.js";

/** Why a machine asked to stop, from its devices' point of view. */
export type MachineStop = { kind: "exit"; status: number } | { kind: "reset" };

export interface MachineDevicesOptions {
  clock: VirtualClock;
  /** The engine's interrupt line for an ISA IRQ (KVM_IRQ_LINE, or the soft engine's chipset). */
  irq: (n: number) => IrqLine;
  /** Console output (the UART's transmitter). */
  output: (bytes: Uint8Array | number) => void;
  /** A device asks the machine to stop (debug-exit status, i8042 reset). */
  stop: (why: MachineStop) => void;
  /** The engine keeps its own RTC (the soft engine's PcPlatform has one): do not add ours. */
  rtc?: boolean;
}

/**
 * The devices every Vessel machine has, on every engine (the "devices shared by all
 * engines"): the 16550 UART on COM1 as the console, the i8042 for reset and the kernel's probe, the
 * CMOS RTC with the host's time, and the debug-exit port. They live in the machine thread; the
 * engine routes exits to `ports` and `mmio`.
 */
export class MachineDevices {
  readonly ports = new PortBus();
  readonly mmio = new MmioBus();
  readonly uart: Uart16550;
  readonly i8042: I8042;
  readonly debugExit: DebugExit;
  readonly rtc: CmosRtc | undefined;

  constructor(opts: MachineDevicesOptions) {
    this.uart = new Uart16550(opts.irq(COM1_IRQ), opts.output, { name: "uart16550@0x3f8" });
    this.ports.register(COM1_PORT, 8, this.uart);
    this.i8042 = new I8042(opts.irq(I8042_KBD_IRQ), opts.irq(I8042_AUX_IRQ), () =>
      opts.stop({ kind: "reset" }),
    );
    this.i8042.attach(this.ports);
    this.debugExit = new DebugExit(opts.clock, (status) => opts.stop({ kind: "exit", status }));
    this.ports.register(DEBUG_EXIT_PORT, 2, this.debugExit);
    if (opts.rtc !== false) {
      this.rtc = new CmosRtc(opts.irq(RTC_IRQ), opts.clock);
      this.ports.register(RTC_PORT, 2, this.rtc);
    } else {
      this.rtc = undefined;
    }
  }
}
