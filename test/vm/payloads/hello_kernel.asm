; A stand-in for a Linux kernel's 64-bit entry (startup_64, at the load address + 0x200), for
; testing `vessel vm run --engine kvm` end to end where KVM cannot boot a real kernel (PVM).
; It is entered the way boot/ enters Linux (64-bit boot protocol: long mode, identity-mapped,
; RSI = boot_params) and does what the default guest's init does at the end: prints on COM1,
; writes the debug-exit port's userspace marker (+0) and an exit status (+1).
;   COM1 output: "hello from a bzImage: " + the 4 bytes at boot_params + 0x202 ("HdrS", copied
;   from the setup header by the loader) + "\n"; exit status 7.
bits 64
default rel
  mov rbx, rsi
  lea rsi, [msg]
  mov ecx, msg_len
  mov dx, 0x3f8
.print:
  lodsb
  out dx, al
  loop .print
  mov ecx, 4
  lea rsi, [rbx + 0x202]
.hdr:
  lodsb
  out dx, al
  loop .hdr
  mov al, 10
  out dx, al
  mov dx, 0xf4
  mov al, 1
  out dx, al                ; userspace marker
  mov dx, 0xf5
  mov al, 7
  out dx, al                ; exit status 7: the VM stops
.hang:
  hlt
  jmp .hang
msg: db "hello from a bzImage: "
msg_len equ $ - msg
