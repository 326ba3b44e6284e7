import type { AccessSize, Device, IrqLine } from "../bus/device.js";
import { readBytes, writeBytes } from "./guest_fault_log.js";
import type { VirtualClock } from "./interrupt_source.js";

/**
 * A Motorola MC146818 real-time clock with its CMOS RAM, at RTC_PORT (0x70 index, 0x71 data;
 * length 2) on IRQ8 (layout.ts RTC_IRQ). The time is the host's wall time at machine start plus
 * the machine's VirtualClock, so it agrees with the PIT, the APIC timer and the TSC; a guest that
 * sets the clock moves only its own offset.
 *
 * Index port (0x70, write): b7 = NMI disable (kept in `nmiDisabled`, the platform may consult
 * it), b6:0 = CMOS address (128 bytes). Reads of 0x70 return 0xff (the port is write-only).
 *
 * Registers (MC146818 data sheet; Linux include/linux/mc146818rtc.h):
 *   0x00 seconds, 0x01 seconds alarm, 0x02 minutes, 0x03 minutes alarm, 0x04 hours, 0x05 hours
 *   alarm, 0x06 day of week (1 = Sunday), 0x07 day of month, 0x08 month, 0x09 year (00-99),
 *   0x32 century (the FADT "century" index Vessel's ACPI tables name);
 *   0x0A A: b7 UIP (update in progress, the 244 us before each second's update), b6:4 divider,
 *           b3:0 periodic rate select;
 *   0x0B B: b7 SET (stop updates, the guest writes the time), b6 PIE, b5 AIE, b4 UIE, b3 SQWE,
 *           b2 DM (1 = binary, 0 = BCD), b1 24/12 (1 = 24-hour), b0 DSE;
 *   0x0C C: b7 IRQF, b6 PF, b5 AF, b4 UF; read-only, cleared by the read (which drops IRQ8);
 *   0x0D D: b7 VRT (valid RAM and time), read-only;
 *   0x0E-0x7F: battery-backed RAM (memory size bytes: `setMemorySize`).
 *
 * Periodic, alarm and update-ended interrupts are modelled: flags are computed from the clock
 * when register C is read (so polling works with no timer), and `advance(nowNs)` raises IRQ8 for
 * the enabled ones; `nextDeadlineNs()` tells the platform when to call it next.
 */
export class CmosRtc implements Device {
  readonly name = "rtc";
  /** NMI disable bit of the last index write (b7 of port 0x70). */
  nmiDisabled = false;
  readonly stats = { interrupts: 0 };

  private readonly ram = new Uint8Array(128);
  private index = 0;
  /** Guest time in Unix seconds (float) at clock time `baseNs`. */
  private baseSeconds: number;
  private baseNs: number;
  /** While SET is on, the time the guest is editing (whole Unix seconds). */
  private frozenSeconds = 0;
  /** Clock time up to which events have been folded into register C. */
  private syncedNs: number;
  /** Clock time the periodic rate was last programmed (phase of the periodic interrupt). */
  private periodicPhaseNs: number;
  private irqLevel = false;

  /**
   * @param epochMs the wall-clock time (ms since 1970, UTC) at clock time 0; default: now.
   */
  constructor(
    private readonly irq: IrqLine,
    private readonly clock: VirtualClock,
    epochMs: number = Date.now() - clock.nowNs() / 1e6,
  ) {
    const now = clock.nowNs();
    this.baseNs = now;
    this.baseSeconds = epochMs / 1000 + now / 1e9;
    this.syncedNs = now;
    this.periodicPhaseNs = now;
    this.ram[REG_A] = 0x26; // 32.768 kHz time base, 1024 Hz periodic rate (what a BIOS leaves)
    this.ram[REG_B] = B_24H; // BCD, 24-hour
    this.ram[REG_D] = D_VRT;
    this.ram[0x32] = 0; // century: filled on read
  }

  // ---- platform side ----

