import type { AccessSize, Device, IrqLine } from "../bus/device.js";
import type { PortBus } from "../bus/port_bus.js";
import { I8042_PORT } from "../memory/layout.js";
import { GuestFaultLog, hex } from "./guest_fault_log.js";

/**
 * An Intel 8042 keyboard controller with no keyboard and no mouse plugged in: enough for Linux's
 * probe (drivers/input/serio/i8042.c: i8042_controller_check, _selftest, _init, i8042_check_aux
 * with its AUX loopback and AUX IRQ test, i8042_check_mux) to succeed quickly, and for the two
 * things a VM needs from it: the reset line (command 0xFE, what Linux's BOOT_KBD reboot does) and
 * the A20 gate of the output port.
 *
 * Ports: data at I8042_PORT (0x60), status (read) / command (write) at I8042_PORT + 4 (0x64).
 * Port 0x61 between them is system control port B (PIT gate 2, speaker), not ours, so the
 * controller is two one-port devices: `dataPort` and `commandPort` (`attach()` registers both).
 *
 * Status register (0x64 read; Linux include/linux/i8042.h I8042_STR_*):
 *   b0 OBF output buffer full, b1 IBF input buffer full (always 0: commands complete at once),
 *   b2 SYS system flag (CTR b2), b3 A2 last write was a command, b4 keylock (1 = not inhibited),
 *   b5 AUXDATA output byte is from the AUX port, b6 timeout, b7 parity error.
 * Controller command byte "CTR" (I8042_CTR_*): b0 KBDINT (IRQ1 on keyboard data), b1 AUXINT
 *   (IRQ12 on AUX data), b2 SYS, b3 IGNKEYLOCK, b4 KBDDIS, b5 AUXDIS, b6 XLATE.
 * Output port (commands 0xD0/0xD1): b0 system reset (active low), b1 A20 gate, b4 OBF-kbd,
 *   b5 OBF-aux.
 *
 * Bytes the guest sends to the absent keyboard or mouse are answered as a real controller does
 * when the device does not respond: 0xFE with the timeout bit, so the atkbd and psmouse probes
 * fail at once instead of waiting for their timeouts.
 */
export class I8042 {
  readonly name = "i8042";
  readonly dataPort: Device;
  readonly commandPort: Device;
  /** Guest misbehaviour (unknown commands): counted, logged at a bounded rate. */
  readonly faults = new GuestFaultLog("i8042");
  readonly stats = { resets: 0, commands: 0 };

  private ctr = CTR_KBDINT | CTR_SYS | CTR_XLATE;
  private outputPort = OUT_RESET | OUT_A20;
  private status = STR_KEYLOCK | STR_SYS;
  /** Bytes waiting for the output buffer; the head is in the buffer when non-empty. */
  private readonly queue: { byte: number; aux: boolean; timeout: boolean }[] = [];
  /** The command whose parameter byte the next data write carries (0 = none). */
  private pendingCommand = 0;
  private kbdLevel = false;
  private auxLevel = false;

  /**
   * @param kbdIrq IRQ1 (layout.ts I8042_KBD_IRQ); @param auxIrq IRQ12 (I8042_AUX_IRQ).
   * @param onReset the guest pulsed the CPU reset line (command 0xFE, or output port b0 = 0).
   * @param onA20 the guest changed the A20 gate (output port b1).
   */
  constructor(
    private readonly kbdIrq: IrqLine,
    private readonly auxIrq: IrqLine,
    private readonly onReset: () => void,
    private readonly onA20: (enabled: boolean) => void = () => {},
  ) {
    this.dataPort = {
      name: "i8042-data",
      read: (_offset: number, size: AccessSize) => this.widen(this.readData(), size),
      write: (_offset: number, _size: AccessSize, value: number) => this.writeData(value & 0xff),
    };
    this.commandPort = {
      name: "i8042-command",
      read: (_offset: number, size: AccessSize) => this.widen(this.readStatus(), size),
      write: (_offset: number, _size: AccessSize, value: number) => this.writeCommand(value & 0xff),
    };
  }

