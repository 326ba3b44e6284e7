; A triple fault: with an empty IDT (limit 0), a divide error cannot be delivered (#GP), nor can
; the #GP (double fault), nor the double fault: the CPU shuts down and KVM exits with
; KVM_EXIT_SHUTDOWN. (INT3 is not used: PVM's kernel-mode emulator lacks it.)
%include "long_mode_entry.inc"
main64:
  mov al, 1
  out 0xf6, al
  lidt [empty_idt]
  xor ecx, ecx
  xor edx, edx
  mov eax, 1
  div ecx
  hlt
empty_idt:
  dw 0
  dq 0