  /**
   * Memory size bytes as a PC BIOS leaves them (what SeaBIOS writes and old guests read):
   * 0x15/0x16 base memory in KiB (640), 0x17/0x18 and 0x30/0x31 extended memory above 1 MiB in
   * KiB (capped at 0xffff), 0x34/0x35 memory above 16 MiB in 64 KiB units (below the 4 GiB hole),
   * 0x5b-0x5d memory above 4 GiB in 64 KiB units. Updates the 0x2e/0x2f checksum.
   */
  setMemorySize(belowHoleBytes: number, aboveFourGiBBytes = 0): void {
    const baseKiB = 640;
    this.setByte(0x15, baseKiB & 0xff);
    this.setByte(0x16, baseKiB >> 8);
    const extKiB = Math.min(0xffff, Math.max(0, Math.floor((belowHoleBytes - 0x100000) / 1024)));
    this.setByte(0x17, extKiB & 0xff);
    this.setByte(0x18, extKiB >> 8);
    this.setByte(0x30, extKiB & 0xff);
    this.setByte(0x31, extKiB >> 8);
    const above16 = Math.min(0xffff, Math.max(0, Math.floor((belowHoleBytes - 0x1000000) / 0x10000)));
    this.setByte(0x34, above16 & 0xff);
    this.setByte(0x35, above16 >> 8);
    const above4g = Math.min(0xffffff, Math.max(0, Math.floor(aboveFourGiBBytes / 0x10000)));
    this.setByte(0x5b, above4g & 0xff);
    this.setByte(0x5c, (above4g >> 8) & 0xff);
    this.setByte(0x5d, (above4g >> 16) & 0xff);
  }

  /** Sets a NVRAM byte (0x0e-0x7f; the clock registers are not settable this way). */
  setByte(index: number, value: number): void {
    if (index < 0x0e || index > 0x7f) return;
    this.ram[index] = value & 0xff;
    if (index >= 0x10 && index <= 0x2d) {
      let sum = 0;
      for (let i = 0x10; i <= 0x2d; i++) sum += this.ram[i]!;
      this.ram[0x2e] = (sum >> 8) & 0xff;
      this.ram[0x2f] = sum & 0xff;
    }
  }

  /** A CMOS byte as the guest would read it (for tests and inspection; no side effects). */
  peek(index: number): number {
    return this.readRegister(index & 0x7f, false);
  }

  /** The guest's idea of the time, Unix seconds. */
  guestTimeSeconds(): number {
    if (this.ram[REG_B]! & B_SET) return this.frozenSeconds;
    return this.baseSeconds + (this.clock.nowNs() - this.baseNs) / 1e9;
  }

  /** When IRQ8 may next need raising (clock ns), or Infinity when no interrupt is enabled. */
  nextDeadlineNs(): number {
    const b = this.ram[REG_B]!;
    if (this.irqLevel) return Number.POSITIVE_INFINITY; // already asserted until C is read
    let next = Number.POSITIVE_INFINITY;
    const period = this.periodNs();
    if (b & B_PIE && period > 0) {
      const k = Math.floor((this.syncedNs - this.periodicPhaseNs) / period) + 1;
      next = this.periodicPhaseNs + k * period;
    }
    if (b & (B_UIE | B_AIE) && !(b & B_SET)) {
      // The first second boundary not yet folded into register C (+1 ns against rounding).
      const seconds = this.baseSeconds + (this.syncedNs - this.baseNs) / 1e9;
      const untilNext = (Math.floor(seconds) + 1 - seconds) * 1e9;
      next = Math.min(next, this.syncedNs + Math.ceil(untilNext) + 1);
    }
    return next;
  }

  /** Folds the events up to `nowNs` into register C and raises IRQ8 for the enabled ones. */
  advance(nowNs: number = this.clock.nowNs()): void {
    this.sync(nowNs);
  }

  // ---- Device ----

  read(offset: number, size: AccessSize): number {
    return readBytes((o) => (o === 1 ? this.readRegister(this.index, true) : 0xff), offset, size, 2);
  }

  /** A 16-bit write to 0x70 sets the index (low byte) and writes the data port (high byte). */
  write(offset: number, size: AccessSize, value: number): void {
    writeBytes((o, v) => this.writeByte(o, v), offset, size, value, 2);
  }

  private writeByte(offset: number, value: number): void {
    if (offset === 0) {
      this.index = value & 0x7f;
      this.nmiDisabled = (value & 0x80) !== 0;
    } else {
      this.writeRegister(this.index, value);
    }
  }

  // ---- registers ----

  private readRegister(index: number, sideEffects: boolean): number {
    if (index <= 9 || index === REG_CENTURY) {
      if (index === 1 || index === 3 || index === 5) return this.ram[index]!; // alarms
      return this.timeField(index);
    }
    switch (index) {
      case REG_A: {
        const uip = this.updateInProgress() ? A_UIP : 0;
        return (this.ram[REG_A]! & 0x7f) | uip;
      }
      case REG_C: {
        if (!sideEffects) return this.ram[REG_C]!;
        this.sync(this.clock.nowNs());
        const value = this.ram[REG_C]!;
        this.ram[REG_C] = 0;
        this.setIrq(false);
        return value;
      }
      default:
        return this.ram[index]!;
    }
  }