  /** Registers the data port at `base` and the status/command port at `base + 4`. */
  attach(bus: PortBus, base = I8042_PORT): void {
    bus.register(base, 1, this.dataPort);
    bus.register(base + 4, 1, this.commandPort);
  }

  /** The A20 gate as the guest last set it (output port b1). */
  get a20(): boolean {
    return (this.outputPort & OUT_A20) !== 0;
  }

  /** A 16/32-bit access to an 8-bit port: the byte, upper bytes floating (all ones). */
  private widen(byte: number, size: AccessSize): number {
    return size === 1 ? byte : size === 2 ? 0xff00 | byte : (0xffffff00 | byte) >>> 0;
  }

  private readStatus(): number {
    let s = this.status & ~(STR_OBF | STR_AUXDATA | STR_TIMEOUT | STR_SYS);
    if (this.ctr & CTR_SYS) s |= STR_SYS;
    const head = this.queue[0];
    if (head !== undefined) {
      s |= STR_OBF;
      if (head.aux) s |= STR_AUXDATA;
      if (head.timeout) s |= STR_TIMEOUT;
    }
    return s;
  }

  private readData(): number {
    const head = this.queue.shift();
    // The output buffer empties: the IRQ pins drop, and rise again for the next byte (a new edge).
    this.updateIrq(true);
    return head === undefined ? this.lastByte : (this.lastByte = head.byte);
  }

  /** What a read of an empty output buffer returns: the byte last read (the latch keeps it). */
  private lastByte = 0;

  private writeCommand(cmd: number): void {
    this.stats.commands++;
    this.status |= STR_CMDDAT;
    this.pendingCommand = 0;
    if (cmd >= 0x20 && cmd <= 0x3f) {
      // Read controller RAM; byte 0 is the CTR, the others read as zero here.
      this.enqueue(cmd === 0x20 ? this.ctr : 0, false);
      return;
    }
    if (cmd >= 0x60 && cmd <= 0x7f) {
      this.pendingCommand = cmd;
      return;
    }
    if (cmd >= 0xf0) {
      // Pulse output port bits 3:0 low for 6 us where the command's bits 3:0 are 0; bit 0 is
      // the CPU reset line (the reboot path of arch/x86/kernel/reboot.c, BOOT_KBD).
      if ((cmd & 1) === 0) this.reset();
      return;
    }
    switch (cmd) {
      case 0xa7: // disable AUX
        this.ctr |= CTR_AUXDIS;
        return;
      case 0xa8: // enable AUX
        this.ctr &= ~CTR_AUXDIS;
        return;
      case 0xa9: // AUX interface test: 0 = no error
        this.enqueue(0x00, false);
        return;
      case 0xaa: // controller self-test: 0x55 = passed (I8042_RET_CTL_TEST); sets SYS
        this.ctr |= CTR_SYS;
        this.enqueue(0x55, false);
        return;
      case 0xab: // keyboard interface test: 0 = no error
        this.enqueue(0x00, false);
        return;
      case 0xad: // disable keyboard
        this.ctr |= CTR_KBDDIS;
        return;
      case 0xae: // enable keyboard
        this.ctr &= ~CTR_KBDDIS;
        return;
      case 0xc0: // read input port: b7 keyboard not inhibited
        this.enqueue(0x80, false);
        return;
      case 0xd0: // read output port
        this.enqueue(this.currentOutputPort(), false);
        return;
      case 0xd1: // write output port (next data byte)
      case 0xd2: // write keyboard output buffer (next data byte comes back as keyboard data)
      case 0xd3: // write AUX output buffer (AUX loopback: comes back as AUX data)
      case 0xd4: // write to the AUX device
        this.pendingCommand = cmd;
        return;
      case 0xdd: // A20 off (some chipsets)
        this.setOutputPort(this.outputPort & ~OUT_A20);
        return;
      case 0xdf: // A20 on
        this.setOutputPort(this.outputPort | OUT_A20);
        return;
      default:
        // Includes 0x90-0x93 (active multiplexing prefixes, which a non-MUX controller ignores).
        this.faults.report(`unknown controller command ${hex(cmd)} ignored`);
        return;
    }
  }

