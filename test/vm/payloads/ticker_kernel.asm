; A stand-in kernel (64-bit entry) that prints '.' on COM1 about every 20000 loop iterations,
; forever: a guest whose progress is visible, for pause/resume tests.
bits 64
.tick:
  mov dx, 0x3f8
  mov al, '.'
  out dx, al
  mov ecx, 20000
.spin:
  dec ecx
  jnz .spin
  jmp .tick