  private writeRegister(index: number, value: number): void {
    if (index <= 9 || index === REG_CENTURY) {
      if (index === 1 || index === 3 || index === 5) {
        this.ram[index] = value;
        return;
      }
      this.setTimeField(index, value);
      return;
    }
    switch (index) {
      case REG_A: {
        this.sync(this.clock.nowNs());
        if ((value & 0x0f) !== (this.ram[REG_A]! & 0x0f)) this.periodicPhaseNs = this.clock.nowNs();
        this.ram[REG_A] = value & 0x7f; // UIP is read-only
        return;
      }
      case REG_B: {
        const now = this.clock.nowNs();
        this.sync(now);
        const before = this.ram[REG_B]!;
        if (!(before & B_SET) && value & B_SET) {
          this.frozenSeconds = Math.floor(this.guestTimeSeconds());
        }
        // SET also clears UIE (data sheet: "UIE is cleared when SET is written to 1").
        if (value & B_SET) value &= ~B_UIE;
        this.ram[REG_B] = value;
        if (before & B_SET && !(value & B_SET)) {
          this.baseSeconds = this.frozenSeconds;
          this.baseNs = now;
        }
        this.updateIrqFromFlags();
        return;
      }
      case REG_C:
      case REG_D:
        return; // read-only
      default:
        this.ram[index] = value;
        return;
    }
  }

  private updateInProgress(): boolean {
    if (this.ram[REG_B]! & B_SET) return false;
    const divider = (this.ram[REG_A]! >> 4) & 7;
    if (divider !== 2) return false; // time base stopped or in reset: no updates
    const fraction = this.guestTimeSeconds() % 1;
    return fraction >= 1 - UIP_SECONDS;
  }

  /** The broken-down guest time (UTC). */
  private fields(seconds: number): Date {
    return new Date(Math.floor(seconds) * 1000);
  }

  private timeField(index: number): number {
    const d = this.fields(this.guestTimeSeconds());
    switch (index) {
      case 0:
        return this.encode(d.getUTCSeconds());
      case 2:
        return this.encode(d.getUTCMinutes());
      case 4:
        return this.encodeHour(d.getUTCHours());
      case 6:
        return this.encode(d.getUTCDay() + 1);
      case 7:
        return this.encode(d.getUTCDate());
      case 8:
        return this.encode(d.getUTCMonth() + 1);
      case 9:
        return this.encode(d.getUTCFullYear() % 100);
      default:
        return this.encode(Math.floor(d.getUTCFullYear() / 100) % 100); // century
    }
  }

  private setTimeField(index: number, value: number): void {
    const now = this.clock.nowNs();
    this.sync(now);
    const current = this.guestTimeSeconds();
    const d = this.fields(current);
    let sec = d.getUTCSeconds();
    let min = d.getUTCMinutes();
    let hour = d.getUTCHours();
    let day = d.getUTCDate();
    let month = d.getUTCMonth();
    let year = d.getUTCFullYear();
    switch (index) {
      case 0:
        sec = this.decode(value & 0x7f);
        break;
      case 2:
        min = this.decode(value & 0x7f);
        break;
      case 4:
        hour = this.decodeHour(value);
        break;
      case 6:
        return; // day of week follows the date here
      case 7:
        day = this.decode(value & 0x3f);
        break;
      case 8:
        month = this.decode(value & 0x1f) - 1;
        break;
      case 9:
        year = Math.floor(year / 100) * 100 + (this.decode(value) % 100);
        break;
      default:
        year = (this.decode(value) % 100) * 100 + (year % 100);
        break;
    }
    const ms = Date.UTC(year, month, day, hour, min, sec);
    if (!Number.isFinite(ms)) return; // garbage the Date arithmetic cannot place: ignored
    const seconds = ms / 1000;
    if (this.ram[REG_B]! & B_SET) {
      this.frozenSeconds = seconds;
    } else {
      this.baseSeconds = seconds + (current % 1);
      this.baseNs = now;
      this.syncedNs = now;
    }
  }

  private binary(): boolean {
    return (this.ram[REG_B]! & B_DM) !== 0;
  }

