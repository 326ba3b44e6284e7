; 32-bit protected mode, no paging. Port and MMIO exits, then HLT (run without an irqchip, so HLT
; exits to user space).
;   out 0x3f8 <- 'H', 'i'          (two 1-byte port writes)
;   in  eax <- port 0x510 (4 bytes); store at 0x2000
;   out 0x511 <- ax (2 bytes, value 0xbeef)
;   mov [0xd0000000] <- 0x12345678 (MMIO write, 4 bytes)
;   mov eax <- [0xd0000010] (MMIO read), store at 0x2004
;   rep outsb of "abc" to port 0x3f8 (string I/O: count 3 in one exit)
bits 32
org 0x1000
  mov dx, 0x3f8
  mov al, 'H'
  out dx, al
  mov al, 'i'
  out dx, al
  mov dx, 0x510
  in eax, dx
  mov [0x2000], eax
  mov dx, 0x511
  mov ax, 0xbeef
  out dx, ax
  mov dword [0xd0000000], 0x12345678
  mov eax, [0xd0000010]
  mov [0x2004], eax
  mov esi, text
  mov ecx, 3
  mov dx, 0x3f8
  rep outsb
  hlt
text: db "abc"