  private writeData(byte: number): void {
    this.status &= ~STR_CMDDAT;
    const cmd = this.pendingCommand;
    this.pendingCommand = 0;
    if (cmd >= 0x60 && cmd <= 0x7f) {
      if (cmd === 0x60) {
        this.ctr = byte;
        this.updateIrq(false);
      }
      return;
    }
    switch (cmd) {
      case 0xd1:
        this.setOutputPort(byte);
        return;
      case 0xd2:
        this.enqueue(byte, false);
        return;
      case 0xd3:
        this.enqueue(byte, true);
        return;
      case 0xd4:
        // To the mouse, which is absent: the controller times out and answers 0xFE.
        this.enqueue(0xfe, true, true);
        return;
      default:
        // To the keyboard, which is absent: same.
        this.enqueue(0xfe, false, true);
        return;
    }
  }

  private currentOutputPort(): number {
    const head = this.queue[0];
    let value = this.outputPort & ~(OUT_OBF_KBD | OUT_OBF_AUX);
    if (head !== undefined) value |= head.aux ? OUT_OBF_AUX : OUT_OBF_KBD;
    return value;
  }

  private setOutputPort(value: number): void {
    const a20Before = this.outputPort & OUT_A20;
    this.outputPort = (value | OUT_RESET) & 0xff;
    if ((this.outputPort & OUT_A20) !== a20Before) this.onA20((this.outputPort & OUT_A20) !== 0);
    if ((value & OUT_RESET) === 0) this.reset();
  }

  private reset(): void {
    this.stats.resets++;
    this.onReset();
  }

  private enqueue(byte: number, aux: boolean, timeout = false): void {
    if (this.queue.length >= QUEUE_LIMIT) {
      // A guest that never reads the data port: keep the oldest bytes (the buffer is one byte
      // on real hardware; the queue only spares multi-byte answers a lost byte).
      this.faults.report("output buffer overflow, byte dropped");
      return;
    }
    this.queue.push({ byte: byte & 0xff, aux, timeout });
    this.updateIrq(false);
  }

  /**
   * IRQ1 is high while the output buffer holds keyboard data and CTR.KBDINT is set; IRQ12 likewise
   * for AUX data and CTR.AUXINT. After a data read (`pulse`), both drop before the next byte
   * raises its line again, giving an edge-triggered PIC input a new edge.
   */
  private updateIrq(pulse: boolean): void {
    const head = this.queue[0];
    const kbd = head !== undefined && !head.aux && (this.ctr & CTR_KBDINT) !== 0;
    const aux = head?.aux === true && (this.ctr & CTR_AUXINT) !== 0;
    if (pulse) {
      if (this.kbdLevel) this.kbdIrq.setLevel((this.kbdLevel = false));
      if (this.auxLevel) this.auxIrq.setLevel((this.auxLevel = false));
    }
    if (kbd !== this.kbdLevel) this.kbdIrq.setLevel((this.kbdLevel = kbd));
    if (aux !== this.auxLevel) this.auxIrq.setLevel((this.auxLevel = aux));
  }
}

const QUEUE_LIMIT = 16;

const STR_OBF = 0x01;
const STR_SYS = 0x04;
const STR_CMDDAT = 0x08;
const STR_KEYLOCK = 0x10;
const STR_AUXDATA = 0x20;
const STR_TIMEOUT = 0x40;

const CTR_KBDINT = 0x01;
const CTR_AUXINT = 0x02;
const CTR_SYS = 0x04;
const CTR_KBDDIS = 0x10;
const CTR_AUXDIS = 0x20;
const CTR_XLATE = 0x40;

const OUT_RESET = 0x01;
const OUT_A20 = 0x02;
const OUT_OBF_KBD = 0x10;
const OUT_OBF_AUX = 0x20;
