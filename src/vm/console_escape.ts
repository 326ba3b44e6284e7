/**
 * The console's escape sequence, as QEMU's: Ctrl-A x leaves, Ctrl-A a sends a literal Ctrl-A,
 * Ctrl-A p pauses or resumes the VM, Ctrl-A h prints help; any other byte after Ctrl-A is passed
 * on with the Ctrl-A. Feed it the
 * bytes of the raw terminal; it returns what goes to the guest and whether to quit.
 */
export const CTRL_A = 0x01;

export interface EscapeResult {
  forward: Uint8Array;
  quit: boolean;
  help: boolean;
  /** Ctrl-A p was typed (once per toggle). */
  togglePause: boolean;
}

export const CONSOLE_HELP =
  "\r\nvessel console: C-a x  leave (stops the VM)   C-a p  pause/resume   C-a a  send C-a   C-a h  this help\r\n";

export class ConsoleEscape {
  private pending = false;

  feed(bytes: Uint8Array): EscapeResult {
    const out: number[] = [];
    let help = false;
    let togglePause = false;
    for (const b of bytes) {
      if (this.pending) {
        this.pending = false;
        if (b === 0x78 /* x */ || b === 0x58)
          return { forward: Uint8Array.from(out), quit: true, help, togglePause };
        if (b === 0x61 /* a */ || b === CTRL_A) out.push(CTRL_A);
        else if (b === 0x68 /* h */ || b === 0x3f) help = true;
        else if (b === 0x70 /* p */) togglePause = !togglePause;
        else out.push(CTRL_A, b);
      } else if (b === CTRL_A) {
        this.pending = true;
      } else {
        out.push(b);
      }
    }
    return { forward: Uint8Array.from(out), quit: false, help, togglePause };
  }
}
