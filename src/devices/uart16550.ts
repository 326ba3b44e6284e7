import type { AccessSize, Device, IrqLine } from "../bus/device.js";
import { readBytes, writeBytes } from "./guest_fault_log.js";

/**
 * A National Semiconductor PC16550D-compatible UART ("16550A": working 16-byte FIFOs), as on COM1
 * (layout.ts COM1_PORT, 8 ports, COM1_IRQ). Transmission is instantaneous: a byte written to THR
 * goes to `onOutput` at once, so THRE and TEMT are always set between accesses. The receive FIFO
 * holds 16 bytes (1 with FIFOs disabled); the console feeds it with `receive()` and should give no
 * more than `rxSpace()` bytes, as a real sender with flow control would.
 *
 * Register map (offsets from the base; PC16550D data sheet, table II):
 *   0  RBR (read) / THR (write); DLL when LCR.DLAB=1
 *   1  IER: b0 ERBFI rx data, b1 ETBEI THR empty, b2 ELSI line status, b3 EDSSI modem status;
 *      DLM when LCR.DLAB=1. Bits 7:4 read as zero (Linux's autoconfig checks they stick at 0).
 *   2  IIR (read): b0 1 = no interrupt, b3:1 id, b7:6 = 11 when FIFOs are enabled
 *      FCR (write): b0 FIFO enable, b1 clear RX FIFO, b2 clear TX FIFO, b7:6 RX trigger 1/4/8/14
 *   3  LCR: b1:0 word length, b2 stop bits, b5:3 parity, b6 break, b7 DLAB
 *   4  MCR: b0 DTR, b1 RTS, b2 OUT1, b3 OUT2 (gates INTR onto the ISA bus on a PC), b4 LOOP
 *   5  LSR: b0 DR, b1 OE, b2 PE, b3 FE, b4 BI, b5 THRE, b6 TEMT, b7 error in RX FIFO
 *   6  MSR: b0 DCTS, b1 DDSR, b2 TERI, b3 DDCD, b4 CTS, b5 DSR, b6 RI, b7 DCD
 *   7  SCR: scratch
 *
 * Interrupt priority (IIR id): line status (0b011) > received data (0b010, or 0b110 character
 * timeout with FIFOs on) > THR empty (0b001) > modem status (0b000).
 *
 * THRE interrupt semantics are those of a real 16550 as Linux's 8250 driver tests them
 * (drivers/tty/serial/8250/8250_port.c serial8250_do_startup, the UART_BUG_THRE and UART_BUG_TXEN
 * tests): the THRE interrupt is pending when THR became empty or when IER.ETBEI goes 0 -> 1 while
 * THR is empty; reading IIR while it is the reported interrupt, or writing THR, clears it.
 *
 * The interrupt output reaches `irq` only while MCR.OUT2 is set and loopback is off, as on a PC
 * (OUT2 drives the tri-state buffer of the IRQ line; Linux sets OUT2 whenever the port has an IRQ).
 */
export class Uart16550 implements Device {
  readonly name: string;

  /** Statistics (read by `--stats`). */
  readonly stats = { txBytes: 0, rxBytes: 0, overruns: 0, interrupts: 0 };
  /** Called when the receive FIFO becomes empty after a guest read: the console may feed more. */
  onRxDrained: (() => void) | undefined;

  private readonly rx = new Uint8Array(RX_FIFO_SIZE);
  private rxHead = 0;
  private rxCount = 0;

  private ier = 0;
  private lcr = 0;
  private mcr = 0;
  private lsr = LSR_THRE | LSR_TEMT;
  private msr = 0;
  private scr = 0;
  private fcr = 0; // write-only; kept for FIFO enable and trigger level
  private dll = 0x0c; // 9600 baud, what a PC BIOS leaves
  private dlm = 0;
  private thrIpending = false;
  private irqLevel = false;

