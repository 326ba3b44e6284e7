; A hostile guest: writes garbage to every port 0x0000-0xffff (except the stop port 0xf5) with every
; access size, and reads each back, then stops. The VMM must answer every access, count the
; unclaimed ones and stay up. 32-bit protected mode, no paging, interrupts off.
bits 32
org 0x1000
  xor edx, edx              ; port
  mov ebx, 0x9e3779b9       ; garbage generator state
.next:
  cmp dx, 0xf5
  je .skip
  imul ebx, ebx, 1103515245
  add ebx, 12345
  mov eax, ebx
  out dx, al
  out dx, ax
  out dx, eax
  in al, dx
  in ax, dx
  in eax, dx
.skip:
  inc edx
  cmp edx, 0x10000
  jb .next
  mov al, 0
  out 0xf5, al
  hlt