  private encode(n: number): number {
    return this.binary() ? n : ((Math.floor(n / 10) % 10) << 4) | (n % 10);
  }

  private decode(v: number): number {
    return this.binary() ? v : ((v >> 4) & 0x0f) * 10 + (v & 0x0f);
  }

  private encodeHour(h: number): number {
    if (this.ram[REG_B]! & B_24H) return this.encode(h);
    const pm = h >= 12 ? 0x80 : 0;
    const h12 = h % 12 === 0 ? 12 : h % 12;
    return this.encode(h12) | pm;
  }

  private decodeHour(v: number): number {
    if (this.ram[REG_B]! & B_24H) return this.decode(v & 0x3f);
    const h12 = this.decode(v & 0x7f) % 12;
    return v & 0x80 ? h12 + 12 : h12;
  }

  /** Periodic interrupt period in ns from register A's rate select (0 = off). */
  private periodNs(): number {
    const rs = this.ram[REG_A]! & 0x0f;
    if (rs === 0 || ((this.ram[REG_A]! >> 4) & 7) !== 2) return 0;
    // 32.768 kHz base: rates 1 and 2 are 256 and 128 Hz, rate n >= 3 is 65536 >> n Hz.
    const hz = rs <= 2 ? 512 >> rs : 65536 >> rs;
    return 1e9 / hz;
  }

  /** Sets PF/UF/AF for events in (syncedNs, nowNs], then IRQF and IRQ8 for enabled ones. */
  private sync(nowNs: number): void {
    if (nowNs <= this.syncedNs) return;
    const from = this.syncedNs;
    this.syncedNs = nowNs;
    let flags = 0;
    const period = this.periodNs();
    if (period > 0) {
      const k0 = Math.floor((from - this.periodicPhaseNs) / period);
      const k1 = Math.floor((nowNs - this.periodicPhaseNs) / period);
      if (k1 > k0) flags |= C_PF;
    }
    const b = this.ram[REG_B]!;
    if (!(b & B_SET) && ((this.ram[REG_A]! >> 4) & 7) === 2) {
      const s0 = this.baseSeconds + (from - this.baseNs) / 1e9;
      const s1 = this.baseSeconds + (nowNs - this.baseNs) / 1e9;
      const first = Math.floor(s0) + 1;
      const last = Math.floor(s1);
      if (last >= first) {
        flags |= C_UF;
        // Alarm: any second boundary in the interval whose h:m:s matches (0xc0-0xff = any).
        const count = Math.min(last - first + 1, 86400);
        for (let s = last - count + 1; s <= last; s++) {
          if (this.alarmMatches(s)) {
            flags |= C_AF;
            break;
          }
        }
      }
    }
    this.ram[REG_C] = this.ram[REG_C]! | flags;
    this.updateIrqFromFlags();
  }

  private alarmMatches(seconds: number): boolean {
    const d = this.fields(seconds);
    const match = (alarm: number, value: number) => (alarm & 0xc0) === 0xc0 || alarm === value;
    return (
      match(this.ram[1]!, this.encode(d.getUTCSeconds())) &&
      match(this.ram[3]!, this.encode(d.getUTCMinutes())) &&
      match(this.ram[5]!, this.encodeHour(d.getUTCHours()))
    );
  }

  private updateIrqFromFlags(): void {
    const enabled = this.ram[REG_B]! & (B_PIE | B_AIE | B_UIE); // same bit positions as C's flags
    const c = this.ram[REG_C]!;
    if (c & enabled & 0x70) {
      this.ram[REG_C] = c | C_IRQF;
      this.setIrq(true);
    }
  }

  private setIrq(level: boolean): void {
    if (level === this.irqLevel) return;
    this.irqLevel = level;
    if (level) this.stats.interrupts++;
    this.irq.setLevel(level);
  }
}

/** UIP is set this long before each update (MC146818: 244 us). */
const UIP_SECONDS = 244e-6;

const REG_A = 0x0a;
const REG_B = 0x0b;
const REG_C = 0x0c;
const REG_D = 0x0d;
const REG_CENTURY = 0x32;

const A_UIP = 0x80;
const B_SET = 0x80;
const B_PIE = 0x40;
const B_AIE = 0x20;
const B_UIE = 0x10;
const B_DM = 0x04;
const B_24H = 0x02;
const C_IRQF = 0x80;
const C_PF = 0x40;
const C_AF = 0x20;
const C_UF = 0x10;
const D_VRT = 0x80;
