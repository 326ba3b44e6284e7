; The guest asks for a reset the PC way: pulse the reset line through the i8042's output port
; (command 0xFE to port 0x64), as Linux's reboot=k does.
bits 32
org 0x1000
  mov al, 0xfe
  out 0x64, al
  hlt
