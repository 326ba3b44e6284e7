; Enters long mode through our own page tables and GDT, proves it is in 64-bit mode (a 64-bit
; register value survives, CS.L), and reports through ports:
;   out 0xf6 <- 0x64 ("in 64-bit mode"), out 0xf6 <- high dword of a 64-bit add, out 0xf5 <- 0 (stop)
%include "long_mode_entry.inc"
main64:
  mov al, 0x64
  out 0xf6, al
  mov rax, 0x0000000700000000
  mov rbx, 0x0000000100000000
  add rax, rbx
  shr rax, 32
  out 0xf6, eax             ; 8
  xor eax, eax
  out 0xf5, al
  hlt
