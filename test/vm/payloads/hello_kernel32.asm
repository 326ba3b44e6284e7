; hello_kernel.asm for the 32-bit boot protocol entry (code32_start, flat protected mode,
; ESI = boot_params): what an i386 kernel gets, and what the soft engine runs.
;   COM1 output: "hello from a bzImage: HdrS\n"; userspace marker; exit status 7.
bits 32
  call .here
.here:
  pop ebp                   ; position independence: EBP = address of .here
  mov ebx, esi
  lea esi, [ebp + msg - .here]
  mov ecx, msg_len
  mov dx, 0x3f8
.print:
  lodsb
  out dx, al
  loop .print
  mov ecx, 4
  lea esi, [ebx + 0x202]
.hdr:
  lodsb
  out dx, al
  loop .hdr
  mov al, 10
  out dx, al
  mov dx, 0xf4
  mov al, 1
  out dx, al
  mov dx, 0xf5
  mov al, 7
  out dx, al
.hang:
  hlt
  jmp .hang
msg: db "hello from a bzImage: "
msg_len equ $ - msg