  constructor(
    private readonly irq: IrqLine,
    private readonly onOutput: (bytes: Uint8Array | number) => void,
    options: { name?: string; modemInputs?: number } = {},
  ) {
    this.name = options.name ?? "uart16550";
    /** The lines a console "modem" presents: CTS, DSR and DCD asserted (as QEMU's serial does). */
    this.modemInputs = (options.modemInputs ?? MSR_CTS | MSR_DSR | MSR_DCD) & 0xf0;
    this.msr = this.modemInputs;
  }

  private readonly modemInputs: number;

  // ---- the console side ----

  /**
   * Queues received bytes (console input). Returns how many were taken into the FIFO; bytes that
   * arrive while the FIFO is full are lost and set LSR.OE, as on the wire. In loopback mode the
   * receiver is disconnected from the line, so external input is ignored (returns 0).
   */
  receive(bytes: Uint8Array | readonly number[] | number): number {
    if (this.mcr & MCR_LOOP) return 0;
    let taken = 0;
    if (typeof bytes === "number") {
      taken = this.pushRx(bytes) ? 1 : 0;
    } else {
      for (let i = 0; i < bytes.length; i++) if (this.pushRx(bytes[i]!)) taken++;
    }
    this.updateIrq();
    return taken;
  }

  /** Free room in the receive FIFO (16 bytes with FIFOs on, 1 without). */
  rxSpace(): number {
    if (this.mcr & MCR_LOOP) return 0;
    return this.rxCapacity() - this.rxCount;
  }

  /** The baud rate the guest programmed (1.8432 MHz / 16 / divisor), 0 for divisor 0. */
  baud(): number {
    const divisor = (this.dlm << 8) | this.dll;
    return divisor === 0 ? 0 : Math.floor(115200 / divisor);
  }

  /** The interrupt output as the ISA bus sees it (after the OUT2 gate). */
  irqAsserted(): boolean {
    return this.irqLevel;
  }

  // ---- Device ----

  read(offset: number, size: AccessSize): number {
    return readBytes((o) => this.readByte(o), offset, size, 8);
  }

  write(offset: number, size: AccessSize, value: number): void {
    writeBytes((o, v) => this.writeByte(o, v), offset, size, value, 8);
  }

  private readByte(offset: number): number {
    switch (offset) {
      case 0: {
        if (this.lcr & LCR_DLAB) return this.dll;
        const byte = this.popRx();
        this.updateIrq();
        if (this.rxCount === 0 && byte >= 0) this.onRxDrained?.();
        return Math.max(byte, 0);
      }
      case 1:
        return this.lcr & LCR_DLAB ? this.dlm : this.ier;
      case 2: {
        const id = this.interruptId();
        // Reading IIR acknowledges a THRE interrupt (PC16550D table IV: "reading the IIR
        // (if source of interrupt)").
        if (id === IIR_THRI) {
          this.thrIpending = false;
          this.updateIrq();
        }
        return id | (this.fcr & FCR_ENABLE ? IIR_FIFO_ENABLED : 0);
      }
      case 3:
        return this.lcr;
      case 4:
        return this.mcr;
      case 5: {
        const value = this.lsr | (this.rxCount > 0 ? LSR_DR : 0);
        // Reading LSR clears the error bits (OE, PE, FE, BI) and so the line status interrupt.
        this.lsr &= ~(LSR_OE | LSR_PE | LSR_FE | LSR_BI | LSR_FIFO_ERROR);
        this.updateIrq();
        return value;
      }
      case 6: {
        const value = this.msr;
        this.msr &= 0xf0; // reading MSR clears the delta bits
        this.updateIrq();
        return value;
      }
      case 7:
        return this.scr;
      default:
        return 0xff;
    }
  }

