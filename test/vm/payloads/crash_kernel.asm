; A stand-in kernel that crashes at its 64-bit entry: it prints "crashing\n" on COM1 and executes
; UD2 with the empty IDT boot/ leaves (limit 0): #UD cannot be delivered, nor the #GP, nor the
; double fault: a triple fault, which KVM reports as KVM_EXIT_SHUTDOWN.
bits 64
default rel
  lea rsi, [msg]
  mov ecx, msg_len
  mov dx, 0x3f8
.print:
  lodsb
  out dx, al
  loop .print
  ud2
msg: db "crashing", 10
msg_len equ $ - msg