  private writeByte(offset: number, value: number): void {
    switch (offset) {
      case 0:
        if (this.lcr & LCR_DLAB) {
          this.dll = value;
          return;
        }
        this.transmit(value);
        return;
      case 1: {
        if (this.lcr & LCR_DLAB) {
          this.dlm = value;
          return;
        }
        const previous = this.ier;
        this.ier = value & 0x0f;
        const changed = previous ^ this.ier;
        if (changed & IER_ETBEI) {
          // ETBEI 0 -> 1 with THR empty raises THRE at once (what Linux's THRE test checks);
          // clearing ETBEI drops a pending THRE.
          this.thrIpending = (this.ier & IER_ETBEI) !== 0 && (this.lsr & LSR_THRE) !== 0;
        }
        this.updateIrq();
        return;
      }
      case 2:
        this.writeFcr(value);
        return;
      case 3:
        this.lcr = value;
        return;
      case 4:
        this.writeMcr(value);
        return;
      case 5:
        // LSR is read-only (the data sheet allows factory-test writes; a guest gets nothing).
        return;
      case 6:
        return;
      case 7:
        this.scr = value;
        return;
      default:
        return;
    }
  }

  private writeFcr(value: number): void {
    const wasEnabled = (this.fcr & FCR_ENABLE) !== 0;
    const enabled = (value & FCR_ENABLE) !== 0;
    // Changing FCR0 resets both FIFOs; the other bits are only written while FCR0 is set.
    if (wasEnabled !== enabled) this.clearRx();
    if (enabled) {
      if (value & FCR_CLEAR_RX) this.clearRx();
      // TX FIFO: transmission is instantaneous, nothing to clear.
      this.fcr = value & (FCR_ENABLE | FCR_TRIGGER_MASK);
    } else {
      this.fcr = 0;
    }
    this.updateIrq();
  }

  private writeMcr(value: number): void {
    const previous = this.mcr;
    this.mcr = value & 0x1f;
    if ((previous ^ this.mcr) & (MCR_LOOP | 0x0f)) this.setModemInputs(this.currentModemInputs());
    this.updateIrq();
  }

  /** MSR high nibble: in loopback CTS=RTS, DSR=DTR, RI=OUT1, DCD=OUT2 (data sheet, MCR bit 4). */
  private currentModemInputs(): number {
    if (!(this.mcr & MCR_LOOP)) return this.modemInputs;
    const m = this.mcr;
    return (
      (m & MCR_RTS ? MSR_CTS : 0) |
      (m & MCR_DTR ? MSR_DSR : 0) |
      (m & MCR_OUT1 ? MSR_RI : 0) |
      (m & MCR_OUT2 ? MSR_DCD : 0)
    );
  }

  private setModemInputs(inputs: number): void {
    const old = this.msr & 0xf0;
    const changed = old ^ inputs;
    let delta = this.msr & 0x0f;
    if (changed & MSR_CTS) delta |= MSR_DCTS;
    if (changed & MSR_DSR) delta |= MSR_DDSR;
    if (changed & MSR_DCD) delta |= MSR_DDCD;
    if (changed & MSR_RI && !(inputs & MSR_RI)) delta |= MSR_TERI; // trailing edge of RI
    this.msr = inputs | delta;
  }

  private transmit(byte: number): void {
    // Writing THR clears a pending THRE interrupt (the IRQ line drops, giving the next THRE a
    // fresh edge on an edge-triggered PIC input).
    this.thrIpending = false;
    this.updateIrq();
    this.stats.txBytes++;
    if (this.mcr & MCR_LOOP) {
      // Loopback: the transmitter shift register feeds the receiver; the line output is idle.
      this.pushRx(byte);
    } else {
      this.onOutput(byte);
    }
    // The byte left THR and the shift register at once: THRE and TEMT, and THRE interrupt.
    this.lsr |= LSR_THRE | LSR_TEMT;
    this.thrIpending = true;
    this.updateIrq();
  }

  private rxCapacity(): number {
    return this.fcr & FCR_ENABLE ? RX_FIFO_SIZE : 1;
  }

  /** One received character; false when it was lost to an overrun. */
  private pushRx(byte: number): boolean {
    if (this.rxCount >= this.rxCapacity()) {
      this.lsr |= LSR_OE;
      this.stats.overruns++;
      if (!(this.fcr & FCR_ENABLE)) {
        // Without FIFOs the new character overwrites RBR (data sheet: "the character in the
        // RBR is overwritten"); with FIFOs it is lost in the shift register.
        this.rx[this.rxHead] = byte & 0xff;
        this.stats.rxBytes++;
      }
      return false;
    }
    this.rx[(this.rxHead + this.rxCount) % RX_FIFO_SIZE] = byte & 0xff;
    this.rxCount++;
    this.stats.rxBytes++;
    return true;
  }

  private popRx(): number {
    if (this.rxCount === 0) return -1;
    const byte = this.rx[this.rxHead]!;
    this.rxHead = (this.rxHead + 1) % RX_FIFO_SIZE;
    this.rxCount--;
    return byte;
  }

  private clearRx(): void {
    this.rxHead = 0;
    this.rxCount = 0;
  }

  private rxTrigger(): number {
    if (!(this.fcr & FCR_ENABLE)) return 1;
    return RX_TRIGGER_LEVELS[(this.fcr >> 6) & 3]!;
  }

  /** The IIR identification bits (b3:0) of the highest-priority pending interrupt. */
  private interruptId(): number {
    const ier = this.ier;
    if (ier & IER_ELSI && this.lsr & (LSR_OE | LSR_PE | LSR_FE | LSR_BI)) return IIR_RLSI;
    if (ier & IER_ERBFI && this.rxCount > 0) {
      // Below the trigger level a real 16550 reports a character timeout after four character
      // times of silence; with no line timing here it is reported at once (Linux treats both
      // the same way: serial8250_handle_irq reads while LSR.DR).
      return this.rxCount >= this.rxTrigger() ? IIR_RDI : IIR_RX_TIMEOUT;
    }
    if (ier & IER_ETBEI && this.thrIpending) return IIR_THRI;
    if (ier & IER_EDSSI && this.msr & 0x0f) return IIR_MSI;
    return IIR_NO_INT;
  }

  private updateIrq(): void {
    const pending = this.interruptId() !== IIR_NO_INT;
    const level = pending && (this.mcr & (MCR_OUT2 | MCR_LOOP)) === MCR_OUT2;
    if (level === this.irqLevel) return;
    this.irqLevel = level;
    if (level) this.stats.interrupts++;
    this.irq.setLevel(level);
  }
}

const RX_FIFO_SIZE = 16;
const RX_TRIGGER_LEVELS = [1, 4, 8, 14] as const;

const IER_ERBFI = 0x01;
const IER_ETBEI = 0x02;
const IER_ELSI = 0x04;
const IER_EDSSI = 0x08;

const IIR_NO_INT = 0x01;
const IIR_MSI = 0x00;
const IIR_THRI = 0x02;
const IIR_RDI = 0x04;
const IIR_RLSI = 0x06;
const IIR_RX_TIMEOUT = 0x0c;
const IIR_FIFO_ENABLED = 0xc0;

const FCR_ENABLE = 0x01;
const FCR_CLEAR_RX = 0x02;
const FCR_TRIGGER_MASK = 0xc0;

const LCR_DLAB = 0x80;

const MCR_DTR = 0x01;
const MCR_RTS = 0x02;
const MCR_OUT1 = 0x04;
const MCR_OUT2 = 0x08;
const MCR_LOOP = 0x10;

const LSR_DR = 0x01;
const LSR_OE = 0x02;
const LSR_PE = 0x04;
const LSR_FE = 0x08;
const LSR_BI = 0x10;
const LSR_THRE = 0x20;
const LSR_TEMT = 0x40;
const LSR_FIFO_ERROR = 0x80;

const MSR_DCTS = 0x01;
const MSR_DDSR = 0x02;
const MSR_TERI = 0x04;
const MSR_DDCD = 0x08;
const MSR_CTS = 0x10;
const MSR_DSR = 0x20;
const MSR_RI = 0x40;
const MSR_DCD = 0x80;
